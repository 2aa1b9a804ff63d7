"""How every command of the project ends: success, one `error:` line, or a traceback for a bug.

A stage that fails for a reason the user can act on (a bad recipe, bad input data, a full disk, a
directory another run holds) prints exactly one line, `error: <what> (<cause>)`, and exits with
status 2; Ctrl-C exits with 130, the shell's convention for SIGINT. Artifacts stay intact in every
case because every file is written under a temporary name and renamed (tokenizer/atomic_write.py).
Anything else is a bug and keeps its traceback. `--debug` (or LLM_JOURNEY_DEBUG=1, which `make
DEBUG=1` sets) prints the traceback of expected failures too, for whoever wants to see where.

`stage_main` turns a data stage's `run(recipe, force=..., progress_bar=..., executor=...)` into a
command with the same flags for every stage, so `make` can drive them uniformly; `run_reported` is the
error policy alone, for commands with flags of their own (pretrain, sample, evaluate, ...). A data stage
runs holding its directory's lock (contract/stage_lock.py): a second run of the same stage is refused at
once instead of interleaving its files with the first's. `--executor` (or EXECUTOR) says where the work
runs, here or on a Ray cluster (pipelines/executors/); the files come out the same.

`command_parser` is argparse with the same convention: a bad flag value is one `error:` line and
status 2 (not argparse's usage block), and `prog` is what the user types, `python -m pipelines.x`.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from collections.abc import Callable

from contract.manifest import ManifestError, full_verification
from contract.recipe import Recipe, RecipeError, load_recipe, parse_overrides
from contract.stage_lock import StageBusyError, stage_lock
from pipelines.executors import EXECUTOR_ENV, EXECUTORS, ExecutorError, executor_from_env

DEBUG_ENV = "LLM_JOURNEY_DEBUG"

# Failures any stage may meet that are not bugs: say them in one line.
COMMON_ERRORS: tuple[type[BaseException], ...] = (RecipeError, ManifestError, StageBusyError, FileNotFoundError,
                                                  ExecutorError)

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


INTERRUPT_HINT = "finished files are kept; run the same command again to resume"


def run_reported(body: Callable[[], object], expected: tuple[type[BaseException], ...] = (),
                 debug: bool = False, interrupt_hint: str = INTERRUPT_HINT) -> int:
    """Run `body()`; map its failure to the project's exit convention (0, 2, 130, or re-raise a bug)."""
    debug = debug_requested(debug)
    try:
        body()
    except KeyboardInterrupt:
        print(f"interrupted: {interrupt_hint}", file=sys.stderr)
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


class _OneLineErrors(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints its usage block first; one line says the same
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An ArgumentParser whose errors follow the project's convention (one `error:` line, status 2)."""
    return _OneLineErrors(prog=prog, description=description)


def non_negative_int(text: str) -> int:
    """argparse type for counts: `--docs -1` is a usage error, not a traceback deep inside."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def stage_main(run: Callable[..., object], description: str, stage_errors: tuple[type[BaseException], ...],
               argv: list[str] | None = None, *, stage: str, stage_dir: str, prog: str) -> int:
    """The command of one data stage: `stage` names it in messages, `stage_dir` is its directory under
    artifacts/<recipe>/ (locked while it runs), `prog` the command a user types."""
    parser = command_parser(prog, description)
    parser.add_argument("--config", default="configs/demo.toml", help="recipe TOML (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override recipe values, e.g. --set shards.workers=1 (repeatable; one --set may "
                             "hold several, separated by spaces outside quotes and brackets)")
    parser.add_argument("--force", action="store_true", help="redo the stage even if up to date")
    parser.add_argument("--verify", action="store_true",
                        help="check the sha256 of every output before calling the stage up to date "
                             "(by default big files are hashed only when their stat changed)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--executor", choices=EXECUTORS, default=None, metavar="|".join(EXECUTORS),
                        help=f"where the work runs: worker processes here (local) or tasks on the Ray cluster at "
                             f"RAY_ADDRESS (ray); the output is the same (default: ${EXECUTOR_ENV}, else local)")
    add_common_flags(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        recipe: Recipe = load_recipe(args.config, parse_overrides(args.set))
        executor = args.executor or executor_from_env()
        directory = recipe.stage_dir(stage_dir)
        with stage_lock(directory, stage=stage), full_verification(args.verify):
            try:
                run(recipe, force=args.force, progress_bar=not args.no_progress, executor=executor)
            except OSError as exc:
                if exc.filename is None and exc.errno in ENVIRONMENT_ERRNOS:
                    # a failed write() names no file: say which directory it was filling
                    exc.filename = str(directory)
                raise

    return run_reported(body, stage_errors, debug=args.debug)
