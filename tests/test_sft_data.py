"""SFT rows (train/sft_data.py): the loss is on assistant tokens only, packing keeps conversations whole,
overlong conversations are cut at a reply boundary or skipped, and the arrays survive a round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import GPT, GPTConfig
from tokenizer import Tokenizer
from tokenizer.byte_order import BYTE_ORDER
from tokenizer.chat import ChatFormat, special_tokens_with_chat
from train.sft_data import ConversationArrays, PackedConversations, fit_to_context, pack_rows

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def chat() -> ChatFormat:
    """Bytes + the chat tokens + <|endoftext|>: every character is one token, so positions are easy to name."""
    ranks = {bytes([BYTE_ORDER[i]]): i for i in range(256)}
    specials = {t: 256 + k for k, t in enumerate(special_tokens_with_chat(["<|endoftext|>"]))}
    return ChatFormat(Tokenizer(ranks, specials, name="bytes-chat"))


def tid(chat: ChatFormat, char: str) -> int:
    return chat.tok.encode_ordinary(char)[0]


def msgs(*texts: str) -> list[dict[str, str]]:
    return [{"role": "user" if k % 2 == 0 else "assistant", "content": t} for k, t in enumerate(texts)]


def test_changing_a_user_target_changes_nothing_and_an_assistant_target_does(chat):
    """The loss of a packed row as a function of its targets: positions whose target is a user token (or
    the system's, or a control token the model is given) do not count; an assistant token's does."""
    r = chat.render(msgs("What is 2+2?", "Four.", "Sure?", "Yes."))
    n = len(r.ids)
    rows = PackedConversations(ConversationArrays.from_lists([(r.ids, r.mask)], chat.tok.n_vocab), n - 1, "t",
                               chat.bos)
    x, y = rows.batch([0])
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=n, vocab_size=chat.tok.n_vocab, n_layer=1, n_head=2, n_embd=16))
    _, base_loss = model(x, y)

    def loss_with_target(position: int) -> torch.Tensor:
        """The same inputs; only the token at `position` of the conversation, as a target, is another one."""
        ids = list(r.ids)
        ids[position] = tid(chat, "#") if ids[position] != tid(chat, "#") else tid(chat, "%")
        changed = PackedConversations(ConversationArrays.from_lists([(ids, r.mask)], chat.tok.n_vocab), n - 1, "t",
                                      chat.bos)
        return model(x, changed.batch([0])[1])[1]

    user_pos = r.ids.index(tid(chat, "W"))             # the user's first character
    assistant_pos = r.ids.index(tid(chat, "F"))        # the assistant's first character
    end_pos = r.reply_ends[0] - 1                      # <|assistant_end|>: learned (the model must learn to stop)
    start_pos = end_pos - len("Four.") - 1             # <|assistant_start|>: given in the prompt, not learned
    assert torch.equal(loss_with_target(user_pos), base_loss)
    assert torch.equal(loss_with_target(start_pos), base_loss)
    assert not torch.equal(loss_with_target(assistant_pos), base_loss)
    assert not torch.equal(loss_with_target(end_pos), base_loss)
    # and the gradient agrees: no signal flows from a position whose target is a user token
    logits, _ = model(x)
    logits.retain_grad()
    torch.nn.functional.cross_entropy(logits[0], y[0], ignore_index=-1).backward()
    assert logits.grad[0, user_pos - 1].abs().sum() == 0 and logits.grad[0, assistant_pos - 1].abs().sum() > 0
    assert int((y != -1).sum()) == sum(r.mask) == len("Four.") + len("Yes.") + 2


def test_packing_keeps_conversations_whole_and_pads_the_rest(chat):
    convs = [chat.render(msgs("q" * k, "a" * (k % 7 + 1))) for k in range(1, 40)]
    arrays = ConversationArrays.from_lists([(c.ids, c.mask) for c in convs], chat.tok.n_vocab)
    rows = PackedConversations(arrays, 63, "train", chat.bos)
    assert rows.num_conversations == 39 and rows.real_tokens == sum(len(c.ids) for c in convs)
    members = pack_rows(arrays.lengths(), 64)
    assert sorted(k for row in members for k in row) == list(range(39))  # every conversation exactly once
    for r, row in enumerate(members):
        expected = np.concatenate([np.asarray(convs[k].ids) for k in row])
        assert np.array_equal(rows.tokens[r, :len(expected)], expected)  # whole conversations, in order
        assert (rows.tokens[r, len(expected):] == chat.bos).all()       # then padding ...
        assert (rows.targets[r, len(expected) - 1:] == -1).all()       # ... that is never learned
        assert (rows.targets[r] != -1).any()                           # and every row teaches something
    assert rows.padding_fraction < 0.15  # best fit: far less than one conversation per row
    assert rows.learned_tokens == arrays.learned_tokens == sum(sum(c.mask) for c in convs)


def test_an_overlong_conversation_is_cut_after_a_whole_reply_or_skipped(chat):
    r = chat.render(msgs("hello", "first answer", "and?", "second answer, longer than the first"))
    first_end = r.reply_ends[0]
    ids, mask = fit_to_context(r.ids, r.mask, r.reply_ends, first_end + 5)
    assert ids == r.ids[:first_end] and ids[-1] == chat.assistant_end and mask == r.mask[:first_end]
    assert fit_to_context(r.ids, r.mask, r.reply_ends, first_end - 1) is None  # no whole reply fits: skipped
    assert fit_to_context(r.ids, r.mask, r.reply_ends, len(r.ids)) == (r.ids, r.mask)
    with pytest.raises(ValueError, match="more than a row"):
        pack_rows(np.array([10, 70]), 64)


def test_arrays_round_trip_and_refuse_other_files(chat, tmp_path):
    convs = [chat.render(msgs("hi", "yo")), chat.render(msgs("a", "b", "c", "d"))]
    arrays = ConversationArrays.from_lists([(c.ids, c.mask) for c in convs], chat.tok.n_vocab)
    back = ConversationArrays.load(arrays.save(tmp_path / "train.npz"))
    assert back.ids.dtype == np.uint16 and np.array_equal(back.ids, arrays.ids)
    assert np.array_equal(back.offsets, arrays.offsets) and np.array_equal(back.mask, arrays.mask)
    assert [p.name for p in tmp_path.iterdir()] == ["train.npz"]  # written under a temporary name, then renamed
    np.savez(tmp_path / "other.npz", ids=np.zeros(3))
    with pytest.raises(ValueError, match="not a conversations file"):
        ConversationArrays.load(tmp_path / "other.npz")
