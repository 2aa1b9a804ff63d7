"""One run per stage directory at a time.

Two `make shards` started together (say with different settings) would otherwise interleave their
writes in one directory: each "succeeds" and the manifest describes a mix, or one deletes a file
the other is about to rename. A stage therefore holds an exclusive lock on its directory while it
runs, and a second run is refused at once with a message naming the holder.

The lock is `fcntl.flock` on a small file *beside* the directory (`.<name>.lock`), not inside it:
the directory itself may be deleted and rebuilt by the stage, and a file inside would show up in
listings of the stage's outputs. flock locks belong to the open file, so the kernel releases them
when the process dies for any reason (kill -9 included): there is never a stale lock to clean up,
which is why the lock file itself is left in place (deleting it would race with a new locker).

Where the directory cannot be written (shards shared read-only on a cluster) an existing lock file
is opened read-only, which flock accepts: checking that such shards are up to date still works,
and whatever would write there fails with "permission denied" as it should.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; the lock is then advisory-only
    fcntl = None  # type: ignore[assignment]


class StageBusyError(RuntimeError):
    """Another process holds the stage directory."""


def lock_path_for(directory: Path) -> Path:
    directory = Path(directory)
    return directory.parent / f".{directory.name}.lock"


@contextmanager
def stage_lock(directory: Path | str, stage: str) -> Iterator[None]:
    """Hold `directory` exclusively for the duration of the block, or raise StageBusyError."""
    directory = Path(directory)
    path = lock_path_for(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    writable = True
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not path.is_file():
            raise
        fd, writable = os.open(path, os.O_RDONLY), False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                raise StageBusyError(
                    f"{directory}: another `{stage}` run (pid {holder}) is writing this directory; "
                    f"wait for it to finish or stop it, then run again") from None
        if writable:  # record who holds it, for the message above (informational only: the flock is the lock)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
