"""Where pretraining starts: `train.init_from`, as nanoGPT's init_from and build-nanogpt's from_pretrained.

    init_from = "scratch"                       random weights (GPT-2's initialisation; the default)
    init_from = "artifacts/demo/pretrain"       a checkpoint of ours (ckpt.pt, or its directory): its weights only
    init_from = "gpt2"                          OpenAI's GPT-2 124M from the hub (also "gpt2-medium", ...,
                                                "openai-community/gpt2", any hub id, or a local transformers
                                                directory: model/hf.py reads them all, through the HF cache)

Only the weights are taken: the optimizer, the schedule and the data position start fresh (continuing a run
is RESUME=1, which ignores init_from). The recipe still describes the model, and the weights must fit it:
the same n_layer, n_head, n_embd, block_size and bias (for GPT-2, `[model] preset = "gpt2"`), and token ids
that mean the same text as the shards' ids. That last check is what keeps a run from training GPT-2's
weights on ids of another tokenizer, which would run for hours and learn nothing useful:
- a checkpoint of ours records its tokenizer's fingerprint, which must be the shards';
- a transformers directory ships its tokenizer (vocab.json + merges.txt, or our tokenizer.ljt.json), whose
  ranks and regex must be the shards' tokenizer's, and whose special tokens must keep their ids there.
The shards' tokenizer may have more ids than the weights (GPT-2 plus the chat tokens, `tokenizer.use =
"gpt2"`): those rows start as the mean embedding (model.hf.widen_embedding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model import GPTConfig

SCRATCH = "scratch"
STRUCTURE = ("n_layer", "n_head", "n_embd", "block_size", "bias")   # what weights fix; dropout is free


@dataclass
class InitialWeights:
    weights: dict[str, torch.Tensor]   # a state dict for GPT(model_config): our layout, padded rows
    source: str                        # what the recipe named
    path: Path                         # what was read
    kind: str                          # "checkpoint" | "transformers"

    def describe(self) -> str:
        where = f" ({self.path})" if str(self.path) != self.source else ""
        return f"init: weights from {self.kind} {self.source}{where}"


def initial_weights(spec: str, config: GPTConfig, shards_fingerprint: str,
                    shards_tokenizer: Callable[[], Any]) -> InitialWeights | None:
    """The weights `train.init_from = spec` names, checked against the recipe's model and the shards' tokens.

    shards_tokenizer: loads the tokenizer the shards were made with (asked only for a transformers source)."""
    if spec == SCRATCH:
        return None
    path = Path(spec).expanduser()
    if path.suffix == ".pt" or (path / "ckpt.pt").is_file():
        return _from_checkpoint(spec, path, config, shards_fingerprint)
    return _from_transformers(spec, config, shards_tokenizer)


def _structure_mismatch(source: str, theirs: GPTConfig, ours: GPTConfig) -> None:
    diffs = [f"{k} {getattr(ours, k)!r} vs {getattr(theirs, k)!r}" for k in STRUCTURE
             if getattr(ours, k) != getattr(theirs, k)]
    if diffs:
        raise ValueError(
            f"train.init_from = {source!r}: the recipe's model does not fit these weights (recipe vs weights: "
            f"{', '.join(diffs)}); set [model] to the weights' architecture (GPT-2 124M: preset = \"gpt2\")")
    if theirs.vocab_size > ours.vocab_size:
        raise ValueError(f"train.init_from = {source!r}: the weights know {theirs.vocab_size} token ids, the shards' "
                         f"vocabulary only {ours.vocab_size}: they come from another tokenizer")


def _from_checkpoint(spec: str, path: Path, config: GPTConfig, shards_fingerprint: str) -> InitialWeights:
    from train.checkpoint import check_same_tokenizer, load_checkpoint

    state = load_checkpoint(path)
    check_same_tokenizer(state, shards_fingerprint, path)
    theirs = GPTConfig(**state["model_config"])
    _structure_mismatch(spec, theirs, config)
    weights = dict(state["model"])
    weights["transformer.wte.weight"] = _embedding(weights["transformer.wte.weight"], theirs.vocab_size, config)
    return InitialWeights(weights, spec, path / "ckpt.pt" if path.is_dir() else path, "checkpoint")


def _from_transformers(spec: str, config: GPTConfig, shards_tokenizer: Callable[[], Any]) -> InitialWeights:
    from model.hf import load_hf_gpt2, resolve_hf_checkpoint

    folder = resolve_hf_checkpoint(spec)   # a local path as it is, a hub id through the HF cache
    directory = folder if folder.is_dir() else folder.parent
    source_tok = _directory_tokenizer(directory, spec)
    problem = _different_ids(source_tok, shards_tokenizer())
    if problem:
        raise ValueError(f"train.init_from = {spec!r}: the shards' token ids are not the ids these weights were "
                         f"trained on ({problem}); shard with the model's tokenizer: [tokenizer] use = \"gpt2\"")
    model = load_hf_gpt2(folder)
    _structure_mismatch(spec, model.config, config)
    weights = model.state_dict()
    weights["transformer.wte.weight"] = _embedding(weights["transformer.wte.weight"], model.config.vocab_size, config)
    return InitialWeights(weights, spec, folder, "transformers")


def _embedding(wte: torch.Tensor, vocab: int, config: GPTConfig) -> torch.Tensor:
    from model.hf import widen_embedding

    if vocab == config.vocab_size and wte.shape[0] == config.padded_vocab_size:
        return wte
    return widen_embedding(wte, vocab, config.vocab_size, config.padded_vocab_size)


def _directory_tokenizer(directory: Path, spec: str):
    """The tokenizer that ships with a transformers directory: ours, or GPT-2's two files."""
    from tokenizer import Tokenizer

    if (directory / "tokenizer.ljt.json").is_file():
        return Tokenizer.load(directory / "tokenizer.ljt.json")
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return Tokenizer.from_gpt2_files(directory / "vocab.json", directory / "merges.txt")
    raise ValueError(f"train.init_from = {spec!r}: {directory} has no tokenizer (vocab.json + merges.txt, or "
                     "tokenizer.ljt.json), so nothing says its token ids are the shards' ids")


def _different_ids(source, shards) -> str | None:
    """Why ids of `source` and `shards` would not mean the same text, or None. The shards' tokenizer may have
    special tokens after the source's (the chat tokens), never other ranks or another regex."""
    if shards is None:
        return "the shards' tokenizer file is missing"
    if source.pattern != shards.pattern:
        return "another pre-tokenisation regex"
    if dict(source.mergeable_ranks) != dict(shards.mergeable_ranks):
        return (f"another vocabulary: {len(source.mergeable_ranks):,} tokens there, "
                f"{len(shards.mergeable_ranks):,} in the shards' tokenizer")
    moved = [s for s, i in source.special_tokens.items() if shards.special_tokens.get(s) != i]
    if moved:
        return f"special token {moved[0]!r} has id {source.special_tokens[moved[0]]} there, " \
               f"{shards.special_tokens.get(moved[0])} in the shards"
    return None
