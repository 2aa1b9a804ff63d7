"""Stage: pretrain a GPT on the token shards of a recipe.

    python -m pipelines.pretrain --config configs/demo.toml [--resume] [--set train.max_steps=100]
    torchrun --standalone --nproc_per_node=8 -m pipelines.pretrain --config configs/fineweb-edu-10B.toml

Reads only artifacts/<recipe>/shards/ (through the shard reader) and, to print samples, the tokenizer
file that the shard manifest names. Writes artifacts/<recipe>/pretrain/: ckpt.pt, metrics.jsonl, loss.png,
summary.json. `make pretrain` picks torchrun with one process per GPU when CUDA GPUs are present.
"""

from __future__ import annotations

import argparse
import sys

from contract.recipe import RecipeError, load_recipe, parse_overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.toml", help="recipe TOML (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in the output directory")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, e.g. --set train.max_steps=50 (repeatable)")
    parser.add_argument("--stop-at-step", type=int, default=None,
                        help="checkpoint and exit after this step, as if interrupted (resume with --resume)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imports after argument parsing: `--help` stays instant, and torch loads only when training.
    from contract.shard_format import ShardFormatError
    from train.checkpoint import CheckpointError
    from train.config import pretrain_config_from_recipe
    from train.loader import ContextTooLongError
    from train.trainer import pretrain

    try:
        recipe = load_recipe(args.config, parse_overrides(args.set))
        cfg = pretrain_config_from_recipe(recipe)
        pretrain(cfg, resume=args.resume, stop_at_step=args.stop_at_step)
    except (RecipeError, ShardFormatError, CheckpointError, ContextTooLongError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
