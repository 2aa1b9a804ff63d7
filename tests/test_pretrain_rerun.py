"""Rerunning `make pretrain` never destroys a run: up to date, refused, or replaced only after a checkpoint.

Also what a rerun cleans up (temporary files of a write killed mid-way) and that two runs cannot share a
directory. Kills and interrupts are real signals sent to real `python -m pipelines.pretrain` processes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from pretrain_helpers import ROOT, cli_env, error_lines, make_project, snapshot, start_stage, wait_for

from pipelines import pretrain

RUN_FILES = {"ckpt.pt", "metrics.jsonl", "summary.json", "loss.png", "manifest.json"}


@pytest.fixture(scope="module")
def texts(corpus_texts):
    return corpus_texts[:48]


def finished_run(tmp_path, texts, capsys, **changes):
    """A tiny run trained to its max_steps through the command; returns (recipe path, config)."""
    recipe, cfg = make_project(tmp_path, texts, train={"max_steps": 4, **changes.pop("train", {})},
                               eval={"every": 2, "samples_per_prompt": 0, **changes.pop("eval", {})}, **changes)
    assert pretrain.main(["--config", str(recipe)]) == 0
    capsys.readouterr()
    assert RUN_FILES <= set(snapshot(cfg.out_dir))
    return recipe, cfg


def test_finished_run_is_skipped_and_a_changed_recipe_is_refused(tmp_path, texts, capsys):
    recipe, cfg = finished_run(tmp_path, texts, capsys)
    before = snapshot(cfg.out_dir)

    # same recipe: up to date, nothing rewritten (metrics.jsonl used to be deleted at once)
    assert pretrain.main(["--config", str(recipe)]) == 0
    assert f"pretrain: {cfg.out_dir} is up to date (step 4/4, val loss " in capsys.readouterr().out
    # settings that cannot change the weights (evaluation, logging) do not make it stale
    assert pretrain.main(["--config", str(recipe), "--set", "eval.every=3", "--set", "train.log_every=2"]) == 0
    assert "is up to date" in capsys.readouterr().out
    assert snapshot(cfg.out_dir) == before

    # another recipe: refused in one line that names what changed and every way forward
    assert pretrain.main(["--config", str(recipe), "--set", "train.max_steps=6"]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [err.strip()] and err.startswith("error: ")
    assert f"{cfg.out_dir} holds a finished run of another recipe (train.max_steps: 4 -> 6)" in err
    assert "RESUME=1 (--resume) to continue it" in err and "FORCE=1 (--force) to start over" in err
    assert f'SET="train.out_dir={cfg.out_dir}-2"' in err
    assert snapshot(cfg.out_dir) == before  # byte for byte

    # the named way forward works: continue to the new budget
    assert pretrain.main(["--config", str(recipe), "--set", "train.max_steps=6", "--resume"]) == 0
    assert "step      6/6 | loss" in capsys.readouterr().out
    assert json.loads((cfg.out_dir / "manifest.json").read_text())["step"] == 6

    # a run without its record (made before manifest.json existed) is unfinished; resuming it at its
    # max_steps trains nothing and records it
    (cfg.out_dir / "manifest.json").unlink()
    six = ["--config", str(recipe), "--set", "train.max_steps=6"]
    assert pretrain.main(six) == 2
    assert "holds an unfinished run (its checkpoint is at step 6)" in capsys.readouterr().err
    assert pretrain.main([*six, "--resume"]) == 0 and "nothing to do" in capsys.readouterr().out
    assert pretrain.main(six) == 0 and "is up to date (step 6/6" in capsys.readouterr().out


def test_unfinished_run_is_refused_and_its_files_kept(tmp_path, texts, capsys):
    recipe, cfg = make_project(tmp_path, texts, train={"max_steps": 6}, eval={"every": 3, "samples_per_prompt": 0})
    assert pretrain.main(["--config", str(recipe), "--stop-at-step", "2"]) == 0
    capsys.readouterr()
    before = snapshot(cfg.out_dir)
    assert "manifest.json" not in before  # stopped early: not a finished run

    assert pretrain.main(["--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [err.strip()]
    assert "holds an unfinished run (its checkpoint is at step 2): run again with RESUME=1" in err
    assert snapshot(cfg.out_dir) == before
    assert pretrain.main(["--config", str(recipe), "--resume", "--force"]) == 2
    assert "choose one" in capsys.readouterr().err


def test_force_keeps_the_previous_run_until_the_new_runs_first_checkpoint(tmp_path, texts, capsys):
    recipe, cfg = finished_run(tmp_path, texts, capsys)
    before = snapshot(cfg.out_dir)
    previous = cfg.out_dir.with_name("pretrain.previous")

    # FORCE=1 with a first checkpoint far away: kill -9 while the new run trains
    child = start_stage("pretrain", "--config", str(recipe), "--force", "--set", "train.max_steps=100000",
                        "--set", "train.checkpoint_every=100000", "--set", "eval.every=100000")
    metrics = cfg.out_dir / "metrics.jsonl"
    try:
        wait_for(lambda: previous.is_dir() and metrics.is_file() and '"type": "train"' in metrics.read_text(),
                 what="the new run's first steps", proc=child)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert snapshot(previous) == before  # the old run, byte for byte, beside the new run's partial files
    assert not (cfg.out_dir / "ckpt.pt").exists()

    # the next start puts it back (and, the recipe being unchanged, finds it up to date)
    assert pretrain.main(["--config", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "restored the previous run" in out and "is up to date" in out
    assert snapshot(cfg.out_dir) == before and not previous.exists()

    # a FORCE=1 run that fails before its first checkpoint puts the old run back at once
    assert pretrain.main(["--config", str(recipe), "--force", "--set", "train.max_lr=1e30",
                          "--set", "train.checkpoint_every=100"]) == 2
    assert "loss became" in capsys.readouterr().err
    assert snapshot(cfg.out_dir) == before and not previous.exists()

    # a FORCE=1 run that reaches its checkpoint replaces the old run
    assert pretrain.main(["--config", str(recipe), "--force", "--set", "train.seed=7"]) == 0
    assert "the previous run is kept in" in capsys.readouterr().out
    assert not previous.exists() and snapshot(cfg.out_dir)["ckpt.pt"] != before["ckpt.pt"]
    assert json.loads((cfg.out_dir / "manifest.json").read_text())["config"]["train"]["seed"] == 7


KILLED_IN_TORCH_SAVE = r"""
import sys, time
from train.checkpoint import save_checkpoint

