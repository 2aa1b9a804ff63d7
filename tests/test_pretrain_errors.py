"""Failures of the environment and of the user's input are one `error:` line and status 2, and leave the
run directory as it was: no GPU, no W&B credentials, a diverging loss, a full or read-only disk, bad flags."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch
from pretrain_helpers import ROOT, error_lines, make_project, snapshot

from pipelines import evaluate, hf, pretrain, sample
from train.logger import wandb_credentials_present


@pytest.fixture(scope="module")
def texts(corpus_texts):
    return corpus_texts[:48]


@pytest.fixture
def finished(tmp_path, texts, capsys):
    """A finished tiny run: (recipe, out_dir, its files by name)."""
    recipe, cfg = make_project(tmp_path, texts, train={"max_steps": 4}, eval={"every": 2, "samples_per_prompt": 0})
    assert pretrain.main(["--config", str(recipe)]) == 0
    capsys.readouterr()
    return recipe, cfg.out_dir, snapshot(cfg.out_dir)


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without a GPU")
def test_cuda_requested_without_a_gpu(finished, capsys):
    recipe, out, before = finished
    assert pretrain.main(["--config", str(recipe), "--force", "--set", "train.device=cuda"]) == 2
    assert "train.device = 'cuda' but torch sees no CUDA device" in one_error(capsys)
    assert sample.main(["--config", str(recipe), "--device", "cuda"]) == 2
    assert "--device cuda but torch sees no CUDA device" in one_error(capsys)
    assert snapshot(out) == before and not out.with_name("pretrain.previous").exists()


def test_wandb_online_without_credentials_stops_before_training(finished, tmp_path, capsys, monkeypatch):
    recipe, out, before = finished
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert pretrain.main(["--config", str(recipe), "--force", "--set", "wandb.mode=online"]) == 2
    line = one_error(capsys)
    assert "wandb.mode = 'online' but no W&B API key is set up" in line and "wandb login" in line
    assert snapshot(out) == before and not (out / "wandb").exists()


def test_wandb_credentials_are_looked_up_where_wandb_looks(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    assert wandb_credentials_present({"NETRC": str(netrc)})
    assert wandb_credentials_present({"HOME": str(tmp_path / "home"), "WANDB_API_KEY": "x" * 40})
    assert not wandb_credentials_present({"HOME": str(tmp_path / "home")})
    # a private W&B server: its host's entry, not api.wandb.ai's
    assert not wandb_credentials_present({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.com"})
    netrc.write_text("machine wandb.example.com login user password 0123\n")
    assert wandb_credentials_present({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.com"})


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(finished, capsys):
    recipe, out, before = finished
    code = pretrain.main(["--config", str(recipe), "--resume", "--set", "train.max_steps=8", "--set",
                          "train.max_lr=1e30", "--set", "train.checkpoint_every=100"])
    assert code == 2
    line = one_error(capsys)
    assert line.startswith("error: loss became nan at step 6 ")
    assert f"the last good checkpoint (step 4) is kept in {out / 'ckpt.pt'}" in line
    assert 'lower train.max_lr (now 1e+30), e.g. SET="train.max_lr=3.3e+29"' in line
    assert snapshot(out)["ckpt.pt"] == before["ckpt.pt"]


def test_disk_full_while_a_forced_run_saves_its_first_checkpoint(finished, capsys, monkeypatch):
    """ENOSPC in the middle of torch.save: one line naming the directory, no temporary file, the old run back."""
    recipe, out, before = finished
    from train import checkpoint

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    assert pretrain.main(["--config", str(recipe), "--force", "--set", "train.seed=5"]) == 2
    assert one_error(capsys) == f"error: {out}: no space left on the device"
    monkeypatch.undo()
    assert snapshot(out) == before and not out.with_name("pretrain.previous").exists()


def test_read_only_run_directory(finished):
    """Held to file modes (as root: without capabilities), FORCE=1 on read-only storage says in one line that
    it may not replace the run there, and leaves it as it was."""
    recipe, out, before = finished
    prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"] if os.geteuid() == 0 else []
    parent = out.parent
    modes = {p: p.stat().st_mode for p in (parent, out)}
    try:
        for p in (parent, out):
            p.chmod(0o555)
        forced = subprocess.run([*prefix, sys.executable, "-m", "pipelines.pretrain", "--config", str(recipe),
                                 "--force"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert forced.returncode == 2, forced.stderr
    assert error_lines(forced.stderr) == [f"error: {out}: permission denied"]
    assert snapshot(out) == before


@pytest.mark.parametrize("main,argv,message", [
    (sample.main, ["--tokens", "-1"], "argument --tokens: must be >= 1, got -1"),           # make sample TOKENS=-1
    (sample.main, ["--num", "0"], "argument --num: must be >= 1, got 0"),                   # make sample NUM=0
    (sample.main, ["--top-k", "x"], "argument --top-k: expected a whole number, got 'x'"),
    (pretrain.main, ["--stop-at-step", "-1"], "argument --stop-at-step: must be >= 1, got -1"),
    (evaluate.main, ["--limit", "-5"], "argument --limit: must be >= 0, got -5"),
    (hf.main, ["sample", "somewhere", "--max-new-tokens", "0"], "argument --max-new-tokens: must be >= 1, got 0"),
], ids=["tokens", "num", "top-k", "stop-at-step", "limit", "hf-tokens"])
def test_bad_command_line_values_are_one_line_before_any_work(main, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in one_error(capsys)
