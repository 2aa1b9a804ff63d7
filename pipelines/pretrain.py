"""Stage: pretrain a GPT on the token shards of a recipe.

    python -m pipelines.pretrain --config configs/demo.toml [--resume | --force] [--set train.max_steps=100]
    torchrun --standalone --nproc_per_node=8 -m pipelines.pretrain --config configs/fineweb-edu-10B.toml

Reads only artifacts/<recipe>/shards/ (through the shard reader) and, to print samples, the tokenizer
file that the shard manifest names. Writes artifacts/<recipe>/pretrain/: ckpt.pt, metrics.jsonl, loss.png,
summary.json, and manifest.json when the run is finished. `make pretrain` picks torchrun with one process
per GPU when CUDA GPUs are present.

A rerun never destroys a run (train/run_dir.py): a finished run of the same recipe is "up to date"; any
other run already in the directory is refused unless --resume (continue it) or --force (start over; the
old run is kept until the new run's first checkpoint) says what to do with it.

Read first: train/trainer.py `Trainer.train_step` (one optimizer step) and `Trainer.run` (the loop). This
module is bookkeeping around them: the run-directory policy, the lock, the finished-run record.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from pipelines.sample import at_least
from pipelines.stage_cli import ENVIRONMENT_ERRNOS, add_common_flags, command_parser, run_reported


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m pipelines.pretrain", __doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", default="configs/demo.toml", help="recipe TOML (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in the output directory")
    parser.add_argument("--force", action="store_true",
                        help="start over even though a run is there (it is replaced after the first checkpoint)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, e.g. --set train.max_steps=50 (repeatable)")
    parser.add_argument("--stop-at-step", type=at_least(1), default=None,
                        help="checkpoint and exit after this step, as if interrupted (resume with --resume)")
    add_common_flags(parser)
    return parser


def run_stage(cfg, *, resume: bool = False, force: bool = False, stop_at_step: int | None = None) -> None:
    """The stage around the trainer: one run per directory, the rerun policy, the finished-run record.

    Rank 0 alone holds the stage lock and reads or changes the run directory; the other ranks of a
    torchrun job get its decision by broadcast (on several nodes only rank 0's disk may hold the run).
    """
    from contract.stage_lock import stage_lock
    from train import distributed, run_dir

    env = distributed.setup(cfg.train.device)  # a missing GPU is one line, before anything is touched
    lock = stage_lock(cfg.out_dir, stage="pretrain") if env.is_main else contextlib.nullcontext()
    try:
        with lock:
            decision = None
            if env.is_main:  # bookkeeping: leftovers, a replaced run to restore, the rerun decision
                for path in run_dir.remove_leftovers(cfg.out_dir):
                    print(f"pretrain: removed {path}, left by an interrupted write")
                note = run_dir.recover_replaced_run(cfg.out_dir)
                if note:
                    print(f"pretrain: {note}")
                decision = run_dir.decide(cfg, resume=resume, force=force)
            decision = distributed.broadcast_object(decision, env)
            if decision.action == "refuse":
                if not env.is_main:
                    raise SystemExit(2)  # rank 0 says why, once
                raise run_dir.RunExistsError(decision.message)
            if decision.action == "skip":
                if env.is_main:
                    print(decision.message)
                return
            train_run(cfg, decision, env.is_main, stop_at_step)
    finally:
        distributed.teardown(env)


def train_run(cfg, decision, is_main: bool, stop_at_step: int | None) -> None:
    """Train as decided ("train", "resume" or "replace"), and record the run once it is finished."""
    from contract.manifest import remove_manifest
    from train import run_dir
    from train.trainer import Trainer

    # Every check (shards' sha256 and ids, checkpoint, config, credentials) runs while the Trainer is
    # built, and building it writes nothing: a failure there leaves the run directory as it was.
    trainer = Trainer(cfg, resume=decision.action == "resume", stop_at_step=stop_at_step)
    replacement = None
    try:
        if is_main and decision.action == "replace":
            replacement = run_dir.Replacement(cfg.out_dir)
            trainer.on_checkpoint = lambda step: replacement.commit()
            print(f"pretrain: starting over (FORCE=1); the previous run is kept in {replacement.previous} "
                  "until this run's first checkpoint")
        elif is_main:
            remove_manifest(cfg.out_dir)  # about to train on: the run is no longer a finished one
        result = trainer.run()
    except BaseException:
        trainer.close()  # stops wandb before its directory goes
        if replacement is not None:
            replacement.abandon()  # died before the first checkpoint: the previous run goes back in place
        raise
    trainer.close()
    if is_main and result.steps_done >= trainer.plan.max_steps:
        run_dir.write_run_manifest(cfg, step=result.steps_done, max_steps=trainer.plan.max_steps,
                                   val_loss=result.val_loss)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        # Imports here: `--help` stays instant, and torch loads only when training.
        from contract.recipe import load_recipe, parse_overrides
        from train.config import pretrain_config_from_recipe

        cfg = pretrain_config_from_recipe(load_recipe(args.config, parse_overrides(args.set)))
        try:
            run_stage(cfg, resume=args.resume, force=args.force, stop_at_step=args.stop_at_step)
        except OSError as exc:
            if exc.filename is None and exc.errno in ENVIRONMENT_ERRNOS:
                exc.filename = str(cfg.out_dir)  # a failed write() names no file: say which directory it was filling
            raise

    from train.trainer import PRETRAIN_ERRORS  # CheckpointError, ShardFormatError, RecipeError are ValueErrors

    return run_reported(body, PRETRAIN_ERRORS, debug=args.debug,
                        interrupt_hint="the last checkpoint is kept; continue with RESUME=1 (--resume)")


if __name__ == "__main__":
    sys.exit(main())