class SlowToPickle:          # torch.save is writing the temporary file when this is reached
    def __reduce__(self):
        print("saving", flush=True)
        time.sleep(600)

save_checkpoint(sys.argv[1], {"step": 1, "model": SlowToPickle()})
"""


def test_temporary_checkpoint_of_a_killed_save_is_removed_at_start(tmp_path, texts, capsys):
    recipe, cfg = finished_run(tmp_path, texts, capsys)
    before = snapshot(cfg.out_dir)
    child = subprocess.Popen([sys.executable, "-c", KILLED_IN_TORCH_SAVE, str(cfg.out_dir / "ckpt.pt")], cwd=ROOT,
                             env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "saving\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    leftover = cfg.out_dir / "ckpt.pt.tmp"
    assert leftover.is_file() and snapshot(cfg.out_dir) == {**before, "ckpt.pt.tmp": leftover.read_bytes()}

    assert pretrain.main(["--config", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert f"removed {leftover}" in out and "is up to date" in out
    assert snapshot(cfg.out_dir) == before  # the leftover is gone, the checkpoint it was replacing intact


def test_second_run_is_refused_while_the_first_holds_the_directory(tmp_path, texts, capsys):
    """And Ctrl-C: status 130, and a FORCE=1 run interrupted before its first checkpoint puts the old run back."""
    recipe, cfg = finished_run(tmp_path, texts, capsys)
    before = snapshot(cfg.out_dir)
    long_run = ["--force", "--set", "train.max_steps=100000", "--set", "train.checkpoint_every=100000",
                "--set", "eval.every=100000"]
    first = start_stage("pretrain", "--config", str(recipe), *long_run)
    lock = cfg.out_dir.with_name(".pretrain.lock")
    previous = cfg.out_dir.with_name("pretrain.previous")
    try:
        wait_for(lambda: lock.is_file() and lock.read_text().strip() == str(first.pid) and previous.is_dir(),
                 what="the stage lock", proc=first)
        second = subprocess.run([sys.executable, "-m", "pipelines.pretrain", "--config", str(recipe), *long_run],
                                cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert error_lines(second.stderr) == [
            f"error: {cfg.out_dir}: another `pretrain` run (pid {first.pid}) is writing this directory; "
            "wait for it to finish or stop it, then run again"]
        assert snapshot(previous) == before  # the second run moved nothing
    finally:
        first.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert snapshot(cfg.out_dir) == before and not previous.exists()
