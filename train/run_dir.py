"""The run directory (artifacts/<recipe>/pretrain/): what a rerun may do with the run already there.

A finished pretraining run can be days of GPU time, so `make pretrain` never overwrites one by accident:

    nothing there                              -> train
    a finished run of the same recipe          -> "up to date", exit 0 (FORCE=1 to redo)
    an unfinished run, or another recipe's     -> refuse, naming the choices: RESUME=1 (continue),
                                                  FORCE=1 (start over, replacing it), or another
                                                  directory (SET="train.out_dir=...")

"Finished" is the stage's manifest.json, written last, as every stage of the project does: its config
is the run's identity (the [model] section, the [train] keys that change the weights, the sha256 of the
shards' manifest, which covers every shard's sha256), and its outputs the run's files (size, sha256).

FORCE=1 keeps the previous run until the new one has something to show for itself. The whole directory is
renamed to a sibling, `<dir>.previous` -- one rename, so there is no moment when half of the old files
have moved -- and the new run starts in an empty directory. Right after the new run's first checkpoint
the sibling is deleted. If the new run dies before that (an error, Ctrl-C, kill -9), the next start of
the stage finds the sibling without a checkpoint beside it and renames it back: the old run is exactly
as it was. The rule needs no record of its own, because the new directory holds a ckpt.pt if and only
if the new run reached its first checkpoint (the old one left with the rename).

Every start also deletes what a killed run left of an atomic write: anything named `*.tmp` (the one
temporary name tokenizer/atomic_write.py uses), e.g. a 1.5 GB `ckpt.pt.tmp` from a kill during torch.save.
All of this runs under the stage lock (contract/stage_lock.py), in rank 0 only.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from contract import manifest as mf
from contract.shard_format import ShardReader
from train.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from train.config import PretrainConfig

# The files a run writes; any of them means a run was here.
RUN_FILES = (CHECKPOINT_NAME, "metrics.jsonl", "summary.json", "loss.png", mf.MANIFEST)
# [train] keys that cannot change the trained weights: a run that differs only in these is the same run.
NOT_IDENTITY_KEYS = ("log_every", "checkpoint_every", "cpu_threads", "peak_tflops", "out_dir", "compile", "device")


class RunExistsError(RuntimeError):
    """The run directory holds a run that this command must not touch without being told how."""


def previous_dir(out_dir: Path) -> Path:
    """Where FORCE=1 keeps the replaced run until the new run's first checkpoint."""
    return out_dir.with_name(out_dir.name + ".previous")


def remove_leftovers(out_dir: Path) -> list[Path]:
    """Delete what atomic writes interrupted by a kill left: everything named `*.tmp` under the run
    directory (contract.manifest's one cleaner of the name tokenizer/atomic_write.py writes under)."""
    return mf.remove_leftovers(out_dir)


def recover_replaced_run(out_dir: Path) -> str | None:
    """Finish what an interrupted FORCE=1 left: delete the replaced run if the new one has a checkpoint,
    else put the replaced run back. Returns what was done, for the console, or None."""
    previous = previous_dir(out_dir)
    if not previous.is_dir():
        return None
    if (out_dir / CHECKPOINT_NAME).is_file():
        shutil.rmtree(previous)
        return f"deleted {previous}: the run that replaced it (FORCE=1) had written its first checkpoint"
    if out_dir.exists():
        shutil.rmtree(out_dir)  # the new run's files before its first checkpoint: nothing to continue from
    os.replace(previous, out_dir)
    return (f"restored the previous run into {out_dir}: the run meant to replace it (FORCE=1) stopped before "
            "its first checkpoint")


