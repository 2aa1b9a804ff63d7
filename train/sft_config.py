"""The fine-tuning stage's part of a recipe: the [sft] section.

[sft] has the shape of [data] (where the conversations come from) plus the few [train] values that fine-
tuning usually changes. Everything else -- device, precision, compile, AdamW's betas, gradient clipping,
batch warm-up, wandb -- comes from the recipe's [train] and [wandb], so a fine-tune runs on the machinery
and settings its pretraining ran on. The model is the base checkpoint's, whatever [model] says now.

    [sft]
    source = "python-docs"       # python-docs (embedded, offline) | hf (hub dataset) | local (jsonl/parquet)
    max_steps = 300              # optimiser steps; absent: one epoch of the training conversations
    max_lr = 1e-3
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from contract.recipe import Recipe, no_negative_numbers, parse_section
from train.config import EvalSection, ModelSection, PretrainConfig, TrainSection, pretrain_config_from_recipe

Fail = Callable[[str], NoReturn]

DEFAULT_QUESTIONS = ("What does json.dumps do?", "What is the os.path module for?")
# [sft] keys that override the [train] key of the same name when set.
TRAIN_OVERRIDES = ("micro_batch_size", "total_batch_tokens", "max_steps", "max_lr", "min_lr", "warmup_steps",
                   "weight_decay", "checkpoint_every", "log_every", "seed")


@dataclass(frozen=True)
class SftSection:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"source": ("python-docs", "hf", "local")}
    # --- where the conversations come from (as [data]) ---
    source: str = "python-docs"
    dataset: str = ""                # hf: hub name, e.g. "HuggingFaceTB/smol-smoltalk" (or a local hub-like dir)
    config: str = ""                 # hf: dataset configuration
    split: str = "train"             # hf: split to stream
    paths: list[str] = field(default_factory=list)   # local: jsonl/json/parquet files or globs
    messages_field: str = "messages"                 # the column holding [{role, content}, ...]
    id_field: str = ""               # "" = ids like "<file or dataset>:<row>"
    max_conversations: int = 0       # read at most this many (0 = all)
    val_conversations: int = 200     # held out by a hash of the conversation id (never trained on) ...
    val_fraction: float = 0.0        # ... or this fraction of them
    workers: int = 0                 # encoding processes; 0 = all cores
    # --- where the weights come from ---
    init: str = ""                   # "" = the recipe's pretraining checkpoint; a ckpt.pt (or its directory); or
                                     # a transformers GPT-2 directory (config.json + weights + vocab.json/merges.txt)
    # --- optimisation: unset keys take the [train] value ---
    micro_batch_size: int | None = None
    total_batch_tokens: int | None = None
    max_steps: int | None = None     # None = one epoch of the training rows
    max_lr: float | None = None
    min_lr: float | None = None
    warmup_steps: int | None = None
    weight_decay: float | None = None
    checkpoint_every: int | None = None
    log_every: int | None = None
    seed: int | None = None
    # --- evaluation ---
    eval_every: int = 100            # held-out loss + sample answers every N steps (and before and after)
    questions: list[str] = field(default_factory=lambda: list(DEFAULT_QUESTIONS))
    answer_tokens: int = 48          # at most this many tokens per sample answer
    temperature: float = 0.0         # of the sample answers (0 = greedy: comparable across steps)
    out_dir: str = ""                # "" = artifacts/<recipe>/sft

    def check(self, fail: Fail) -> None:
        no_negative_numbers(self, fail)
        if self.val_fraction >= 1:
            fail("key 'val_fraction' must be below 1")
        if self.val_fraction and self.val_conversations:
            fail("set either 'val_conversations' or 'val_fraction', not both")
        if not self.val_fraction and not self.val_conversations:
            fail("hold some conversations out (val_conversations or val_fraction): the held-out loss is the measure")
        if self.eval_every < 1:
            fail("key 'eval_every' must be at least 1")
        if self.source == "hf" and not self.dataset:
            fail("source 'hf' needs dataset = \"owner/name\" (e.g. HuggingFaceTB/smol-smoltalk)")
        if self.source == "local" and not self.paths:
            fail("source 'local' needs paths = [\"conversations/*.jsonl\", ...]")

    def data_config(self) -> dict[str, Any]:
        """The keys that decide which conversations are read and how they are split (the data's identity)."""
        keys = ("source", "dataset", "config", "split", "paths", "messages_field", "id_field", "max_conversations",
                "val_conversations", "val_fraction")
        return {k: getattr(self, k) for k in keys}


def sft_section_from_recipe(recipe: Recipe) -> SftSection:
    return parse_section(SftSection, recipe.section("sft"), section="sft", source=Path(recipe.path))


def sft_train_config(recipe: Recipe, sft: SftSection, base_model: dict[str, Any], *, val_tokens: int,
                     one_epoch_steps: Callable[[TrainSection], int]) -> PretrainConfig:
    """The PretrainConfig the trainer runs for fine-tuning: the base's model, [train] with [sft]'s overrides.

    `one_epoch_steps(train)` gives the steps of one epoch for a [train] section (it depends on the batch),
    used when [sft] sets no max_steps. The model section pins every field of the base checkpoint's config,
    so the preset is irrelevant and the vocabulary is the base's (or the chat tokenizer's, for GPT-2).
    """
    cfg = pretrain_config_from_recipe(recipe)
    overrides = {k: getattr(sft, k) for k in TRAIN_OVERRIDES if getattr(sft, k) is not None}
    train = dataclasses.replace(cfg.train, **overrides, out_dir="", seq_len=None)
    if sft.max_steps is None:
        train = dataclasses.replace(train, max_steps=max(1, one_epoch_steps(train)))
    # validated again as a [train] section: an override such as max_lr < min_lr fails like a [train] typo
    train = parse_section(TrainSection, {k: v for k, v in dataclasses.asdict(train).items() if v is not None},
                          section="train (with the [sft] overrides)", source=recipe.path)
    fields = ModelSection.__dataclass_fields__
    model = ModelSection(preset="tiny", **{k: v for k, v in base_model.items() if k in fields and k != "preset"})
    # Samples are the stage's own (answers to sft.questions, see pipelines/sft.py); eval keeps the cadence.
    ev = EvalSection(every=sft.eval_every, val_tokens=val_tokens, sample_every=sft.eval_every)
    out_dir = Path(sft.out_dir) if sft.out_dir else recipe.stage_dir("sft")
    return dataclasses.replace(cfg, out_dir=out_dir, model=model, train=train, eval=ev)
