"""Write a file whole or not at all: write it under a temporary name beside it, then rename.

`os.replace` is atomic within a filesystem, so a reader (or a rerun after a crash) sees the old file or
the new one, never half of one. Every file the project writes goes through this module: tokenizer files,
manifests, shards, checkpoints, exported models, plots, reports.

The temporary name is always `<name>.tmp` in the same directory, so a stage that restarts after kill -9
knows exactly which leftovers to delete (`*.tmp`), and a temporary file is never mistaken for a finished
one. Every published file gets the usual mode of a new file, 0666 minus the umask (0644 for most users),
whatever the writer chose: `tempfile.mkstemp` and some libraries (safetensors) create 0600 files, but a
tokenizer, shard or model shared on a cluster must be readable by the other users who train from it.

`durable=True` also fsyncs the file before the rename: a rename alone survives kill -9 (the page cache
outlives the process), an fsync makes it survive a power cut as well. Files that are re-checked before
they are trusted (shards, progress records: sizes and sha256) skip it for speed.

This lives at the ground floor, inside the tokenizer package, because the tokenizer writes files too and
imports nothing of the rest of the project; every other package uses the same helper.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def temporary_path(path: str | os.PathLike) -> Path:
    """Where `path` is written before it is published: `<name>.tmp` in the same directory."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask can only be read by
    setting it, which would briefly give files made by other threads the wrong mode)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike, path: str | os.PathLike, durable: bool = True) -> None:
    """Give a finished temporary file its final name and the usual mode (fsync first when `durable`)."""
    os.chmod(tmp, 0o666 & ~_umask())
    if durable:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """A temporary path for writers that want a file name (ParquetWriter, savefig, safetensors, torch.save).

        with atomic_path(out / "loss.png") as tmp:
            fig.savefig(tmp, format="png")

    The file becomes `path` when the block ends; on an exception it is deleted and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        publish(tmp, path, durable)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", durable: bool = True,
                encoding: str | None = None) -> Iterator[IO[Any]]:
    """`open(path, mode)` whose result appears at `path` only once the block has finished without error."""
    with atomic_path(path, durable=False) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())


def write_bytes_atomic(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    with atomic_open(path, "wb", durable) as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, durable: bool = True) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), durable)


def write_json_atomic(path: str | os.PathLike, obj: Any, durable: bool = True) -> Path:
    """JSON as the project writes it for people to read: indented, sorted keys, UTF-8, final newline.
    Sorted keys and no timestamps make a deterministic stage's files identical byte for byte on a rerun."""
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n", durable)
