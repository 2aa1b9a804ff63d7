"""DDP on CPU: 2 gloo processes under torchrun train exactly like 1 process with the same global batch.

Both runs take 256 tokens per optimizer step in 2 micro-steps: 1 process x B=4, or 2 processes x B=2
(where the first micro-step runs under no_sync and DDP averages the gradients on the second). The
loader deals the same windows to each optimizer step either way, so losses and final weights agree up
to float summation order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pretrain_helpers import make_project

from train.trainer import pretrain

ROOT = Path(__file__).resolve().parent.parent


def train_losses(out_dir: Path) -> list[float]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["type"] == "train"]


def test_two_gloo_processes_match_one_process(tmp_path, corpus_texts):
    texts = corpus_texts[:48]
    common = dict(train={"max_steps": 6}, eval={"every": 3, "samples_per_prompt": 0})
    _, single = make_project(tmp_path, texts, name="single", **common)
    one = pretrain(single, log=False)

    recipe, ddp = make_project(tmp_path, texts, name="ddp", train={"max_steps": 6, "micro_batch_size": 2},
                               eval={"every": 3, "samples_per_prompt": 0})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "pipelines.pretrain", "--config", str(recipe)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "B 2 x T 32 x 2 process(es) x 2 micro-step(s)" in proc.stdout
    assert proc.stdout.count("step      6/6 | loss") == 1  # only rank 0 reports

    assert train_losses(ddp.out_dir) == pytest.approx(one.losses, rel=1e-5)
    assert train_losses(single.out_dir) == pytest.approx(one.losses)
    a = torch.load(single.out_dir / "ckpt.pt", weights_only=True)
    b = torch.load(ddp.out_dir / "ckpt.pt", weights_only=True)
    assert a["loader"]["consumed"] == b["loader"]["consumed"] == 6 * 8  # windows handed out, all ranks
    assert len(b["rng"]) == 2  # both ranks' generator states
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    summary = json.loads((ddp.out_dir / "summary.json").read_text())
    assert summary["val_loss"] == pytest.approx(one.val_loss, rel=1e-4)  # val windows split over the ranks
