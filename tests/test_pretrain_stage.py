"""The stage as users run it: the command lines, the Make targets, the GPU check's CPU dry run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pretrain_helpers import make_project

ROOT = Path(__file__).resolve().parent.parent

# One interpreter runs the whole user journey (train until interrupted, resume, sample, evaluate), then
# reports which modules got imported: the stage must not pull in downloading or tokenizer training.
JOURNEY = r"""
import json, sys
from pipelines import evaluate, pretrain, sample
cfg = sys.argv[1]
codes = [pretrain.main(["--config", cfg, "--stop-at-step", "3"]),
         pretrain.main(["--config", cfg, "--resume"]),
         sample.main(["--config", cfg, "--prompt", "def f(x):", "--tokens", "12", "--num", "2", "--seed", "7"]),
         evaluate.main(["--config", cfg, "--hellaswag", sys.argv[2]])]
banned = [m for m in ("pipelines.data", "pipelines.learn_tokenizer", "tokenizer.learn_bpe", "datasets")
          if m in sys.modules]
print("JOURNEY", json.dumps({"codes": codes, "banned": banned}))
"""


def test_cli_journey_train_resume_sample_evaluate(tmp_path, corpus_texts):
    recipe, cfg = make_project(tmp_path, corpus_texts[:48], train={"max_steps": 6}, eval={"every": 3})
    hs = tmp_path / "hs.jsonl"
    example = {"ctx": "The function", "endings": ["returns a value.", "x", "y", "z"], "label": 0}
    hs.write_text(json.dumps(example) + "\n")
    proc = subprocess.run([sys.executable, "-c", JOURNEY, str(recipe), str(hs)], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.split("JOURNEY ", 1)[1])
    assert report == {"codes": [0, 0, 0, 0], "banned": []}
    assert "resuming from" in out and "at step 3" in out and "step      6/6 | loss" in out
    assert out.count("--- sample") == 2 and "def f(x):" in out
    summary = json.loads((cfg.out_dir / "summary.json").read_text())
    ev = json.loads((cfg.out_dir / "eval.json").read_text())
    assert ev["step"] == 6 and abs(ev["val_loss"] - summary["val_loss"]) < 1e-6  # same windows, same weights
    assert ev["hellaswag"]["n"] == 1
    for name in ("ckpt.pt", "metrics.jsonl", "loss.png"):
        assert (cfg.out_dir / name).is_file()


def test_cli_errors_are_one_clear_line(tmp_path, capsys, corpus_texts):
    from pipelines import evaluate, pretrain, sample

    recipe, cfg = make_project(tmp_path, corpus_texts[:20])
    assert pretrain.main(["--config", str(recipe), "--set", "train.micro_batch_size=3"]) == 2
    assert "total_batch_tokens = 256 is not a multiple of B x T x processes = 3 x 32 x 1" in capsys.readouterr().err
    assert sample.main(["--config", str(recipe)]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    (cfg.shards_dir / "manifest.json").unlink()
    assert pretrain.main(["--config", str(recipe)]) == 2
    assert "manifest.json not found: no complete shards here (run `make shards`)" in capsys.readouterr().err
    assert evaluate.main(["--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml does not exist" in capsys.readouterr().err


def make_dry(*args: str) -> str:
    proc = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_pretrain_uses_torchrun_with_gpus_and_one_process_without():
    gpus = make_dry("pretrain", "NGPU=4", "RESUME=1", "SET=train.max_steps=10")
    assert "torchrun --standalone --nproc_per_node=4 -m pipelines.pretrain --config 'configs/demo.toml' " \
           "--set 'train.max_steps=10' --resume" in gpus
    assert "$(shell" not in gpus
    cpu = make_dry("pretrain", "NGPU=0")
    assert "-m pipelines.pretrain --config 'configs/demo.toml'" in cpu and "no CUDA GPU" in cpu
    assert "--force" not in cpu
    # FORCE=1 starts pretraining over; it does not redo the data stages the target runs first
    forced = make_dry("pretrain", "NGPU=0", "FORCE=1").splitlines()
    assert any("-m pipelines.pretrain" in line and "--force" in line for line in forced)
    assert not any("-m pipelines.shards" in line and "--force" in line for line in forced)
    nodes = make_dry("pretrain", "NGPU=8", "NNODES=2", "NODE_RANK=1", "MASTER_ADDR=10.0.0.1")
    assert "--nnodes=2 --node_rank=1 --rdzv_backend=c10d --rdzv_endpoint=10.0.0.1:29500 --nproc_per_node=8" in nodes
    assert "shards" in make_dry("pretrain", "NGPU=0")  # the data chain runs first
    assert "--prompt 'it'\\''s here'" in make_dry("sample", "PROMPT=it's here")


def test_gpu_check_dry_run_on_cpu(capsys):
    from bench import gpu_check

    bench_md = ROOT / "BENCHMARKS.md"
    before = bench_md.read_text() if bench_md.exists() else None
    assert gpu_check.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "CPU: tiny, B=2 T=32, 128 tokens/step, steps 2-3:" in out and "tokens/s" in out and "MFU n/a" in out
    assert (bench_md.read_text() if bench_md.exists() else None) == before  # a dry run records nothing
