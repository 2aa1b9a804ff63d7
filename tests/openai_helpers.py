"""A tiny served project for the API and web-chat tests: a chat model that has learned one answer.

The tokenizer is bytes + <|endoftext|> + the six chat tokens (263 ids, built instantly). The chat model is a
2-layer GPT trained for a hundred-odd steps on one two-turn conversation in the chat format (QUESTION, ANSWER,
QUESTION, ANSWER), loss on the assistant's tokens only, so that asked QUESTION (greedy) it answers ANSWER and
stops at <|assistant_end|>, in the first turn and in the second: what the API returns can then be checked
against what the model learned, token for token. The base model is the same
architecture with random weights: its continuations are arbitrary, which is what the tests of seeded,
concurrent sampling want (every seed gives another text).

Both are written where `make sft` / `make pretrain` put them: artifacts/<name>/sft/ckpt.pt (with the chat
tokenizer beside it) and artifacts/<name>/pretrain/ckpt.pt; the recipe's tokenizer goes to
artifacts/<name>/tokenizer/tokenizer.ljt.json.
"""

from __future__ import annotations

from pathlib import Path

from pretrain_helpers import byte_tokenizer, write_recipe

from tokenizer import Tokenizer
from tokenizer.chat import ChatFormat, with_chat_tokens

QUESTION = "What does json.dumps do?"
ANSWER = "Serialize obj to a JSON str."
BLOCK = 128
MODEL = {"block_size": BLOCK, "n_layer": 2, "n_head": 2, "n_embd": 64}
CHAT_STEPS = 150


def chat_byte_tokenizer() -> Tokenizer:
    return with_chat_tokens(byte_tokenizer())


def train_chat_model(tok: Tokenizer, steps: int = CHAT_STEPS, seed: int = 0):
    """A GPT that answers QUESTION with ANSWER (greedy); a fraction of a second on one CPU thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread costs more than it saves (far more on a busy machine)
    try:
        return _train(tok, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _train(tok: Tokenizer, steps: int, seed: int):
    import torch

    from model import GPT, GPTConfig

    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tok.n_vocab, **MODEL))
    exchange = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    rendered = ChatFormat(tok).render(exchange * 2)
    ids = torch.tensor([rendered.ids])
    # the target of position i is token i + 1, learned only where the chat format's mask says so
    targets = torch.tensor([[t if m else -1 for t, m in zip(rendered.ids[1:], rendered.mask[1:])]])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        _, loss = model(ids[:, :-1], targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval(), loss.item()


def random_model(tok: Tokenizer, seed: int = 1):
    import torch

    from model import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=tok.n_vocab, **MODEL)).eval()


def save_model(path: Path, model, tok: Tokenizer, step: int) -> Path:
    from train.checkpoint import save_checkpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, {"step": step, "model": model.state_dict(), "model_config": model.config.to_dict(),
                                  "tokenizer_fingerprint": tok.fingerprint})


def make_served_project(tmp: Path, name: str = "tiny") -> dict:
    """artifacts/<name>/{tokenizer,sft,pretrain} and a recipe naming them; returns the paths and objects."""
    tok = chat_byte_tokenizer()
    art = tmp / "artifacts"
    chat_model, loss = train_chat_model(tok)
    assert loss < 0.05, f"the tiny chat model did not learn its answer (loss {loss:.3f})"
    base_model = random_model(tok)
    (art / name / "tokenizer").mkdir(parents=True)
    tok.save(art / name / "tokenizer" / "tokenizer.ljt.json")
    sft = save_model(art / name / "sft" / "ckpt.pt", chat_model, tok, step=CHAT_STEPS)
    tok.save(sft.parent / "tokenizer.ljt.json")
    pretrain = save_model(art / name / "pretrain" / "ckpt.pt", base_model, tok, step=0)
    recipe = write_recipe(tmp / f"{name}.toml", name, art, {})
    return {"tokenizer": tok, "chat_model": chat_model, "base_model": base_model, "sft": sft,
            "pretrain": pretrain, "recipe": recipe, "name": name}


def make_slow_base_model(tmp: Path) -> tuple[Path, Path]:
    """(checkpoint, tokenizer file) of a random 3M-parameter base model with a 1024-token context over the 256
    byte tokens and no special token at all: nothing can end its text early, so a completion of 1000 tokens
    streams for the better part of a second on one CPU thread (for the shutdown tests)."""
    import torch

    from model import GPT, GPTConfig
    from tokenizer.byte_order import BYTE_ORDER

    tok = Tokenizer({bytes([BYTE_ORDER[i]]): i for i in range(256)}, name="bytes-only")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, block_size=1024, n_layer=4, n_head=4, n_embd=256)).eval()
    ckpt = save_model(tmp / "artifacts" / "slow" / "pretrain" / "ckpt.pt", model, tok, step=0)
    return ckpt, tok.save(tmp / "bytes-only.ljt.json")
