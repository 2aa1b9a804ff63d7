"""The command line every data stage shares: `python -m pipelines.<stage> --config ... --set ... --force`.

A stage is a `run(recipe, force=..., progress_bar=...)` function; this module turns it into a
command with the same flags for every stage, so `make` can drive them uniformly. Expected failures
(a bad recipe, bad input data) are printed as one clear line and exit with status 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from contract.recipe import Recipe, RecipeError, load_recipe, parse_overrides


def stage_main(run: Callable[..., object], description: str, stage_errors: tuple[type[BaseException], ...],
               argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default="configs/demo.toml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--force", action="store_true", help="redo the stage even if up to date")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        recipe: Recipe = load_recipe(args.config, parse_overrides(args.set))
        run(recipe, force=args.force, progress_bar=not args.no_progress)
    except (RecipeError, FileNotFoundError, *stage_errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