def run_identity(cfg: PretrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, inputs) of a run as its manifest records them; equal ones train the same model."""
    train = {k: v for k, v in asdict(cfg.train).items() if k not in NOT_IDENTITY_KEYS}
    if train.get("init_from") == "scratch":
        del train["init_from"]   # the default: a run recorded before the key existed stays the same run
    config = {"model": asdict(cfg.model), "train": train}
    reader = ShardReader(cfg.shards_dir)  # missing or broken shards: the reader's one clear error
    inputs = {"shards_manifest_sha256": mf.sha256_file(reader.manifest_path)}
    return config, inputs


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs between two JSON-like dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out

    def short(v: Any) -> str:
        return repr(v[:12] + "...") if isinstance(v, str) and len(v) > 16 else repr(v)  # sha256 digests

    return [] if old == new else [f"{prefix[:-1]}: {short(old)} -> {short(new)}"]


@dataclass(frozen=True)
class Decision:
    action: str  # "train" (nothing there), "resume", "replace" (FORCE=1), "skip" (up to date), "refuse"
    message: str = ""


def _checkpoint_step(out_dir: Path) -> str:
    try:
        return f"its checkpoint is at step {load_checkpoint(out_dir, mmap=True)['step']}"
    except CheckpointError:
        return "it has no usable checkpoint"


def decide(cfg: PretrainConfig, *, resume: bool, force: bool) -> Decision:
    """What this start of the stage does with the run directory (see the module docstring)."""
    out = cfg.out_dir
    if resume and force:
        return Decision("refuse", "RESUME=1 continues the run and FORCE=1 replaces it: choose one")
    if resume:
        return Decision("resume")
    present = [name for name in RUN_FILES if (out / name).exists()]
    if not present:
        return Decision("train")
    if force:
        return Decision("replace")
    config, inputs = run_identity(cfg)
    fresh = mf.is_up_to_date(out, config, inputs)
    if fresh:
        record = mf.read_manifest(out)
        val = record.get("val_loss")
        return Decision("skip", f"pretrain: {out} is up to date (step {record.get('step')}/{record.get('max_steps')}"
                                + (f", val loss {val:.4f}" if isinstance(val, float) else "") + "; FORCE=1 to redo)")
    try:
        record = mf.read_manifest(out)
    except mf.ManifestError:
        record = None
    if not (out / mf.MANIFEST).exists():
        what = f"an unfinished run ({_checkpoint_step(out)})"
    elif record is None or fresh.damaged:
        what = f"a finished run whose files changed since it finished ({fresh.reason})"
    else:
        changes = _differences({**record["config"], **record["inputs"]}, {**config, **inputs})
        what = "a finished run of another recipe (" + "; ".join(changes[:4] or [fresh.reason]) + ")"
    resume_hint = "RESUME=1 (--resume) to continue it, " if (out / CHECKPOINT_NAME).is_file() else ""
    return Decision("refuse", f"{out} holds {what}: run again with {resume_hint}FORCE=1 (--force) to start over, "
                              f"replacing it, or train into another directory: SET=\"train.out_dir={out}-2\"")


class Replacement:
    """FORCE=1: the previous run moves to `<dir>.previous` and stays there until `commit()`."""

    def __init__(self, out_dir: Path):
        self.out_dir, self.previous = out_dir, previous_dir(out_dir)
        self.committed = False
        os.replace(out_dir, self.previous)  # one atomic rename: all of the old run, or none of it
        try:
            out_dir.mkdir(parents=True)
        except BaseException:
            os.replace(self.previous, out_dir)
            raise

    def commit(self) -> None:
        """The new run has its first checkpoint: the replaced run can go."""
        if not self.committed:
            self.committed = True
            shutil.rmtree(self.previous, ignore_errors=True)

    def abandon(self) -> None:
        """The new run failed before its first checkpoint: put the replaced run back."""
        if not self.committed:
            recover_replaced_run(self.out_dir)


def write_run_manifest(cfg: PretrainConfig, *, step: int, max_steps: int, val_loss: float | None) -> Path:
    """Record a finished run: written last, so its presence means the run reached max_steps."""
    config, inputs = run_identity(cfg)
    outputs = [mf.output_entry(cfg.out_dir / name, cfg.out_dir) for name in RUN_FILES
               if name != mf.MANIFEST and (cfg.out_dir / name).is_file()]
    return mf.write_manifest(cfg.out_dir, {"stage": "pretrain", "recipe": cfg.recipe_name, "config": config,
                                           "inputs": inputs, "step": step, "max_steps": max_steps,
                                           "val_loss": val_loss, "outputs": outputs})
