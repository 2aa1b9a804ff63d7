"""`make sft` under DDP on CPU: 2 gloo processes under torchrun fine-tune exactly like 1 process with the
same global batch, with batch warm-up on.

1 process x 2 micro-steps of B=2, or 2 processes x 1 micro-step of B=2: the same rows make up every optimizer
step (the loader deals them by position in one stream), also while the warm-up takes 1 row per micro-step
instead of 2. Rank 0 alone prepares the conversations and decides what to do with the run directory; the
other rank reads its data and gets its decision by broadcast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sft_helpers import chat_tokenizer, make_sft_project, write_base_checkpoint

from contract.recipe import load_recipe
from pipelines import sft

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ["sft.micro_batch_size=2", "sft.max_steps=6", "sft.eval_every=3", "train.batch_warmup_tokens=700"]


def train_records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def test_two_gloo_processes_fine_tune_like_one(tmp_path, corpus_texts):
    texts = corpus_texts[:300]
    tok = chat_tokenizer(texts)
    recipe = make_sft_project(tmp_path, texts, tok, pretrain=False)
    write_base_checkpoint(recipe, tok)

    overrides = dict(s.split("=", 1) for s in SETTINGS)
    sft.run_stage(load_recipe(recipe, {**overrides, "sft.out_dir": str(tmp_path / "one")}), log=lambda *a: None)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pipelines.sft",
         "--config", str(recipe), "--set", " ".join(SETTINGS + [f"sft.out_dir={tmp_path / 'two'}"])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "B 2 x T 96 x 2 process(es) x 1 micro-step(s)" in proc.stdout
    assert proc.stdout.count("held-out loss on assistant tokens") == 1  # rank 0 reports, once

    one, two = tmp_path / "one", tmp_path / "two"
    losses = [[r["loss"] for r in train_records(d, "train")] for d in (one, two)]
    assert len(losses[0]) == 6 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    tokens = [r["tokens"] for r in train_records(one, "train")]
    assert tokens[0] == 192 and tokens[-1] - tokens[-2] == 384  # 1 row per micro-step first, then 2
    assert [r["val_loss"] for r in train_records(two, "val")] == pytest.approx(
        [r["val_loss"] for r in train_records(one, "val")], rel=1e-5)
    a = torch.load(one / "ckpt.pt", weights_only=True)
    b = torch.load(two / "ckpt.pt", weights_only=True)
    assert a["loader"]["consumed"] == b["loader"]["consumed"] and len(b["rng"]) == 2
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    assert json.loads((two / "manifest.json").read_text())["step"] == 6
