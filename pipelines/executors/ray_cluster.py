"""The thin layer between the data stages and Ray: connect to the cluster, run tasks a window at a time.

Everything a stage sends to a task is a small plan (file paths, row-group numbers, token offsets) and
everything a task sends back is a small summary (counts, a shard's manifest entry): the documents and the
tokens go through the shared file system, never through Ray's object store. So a task's memory is bounded
by the slice of work it is given, the driver's by the plan, and a driver killed with kill -9 loses only
the tasks in flight: what they had finished is on disk under its final name, and a rerun starts from it.

Faults. A task whose worker process dies (killed, out of memory, its node lost) is run again by Ray, up
to MAX_RETRIES times; that is safe because every task writes its outputs under temporary names and
renames them, and computes them from its inputs alone, so a second attempt writes the same bytes. An
exception raised *by the task's code* is not retried (it would fail the same way): it reaches the driver,
which raises the task's own exception, so a bad input is the same one `error:` line as with the local
executor.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pipelines.executors import ExecutorError

# The driver's settings for reaching the hub, passed to every task: a task runs in a worker process of
# whichever node, whose environment is the one `ray start` had there. Paths (HF_HOME...) are not passed:
# they name the driver node's disk.
FORWARDED_ENV = ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "HTTP_PROXY",
                 "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")
MAX_RETRIES = 3          # attempts after the first, when a worker dies (Ray's default, stated here on purpose)
TASKS_PER_CPU = 2        # in flight per CPU: one running, one ready to start when it ends
T = TypeVar("T")


def import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError("EXECUTOR=ray needs Ray: `pip install -e .[ray]` (make setup installs it)") from None
    return ray


@functools.cache
def remote(function: Callable) -> Any:
    """`function` as a Ray task: one CPU, retried when its worker dies, not when it raises. SPREAD: tasks
    go round the nodes rather than filling the driver's node first, so a cluster shares the reading and
    writing on the shared file system as well as the CPU work. Made once per function (each new remote
    function is shipped to the cluster again)."""
    ray = import_ray()
    return ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False,
                      scheduling_strategy="SPREAD")(function)


@dataclass(frozen=True)
class Cluster:
    address: str
    nodes: int
    cpus: int

    @property
    def window(self) -> int:
        """How many tasks to keep submitted: enough to keep every CPU busy, few enough to bound the driver."""
        return max(2, TASKS_PER_CPU * self.cpus)

    def describe(self) -> str:
        return f"Ray cluster {self.address}: {self.nodes} node(s), {self.cpus} CPU(s)"


@contextmanager
def connected() -> Iterator[Cluster]:
    """Connect to the cluster (RAY_ADDRESS, else Ray's own rule) for the length of the block.

    A driver that was already connected (a benchmark or a test running several stages in one process)
    stays connected; one this block connected is disconnected at its end, which also ends every task
    it left running."""
    ray = import_ray()
    address = os.environ.get("RAY_ADDRESS") or None
    started_here = not ray.is_initialized()
    if started_here:
        _check_reachable(address)
        try:
            # logging_level: Ray's INFO lines ("Connecting to existing Ray cluster...") would drown the
            # stage's own; warnings from the cluster (a worker that died) still reach the terminal.
            env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
            ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False,
                     runtime_env={"env_vars": env} if env else None)
        except ConnectionError as exc:
            raise ExecutorError(f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({exc}); start one with "
                                "`ray start --head`, or run with EXECUTOR=local") from None
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = int(ray.cluster_resources().get("CPU", 0))
        yield Cluster(address or ray.get_runtime_context().gcs_address, len(nodes), cpus)
    finally:
        if started_here:
            ray.shutdown()


def preflight() -> None:
    """What can be known before a stage touches its directory: Ray is installed and the cluster answers."""
    import_ray()
    _check_reachable(os.environ.get("RAY_ADDRESS") or None)


def _check_reachable(address: str | None, timeout: float = 10.0) -> None:
    """Fail at once, in one line, when RAY_ADDRESS names a host:port nobody listens on: ray.init would
    keep retrying for minutes before it gave up."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return   # unset, "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ExecutorError(f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({exc.strerror or exc}); start "
                            "one with `ray start --head`, or run with EXECUTOR=local") from None


def result_of(ref: Any) -> Any:
    """ray.get, with the task's own exception when its code raised an expected one (a ValueError such as
    a bad input, an OSError such as a full disk), so the stage reports it as it would locally."""
    ray = import_ray()
    lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError, ray.exceptions.NodeDiedError,
            ray.exceptions.LocalRayletDiedError, ray.exceptions.ObjectLostError)
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (ValueError, OSError)):
            raise cause from None
        raise
    except lost as exc:   # not the task's fault, and retried already: say so in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExecutorError(f"a Ray task failed {MAX_RETRIES + 1} times ({type(exc).__name__}: {first}); what "
                            "finished is kept: run the same command again to resume") from None


def as_completed(items: Iterable[T], submit: Callable[[T], Any], window: int) -> Iterator[tuple[T, Any]]:
    """Submit `submit(item)` for every item, at most `window` at a time; yield (item, result) as each
    task finishes, in whatever order they finish. Submitting lazily keeps the driver's memory and the
    cluster's queue bounded however many items there are."""
    ray = import_ray()
    pending: dict[Any, T] = {}
    items = iter(items)
    end = object()
    exhausted = False
    while True:
        while not exhausted and len(pending) < window:
            item = next(items, end)
            if item is end:
                exhausted = True
            else:
                pending[submit(item)] = item
        if not pending:
            return
        ready, _ = ray.wait(list(pending), num_returns=1)
        item = pending.pop(ready[0])
        yield item, result_of(ready[0])
