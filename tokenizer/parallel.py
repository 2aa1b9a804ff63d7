"""encode_batch: many texts encoded by several processes at once, results in input order.

Python threads cannot run BPE in parallel (the GIL), so we use processes. What makes it pay off:
  - fork (where available) hands every child the tokenizer *and its warm caches* for free, and
    the texts too, so a job is just (start, stop) indices; with spawn the tokenizer is pickled
    once per child (definition only, see Tokenizer.__reduce__) and the texts travel in the jobs;
  - work goes out in a few large jobs (contiguous ranges of about equal character count, several
    per child for load balancing), not one message per text;
  - ids come back as one pickled list of lists per job (pickle writes a small int in 2-3 bytes
    and reads it back faster than array.tolist() plus slicing would);
  - the calling process only collects. Bringing a child's ids back is not free -- the parent
    must create a Python int for every token, about a tenth of what encoding them costs -- and
    it overlaps with the children's work only if the parent is *waiting* for results. A parent
    that also encoded a share would hold the GIL while its result-reader thread needs it to
    drain the pipes, so the children would stall on full pipes (measured: ~0.1 s per job);
  - the cyclic garbage collector is paused meanwhile: the millions of new lists and ints would
    otherwise trigger it over and over (it rescans every container, caches included), although
    lists of ints can never form a cycle.
Small inputs are encoded in-process: starting children costs more than it saves.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import Tokenizer

# Below this many characters in total a batch is encoded in the calling process.
MIN_PARALLEL_CHARS = 1_000_000
# Jobs per process: more balances uneven texts better, fewer means less IPC.
CHUNKS_PER_WORKER = 4

_worker_tokenizer: Tokenizer | None = None
_worker_texts: list[str] | None = None  # set only while a forked pool runs


def _init_worker(tok: Tokenizer | None) -> None:
    global _worker_tokenizer
    if tok is not None:  # spawn: the tokenizer arrives pickled; fork: it is inherited
        _worker_tokenizer = tok


def _encode_chunk(args: tuple[list[str] | tuple[int, int], object, object]) -> list[list[int]]:
    texts, allowed, disallowed = args
    if isinstance(texts, tuple):  # fork: (start, stop) into the inherited list
        texts = _worker_texts[texts[0] : texts[1]]
    encode = _worker_tokenizer.encode
    return [encode(text, allowed_special=allowed, disallowed_special=disallowed) for text in texts]


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

    # Several contiguous jobs per worker: a worker that finishes early takes the next one.
    ranges = split_balanced(texts, n_workers * CHUNKS_PER_WORKER)

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    use_fork = ctx.get_start_method() == "fork"
    if use_fork:
        _worker_tokenizer, _worker_texts = tok, texts  # inherited by the forked children
        jobs = [(r, allowed_special, disallowed_special) for r in ranges]
    else:
        jobs = [(texts[a:b], allowed_special, disallowed_special) for a, b in ranges]

    out: list[list[int]] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with ctx.Pool(n_workers, initializer=_init_worker, initargs=(None if use_fork else tok,)) as pool:
            # imap returns the jobs' results in job order, i.e. in input order.
            for chunk in pool.imap(_encode_chunk, jobs, chunksize=1):
                out.extend(chunk)
    finally:
        _worker_tokenizer = _worker_texts = None
        if gc_was_enabled:
            gc.enable()
    return out

