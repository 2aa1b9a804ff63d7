"""encode_batch: many texts encoded by worker processes, results in input order.

Python threads cannot run BPE in parallel (the GIL), so we use processes. Three things keep the
overhead small:
  - fork (where available) hands every worker the tokenizer *and its warm caches* for free; with
    spawn the tokenizer is pickled once per worker (definition only, see Tokenizer.__reduce__);
  - work goes out in a few large chunks (contiguous ranges of about equal character count, a few
    per worker for load balancing), not one message per text; with fork the texts themselves are
    inherited too, so a chunk is sent as just (start, stop) indices;
  - ids come back as one packed array of uint32 per chunk plus document lengths, which pickles
    as a single bytes blob instead of one Python int object per token.
Small inputs are encoded in-process: starting workers costs more than it saves.
"""

from __future__ import annotations

import multiprocessing
import os
from array import array
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import Tokenizer

# Below this many characters in total a batch is encoded in the calling process.
MIN_PARALLEL_CHARS = 1_000_000
# Chunks per worker: more balances uneven texts better, fewer means less IPC.
CHUNKS_PER_WORKER = 4

_worker_tokenizer: Tokenizer | None = None
_worker_texts: list[str] | None = None  # set only while a forked pool runs


def _init_worker(tok: Tokenizer | None) -> None:
    global _worker_tokenizer
    if tok is not None:  # spawn: the tokenizer arrives pickled; fork: it is inherited
        _worker_tokenizer = tok


def _encode_chunk(args: tuple[list[str] | tuple[int, int], object, object]) -> tuple[bytes, bytes]:
    texts, allowed, disallowed = args
    if isinstance(texts, tuple):  # fork: (start, stop) into the inherited list
        texts = _worker_texts[texts[0] : texts[1]]
    encode = _worker_tokenizer.encode
    flat = array("I")
    lengths = array("Q")
    for text in texts:
        ids = encode(text, allowed_special=allowed, disallowed_special=disallowed)
        flat.extend(ids)
        lengths.append(len(ids))
    return flat.tobytes(), lengths.tobytes()


def split_balanced(texts: list[str], n_chunks: int) -> list[tuple[int, int]]:
    """Contiguous (start, stop) ranges of texts with roughly equal total characters, in order."""
    total = sum(map(len, texts))
    target = max(1, total // max(1, n_chunks))
    ranges, start, size = [], 0, 0
    for i, text in enumerate(texts):
        size += len(text)
        if size >= target:
            ranges.append((start, i + 1))
            start, size = i + 1, 0
    if start < len(texts):
        ranges.append((start, len(texts)))
    return ranges


def encode_batch(
    tok: Tokenizer,
    texts: Iterable[str],
    workers: int | None = None,
    *,
    allowed_special: str | Collection[str] = frozenset(),
    disallowed_special: str | Collection[str] = "all",
    min_parallel_chars: int = MIN_PARALLEL_CHARS,
) -> list[list[int]]:
    global _worker_tokenizer, _worker_texts
    if isinstance(texts, str):
        raise TypeError("encode_batch() argument 'texts' must be a list of str, not a single str")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"encode_batch(): texts[{i}] must be str, not {type(text).__name__}")
    if workers is not None and (type(workers) is not int or workers < 1):
        raise ValueError(f"encode_batch(): workers must be a positive int or None, not {workers!r}")
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    n_workers = min(n_workers, len(texts))
    if n_workers <= 1 or sum(map(len, texts)) < min_parallel_chars:
        return [tok.encode(t, allowed_special=allowed_special, disallowed_special=disallowed_special)
                for t in texts]

    ranges = split_balanced(texts, n_workers * CHUNKS_PER_WORKER)
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    use_fork = ctx.get_start_method() == "fork"
    if use_fork:
        _worker_tokenizer, _worker_texts = tok, texts  # inherited by the forked workers
        jobs = [(r, allowed_special, disallowed_special) for r in ranges]
    else:
        jobs = [(texts[a:b], allowed_special, disallowed_special) for a, b in ranges]
    out: list[list[int]] = []
    try:
        with ctx.Pool(n_workers, initializer=_init_worker, initargs=(None if use_fork else tok,)) as pool:
            # imap (ordered): unpack chunk i while the workers are still encoding later chunks.
            for flat_bytes, length_bytes in pool.imap(_encode_chunk, jobs, chunksize=1):
                flat = array("I")
                flat.frombytes(flat_bytes)
                lengths = array("Q")
                lengths.frombytes(length_bytes)
                ids = flat.tolist()
                pos = 0
                for n in lengths:
                    out.append(ids[pos : pos + n])
                    pos += n
    finally:
        _worker_tokenizer = _worker_texts = None
    return out
