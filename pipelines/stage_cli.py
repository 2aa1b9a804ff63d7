"""How every command of the project ends: success, one `error:` line, or a traceback for a bug.

A stage that fails for a reason the user can act on (a bad recipe, bad input data, a full disk, a
directory another run holds) prints exactly one line, `error: <what> (<cause>)`, and exits with
status 2; Ctrl-C exits with 130, the shell's convention for SIGINT. Artifacts stay intact in every
case because every file is written under a temporary name and renamed (tokenizer/atomic_write.py).
Anything else is a bug and keeps its traceback. `--debug` (or LLM_JOURNEY_DEBUG=1, which `make
DEBUG=1` sets) prints the traceback of expected failures too, for whoever wants to see where.

`stage_main` turns a data stage's `run(recipe, force=..., progress_bar=...)` into a command with
the same flags for every stage, so `make` can drive them uniformly; `run_reported` is the error
policy alone, for commands with flags of their own (pretrain, sample, evaluate, ...).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from collections.abc import Callable

from contract.manifest import ManifestError
from contract.recipe import Recipe, RecipeError, load_recipe, parse_overrides
from contract.stage_lock import StageBusyError

DEBUG_ENV = "LLM_JOURNEY_DEBUG"

# Failures any stage may meet that are not bugs: say them in one line.
COMMON_ERRORS: tuple[type[BaseException], ...] = (RecipeError, ManifestError, StageBusyError, FileNotFoundError)

# Environment failures (errno -> what to tell the user). Any other OSError is treated as a bug.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EMFILE: "too many open files",
    errno.ENOMEM: "out of memory",
}


def debug_requested(argv_flag: bool = False) -> bool:
    return argv_flag or os.environ.get(DEBUG_ENV, "") not in ("", "0", "false", "no")


def describe_os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{ENVIRONMENT_ERRNOS.get(exc.errno, exc.strerror or str(exc))}"


def run_reported(body: Callable[[], object], expected: tuple[type[BaseException], ...] = (),
                 debug: bool = False) -> int:
    """Run `body()`; map its failure to the project's exit convention (0, 2, 130, or re-raise a bug)."""
    debug = debug_requested(debug)
    try:
        body()
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except (*COMMON_ERRORS, *expected) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    return 0


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help=f"print the traceback of an expected failure too (or set {DEBUG_ENV}=1)")


def stage_main(run: Callable[..., object], description: str, stage_errors: tuple[type[BaseException], ...],
               argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", default="configs/demo.toml", help="recipe TOML (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, e.g. --set shards.workers=1 (repeatable)")
    parser.add_argument("--force", action="store_true", help="redo the stage even if up to date")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_flags(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        recipe: Recipe = load_recipe(args.config, parse_overrides(args.set))
        run(recipe, force=args.force, progress_bar=not args.no_progress)

    return run_reported(body, stage_errors, debug=args.debug)
