"""Batch-size warm-up (train.batch_warmup_tokens, train/config.BatchWarmup): the schedule's arithmetic, and a
pretraining run that stops and resumes in the middle of the ramp taking exactly the batches of a straight run.
(Fine-tuning's resume and DDP runs with the warm-up on are in test_sft_stage.py and test_sft_ddp.py.)"""

from __future__ import annotations

import json

import pytest
import torch
from pretrain_helpers import make_project

from contract.recipe import RecipeError
from train.checkpoint import load_checkpoint
from train.config import BatchWarmup, TrainSection, batch_plan
from train.trainer import pretrain

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_the_batch_grows_linearly_in_tokens_to_the_full_batch():
    # GPT-2 124M's batch, 64 rows of 1024 per micro-step: the ramp starts at 1/64 of 524,288 tokens
    ramp = BatchWarmup(micro_batch_size=64, total_batch_tokens=524_288, warmup_tokens=100_000_000)
    rows = [ramp.micro_batch(s) for s in range(2000)]
    assert rows[0] == 1 and ramp.step_tokens(0) == 8192 and rows == sorted(rows) and rows[-1] == 64
    for s in (1, 10, 100, 300):  # b = 1 + (B - 1) * tokens_before // W, in integers
        assert rows[s] == min(64, 1 + 63 * ramp.tokens_before(s) // 100_000_000)
        assert ramp.tokens_before(s + 1) - ramp.tokens_before(s) == rows[s] * 8192
    first_full = rows.index(64)
    assert ramp.tokens_before(first_full) >= 100_000_000 * 63 / 64  # full once the ramp's tokens are spent
    assert ramp.tokens_before(first_full + 10) == ramp.tokens_before(first_full) + 10 * 524_288
    assert f"({first_full:,} steps at a smaller batch)" in ramp.describe()
    # the same for any number of processes: a step's tokens depend on B and the total batch only
    for world in (1, 2, 8):
        plan = batch_plan(TrainSection(batch_warmup_tokens=100_000_000), 1024, world)
        other = BatchWarmup.from_plan(TrainSection(batch_warmup_tokens=100_000_000), plan)
        assert [other.step_tokens(s) for s in range(0, 2000, 97)] == [ramp.step_tokens(s) for s in range(0, 2000, 97)]
    off = BatchWarmup(64, 524_288, 0)
    assert not off.active and off.micro_batch(0) == 64 and off.tokens_before(7) == 7 * 524_288


def test_a_negative_warmup_is_a_recipe_error():
    from contract.recipe import parse_section

    with pytest.raises(RecipeError, match="batch_warmup_tokens must be >= 0"):
        parse_section(TrainSection, {"batch_warmup_tokens": -1}, section="train", source="r.toml")


def test_pretraining_resumes_exactly_in_the_middle_of_the_ramp(tmp_path, corpus_texts):
    texts = corpus_texts[:48]
    changes = dict(train={"max_steps": 8, "batch_warmup_tokens": 600}, eval={"every": 4, "samples_per_prompt": 0})
    _, straight = make_project(tmp_path, texts, name="straight", **changes)
    full = pretrain(straight, log=False)
    _, split = make_project(tmp_path, texts, name="split", **changes)
    first = pretrain(split, stop_at_step=3, log=False)
    second = pretrain(split, resume=True, log=False)
    assert first.losses + second.losses == full.losses  # bit for bit
    records = [json.loads(line) for line in (straight.out_dir / "metrics.jsonl").read_text().splitlines()]
    tokens = [r["tokens"] for r in records if r["type"] == "train"]
    per_step = [b - a for a, b in zip([0] + tokens, tokens)]
    assert per_step[0] == 64 and per_step[-1] == 256 and per_step == sorted(per_step)  # 2 x 1 window of 32 -> 2 x 4
    a, b = load_checkpoint(straight.out_dir), load_checkpoint(split.out_dir)
    assert a["loader"] == b["loader"] and a["loader"]["consumed"] * 32 == sum(per_step)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
