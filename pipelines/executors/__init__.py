"""Where a data stage does its work: in the local machine's processes, or as tasks on a Ray cluster.

    EXECUTOR=local   (the default) worker processes of the local machine, as the stages always did
    EXECUTOR=ray     Ray tasks on the cluster RAY_ADDRESS names (`ray start --head` prints it); with no
                     RAY_ADDRESS, Ray's own rule: a cluster started on the local machine, else a private one

The executor is *how* a stage runs, never *what* it makes: `make data`, `make tokenizer` and `make shards`
write the same bytes with either, so the choice is a command-line option (`--executor`, or the EXECUTOR
variable of the environment and of make), not a recipe key. Nothing records it in a manifest, so a
directory made by one executor is up to date for the other. `make shards` keeps one journal for both, so
either executor resumes a run the other left; an interrupted `make data` is resumed by the executor that
started it (the other one starts the stage over, to the same bytes).

Every node of the cluster must see the artifacts directory at the same path (a shared file system) and
run the same installation of the project: tasks read their inputs and write their outputs there
themselves, and only small plans and counts travel through Ray.

The Ray side lives in this package (`ray_cluster.py`: connect, submit, collect; `ray_shards.py`,
`ray_tokenizer.py`, `ray_data.py`: one module per stage), imported only when EXECUTOR=ray: Ray is an
optional extra (`pip install -e .[ray]`) and the local executor never loads it.
"""

from __future__ import annotations

import os

LOCAL = "local"
RAY = "ray"
EXECUTORS = (LOCAL, RAY)
EXECUTOR_ENV = "EXECUTOR"


class ExecutorError(ValueError):
    """An executor that cannot be used as asked: an unknown name, Ray missing, a cluster out of reach."""


def executor_from_env() -> str:
    """The executor the environment asks for (EXECUTOR), `local` when it says nothing."""
    name = os.environ.get(EXECUTOR_ENV, "").strip().lower() or LOCAL
    if name not in EXECUTORS:
        raise ExecutorError(f"{EXECUTOR_ENV}={name!r}: the executor must be one of {', '.join(EXECUTORS)}")
    return name
