"""Small real inputs for the fine-tuning and chat tests: a chat tokenizer, a pretrained base, recipes.

The tokenizer is a real BPE (512 ids, the chat tokens included) learned on a slice of the embedded corpus,
so conversations are a few dozen tokens and fit a 96-token context. The base model is pretrained for a
few steps by the real trainer on shards of that slice, so `make sft`'s default path (the recipe's
pretraining checkpoint + the recipe's tokenizer) is exercised as it is on the demo.
"""

from __future__ import annotations

from pathlib import Path

from pretrain_helpers import tiny_sections, write_recipe, write_shards

from tokenizer import Tokenizer
from tokenizer.chat import special_tokens_with_chat

BLOCK = 96
TINY_SFT = {"source": "python-docs", "max_conversations": 400, "val_conversations": 40, "max_steps": 16,
            "micro_batch_size": 4, "total_batch_tokens": 4 * BLOCK, "max_lr": 3e-3, "min_lr": 3e-4,
            "warmup_steps": 2, "eval_every": 8, "questions": ["What does json.dumps do?"], "answer_tokens": 6,
            "workers": 1, "log_every": 100, "checkpoint_every": 100}


def chat_tokenizer(texts: list[str], vocab_size: int = 512) -> Tokenizer:
    return Tokenizer.train(texts, vocab_size=vocab_size, special_tokens=special_tokens_with_chat(["<|endoftext|>"]),
                           workers=1, progress=False, name="tiny-chat")


def sft_sections(**changes: dict) -> dict[str, dict]:
    sections = tiny_sections(model={"block_size": BLOCK}, train={"max_steps": 12, "total_batch_tokens": 4 * BLOCK},
                             eval={"every": 100, "samples_per_prompt": 0})
    sections["sft"] = dict(TINY_SFT)
    for section, values in changes.items():
        sections.setdefault(section, {}).update(values)
    return sections


def make_sft_project(tmp: Path, texts: list[str], tok: Tokenizer, name: str = "s", pretrain: bool = True,
                     **changes: dict) -> Path:
    """A recipe whose artifacts/<name>/ holds the tokenizer, shards of `texts` and (pretrain=True) a base
    checkpoint trained on them; returns the recipe path."""
    from contract.recipe import load_recipe
    from train.config import pretrain_config_from_recipe
    from train.trainer import pretrain as run_pretrain

    art = tmp / "artifacts"
    write_shards(art / name, {"train": texts[:-8], "val": texts[-8:]}, tokenizer=tok)
    path = write_recipe(tmp / f"{name}.toml", name, art, sft_sections(**changes))
    if pretrain:
        run_pretrain(pretrain_config_from_recipe(load_recipe(path)), log=False)
    return path


def write_base_checkpoint(recipe_path: Path, tok: Tokenizer, seed: int = 0) -> Path:
    """A freshly initialised model as the recipe's pretraining checkpoint (for tests where what the base
    knows does not matter): the layout `make pretrain` leaves, without the minutes of training."""
    import torch

    from contract.recipe import load_recipe
    from model import GPT, GPTConfig
    from train.checkpoint import save_checkpoint

    recipe = load_recipe(recipe_path)
    m = recipe.section("model")
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=m["block_size"], vocab_size=tok.n_vocab, n_layer=m["n_layer"],
                          n_head=m["n_head"], n_embd=m["n_embd"]))
    path = recipe.stage_dir("pretrain") / "ckpt.pt"
    save_checkpoint(path, {"step": 0, "model": model.state_dict(), "model_config": model.config.to_dict(),
                           "tokenizer_fingerprint": tok.fingerprint})
    return path
