"""Talking to a model: generate_stream (KV cache, stop ids, context limit, top-k/top-p), ChatSession
(multi-turn with the cache reused, forgetting old turns, /reset) and `make chat` (one-shot and the REPL).

Most tests use a *scripted* GPT: every block's weights are zero, so the residual stream is just the token
and position embeddings, and those are set so that greedy decoding writes "a" while the last token sits
at a position below STOP_AT, and <|assistant_end|> from there on (a prompt of n tokens gets STOP_AT - n + 1
a's). The replies are then known in advance, which makes "stops at the end token", "/reset forgets" and
"the cache changes nothing" exact statements.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch
from pretrain_helpers import write_recipe

from model import GPT, GPTConfig
from model.chat_session import ChatSession, ContextFullError, generate_stream, sample_token
from tokenizer import Tokenizer
from tokenizer.byte_order import BYTE_ORDER
from tokenizer.chat import ChatFormat, special_tokens_with_chat
from train.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")
BLOCK, STOP_AT = 64, 30


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    ranks = {bytes([BYTE_ORDER[i]]): i for i in range(256)}
    return Tokenizer(ranks, {t: 256 + k for k, t in enumerate(special_tokens_with_chat(["<|endoftext|>"]))},
                     name="bytes-chat")


def scripted_model(tok: Tokenizer) -> GPT:
    """Greedy output: 'a' after positions < STOP_AT, <|assistant_end|> after the others (module docstring)."""
    model = GPT(GPTConfig(block_size=BLOCK, vocab_size=tok.n_vocab, n_layer=1, n_head=2, n_embd=16))
    a, end = tok.encode_ordinary("a")[0], tok.special_tokens["<|assistant_end|>"]
    w = torch.zeros(16)
    w[0], w[1] = 1.0, -1.0      # zero-mean directions survive LayerNorm
    v = torch.zeros(16)
    v[2], v[3] = 3.0, -3.0
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in (model.transformer.ln_f, *(m for b in model.transformer.h for m in (b.ln_1, b.ln_2))):
            ln.weight.fill_(1.0)
        model.transformer.wte.weight[a] = w
        model.transformer.wte.weight[end] = v
        model.transformer.wpe.weight[:STOP_AT] = w
        model.transformer.wpe.weight[STOP_AT:] = 2 * v
    return model.eval()


def a_count(prompt_tokens: int) -> int:
    return STOP_AT - prompt_tokens + 1


def test_the_scripted_model_does_what_the_tests_assume(tok):
    model, chat = scripted_model(tok), ChatFormat(tok)
    prompt = chat.render_prompt([{"role": "user", "content": "hi"}])
    out = list(generate_stream(model, prompt, max_new_tokens=50, temperature=0, stop_ids=chat.stop_ids))
    assert out == [tok.encode_ordinary("a")[0]] * a_count(len(prompt)) + [chat.assistant_end]


def test_generate_stream_with_the_cache_samples_what_recomputing_samples(tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=BLOCK, vocab_size=tok.n_vocab, n_layer=2, n_head=2, n_embd=32)).eval()
    prompt = ChatFormat(tok).render_prompt([{"role": "user", "content": "hello there"}])
    cached = list(generate_stream(model, prompt, max_new_tokens=20, temperature=1.0, top_k=40, top_p=0.9,
                                  generator=torch.Generator().manual_seed(7)))
    gen, seq = torch.Generator().manual_seed(7), list(prompt)
    for _ in range(20):  # the reference: the whole sequence through the model for every token
        logits = model(torch.tensor([seq]))[0][0, -1]
        seq.append(sample_token(logits, 1.0, 40, 0.9, gen))
    assert cached == seq[len(prompt):]


def test_generate_stream_stops_at_the_context_and_rewinds_a_cache(tok):
    model, chat = scripted_model(tok), ChatFormat(tok)
    long_prompt = [chat.bos] + tok.encode_ordinary("x" * (BLOCK - 3))  # past STOP_AT: the model wants to stop
    out = list(generate_stream(model, long_prompt, max_new_tokens=10, temperature=0))
    assert out == [chat.assistant_end] * 3  # positions BLOCK-2 .. BLOCK: the last id comes from the last position
    with pytest.raises(ContextFullError, match="longer than the model's context"):
        list(generate_stream(model, long_prompt * 2, max_new_tokens=1))


def test_sampling_filters():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.5])
    g = torch.Generator().manual_seed(0)
    assert {sample_token(logits, 1.0, top_k=1, generator=g) for _ in range(20)} == {1}
    assert {sample_token(logits, 1.0, top_p=0.5, generator=g) for _ in range(20)} == {1}  # p(1) = 0.63 >= 0.5
    assert {sample_token(logits, 1.0, top_p=0.85, generator=g) for _ in range(200)} == {1, 2}  # 0.63 + 0.23 >= 0.85
    assert sample_token(logits, 0.0) == 1


def test_chat_session_streams_reuses_the_cache_and_forgets_old_turns(tok):
    session = ChatSession(scripted_model(tok), tok, temperature=0, max_new_tokens=50)
    pieces = list(session.send("hi"))
    first_prompt = len(ChatFormat(tok).render_prompt([{"role": "user", "content": "hi"}]))
    assert pieces == ["a"] * a_count(first_prompt)  # streamed token by token, stopped at the end token
    assert session.last.finish_reason == "stop" and session.last.prefilled_tokens == first_prompt
    assert session.messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "".join(pieces)}]
    second = session.ask("ok")
    # only the new turn ran through the model: <|assistant_end|> and "<|user_start|>ok<|user_end|><|assistant_start|>"
    assert session.last.prefilled_tokens == 1 + 1 + 2 + 2
    assert second == "" and session.last.finish_reason == "stop"  # already past STOP_AT: it stops at once
    # the history outgrows the 64-token context: the oldest exchanges go, the last message stays
    session.ask("x" * 20)
    assert session.last.dropped_turns >= 1 and session.messages[0]["content"] != "hi"
    with pytest.raises(ContextFullError, match="does not fit"):
        session.ask("y" * BLOCK)
    session.reset()
    assert session.messages == [] and session.ask("hi") == "".join(pieces)  # as new


def make_chat_run(tmp_path: Path, tok: Tokenizer) -> Path:
    """A recipe whose sft directory holds the scripted model, as `make sft` lays it out."""
    out = tmp_path / "artifacts" / "c" / "sft"
    model = scripted_model(tok)
    save_checkpoint(out / "ckpt.pt", {"step": 1, "model": model.state_dict(), "model_config": model.config.to_dict(),
                                      "tokenizer_fingerprint": tok.fingerprint})
    tok.save(out / "tokenizer.ljt.json")
    return write_recipe(tmp_path / "c.toml", "c", tmp_path / "artifacts", {"sft": {}})


def chat_cli(recipe: Path, *args: str, stdin: str = "", capsys, monkeypatch) -> tuple[int, str, str]:
    """`python -m pipelines.chat` in this process (its stdin piped from `stdin`): (exit code, stdout, stderr)."""
    from pipelines import chat

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    rc = chat.main(["--config", str(recipe), *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_make_chat_answers_once_and_the_repl_resets(tmp_path, tok, capsys, monkeypatch):
    io_fixtures = {"capsys": capsys, "monkeypatch": monkeypatch}
    recipe = make_chat_run(tmp_path, tok)
    n = a_count(len(ChatFormat(tok).render_prompt([{"role": "user", "content": "hello"}])))
    rc, out, err = chat_cli(recipe, "--prompt", "hello", "--temperature", "0", **io_fixtures)
    assert rc == 0, err
    assert out == "a" * n + "\n"  # the reply alone, ended at <|assistant_end|>: usable from scripts
    rc, out, err = chat_cli(recipe, "--temperature", "0", stdin="hello\nhello\n/reset\nhello\n/nope\n/quit\nnot read\n",
                            **io_fixtures)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("# ") and "/reset" in lines[0]
    assert lines[1:] == ["model> " + "a" * n, "model> ", "(conversation forgotten)", "model> " + "a" * n,
                         "(unknown command /nope; /reset forgets the conversation, /quit (or Ctrl-D) leaves, "
                         "Ctrl-C stops a reply)"]


def test_make_chat_without_a_fine_tuned_model(tmp_path, capsys, monkeypatch):
    recipe = write_recipe(tmp_path / "none.toml", "none", tmp_path / "artifacts", {"sft": {}})
    rc, out, err = chat_cli(recipe, "--prompt", "hi", capsys=capsys, monkeypatch=monkeypatch)
    assert rc == 2 and err.startswith("error: no fine-tuned model at") and len(err.splitlines()) == 1
    assert "make sft" in err and out == ""
