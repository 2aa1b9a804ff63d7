"""encode_batch: many texts encoded by several processes at once, results in input order.

Reference: `[tok.encode(t) for t in texts]`, which is what the tests compare it with.

Python threads cannot run BPE in parallel (the GIL), so the work goes to processes. The hard part
is not the encoding but getting millions of token ids back: the caller must end up with a Python
int object for every token, and only the caller can make those. So the work is split where the
packed ids are (bpe.py): encoding a text is "packed ids of the text" (regex, cache lookups, one
join: most of the work) then "unpack into a list of ints" (one C loop, ~15% of it on warm caches).
A child does only the first part and the caller does the second part for everyone:

  - the calling process is one of the `workers`: it encodes texts itself and unpacks what the
    children packed, so with 2 workers it encodes somewhat less than half the texts;
  - fork hands the child the tokenizer *and its warm caches* for free, and the texts too: no
    pickling, and no Pool (whose start-up and result-handler thread cost tens of milliseconds);
  - the texts are cut into jobs (contiguous ranges of texts) that every process claims in order
    from a shared counter, so whoever is faster -- the caller also unpacks, the child pays
    copy-on-write faults -- simply takes more jobs. Job sizes shrink as the batch goes ("guided"
    scheduling, as in OpenMP): each job is a fixed share of what is left, so the first jobs are
    big (little bookkeeping) and the last ones small, and the process that finishes first waits at
    most one small job for the other;
  - a child copies each text's packed ids (uint16; uint32 for vocabularies over 65536) straight
    into one shared anonymous mmap, at an offset fixed in advance (a text of n characters has at
    most 4n ids: every id covers at least one UTF-8 byte), plus the per-text counts; then it
    sends the job's number down a pipe. A child never makes an int for an id, and only a few
    bytes per job go through the pipe, so no child waits on a full pipe and no reader thread
    competes for the GIL;
  - while it encodes its own jobs (every DRAIN_EVERY_CHARS characters, and between jobs) the
    caller turns the child's finished jobs into lists (memoryview(...).cast(...).tolist() per
    text: one C loop, the cheapest way to make the ints), so little is left to unpack once the
    last job is done;
  - the cyclic garbage collector is paused meanwhile: the millions of new lists and ints would
    otherwise trigger it over and over (it rescans every container, caches included), although
    lists of ints can never form a cycle.
With cold caches each process learns the words it meets by itself, so common words are learned
once per process. The processes do not share what they learn: every process meets the common
words in its first moments anyway, and most words learned later are rare ones the others never
need, so copying entries between processes would cost more than it saves.
If a text fails (say a disallowed special token), no new jobs are claimed and the error of the
earliest failing job is raised, as encoding in order would. Without fork (macOS, Windows) a
spawn Pool is used, correctness only: the tokenizer is pickled once per child (its definition,
see Tokenizer.__reduce__), the texts travel in the jobs and the packed ids come back as bytes.
Small inputs are encoded in-process: starting a child costs more than it saves.
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import os
import pickle
import select
import signal
import struct
from array import array
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import Tokenizer

# Below this many characters in total a batch is encoded in the calling process. One process
# encodes a megabyte of new text in ~0.1 s through the chunk table, and a child costs a fork (which
# copies the caller's page tables), copy-on-write faults on both sides and the caller's unpacking:
# measured on 2 cores, 2 workers lose on 1 MB and win from 2 MB of new text (about 4 MB of known text).
MIN_PARALLEL_CHARS = 2_000_000
# Guided job sizes: each job is 1/(GUIDED_SHARE * workers) of the characters not yet in a job,
# but at least 1/SMALLEST_JOB_SHARE of all of them (with 2 workers: 1/4, 3/16, ... down to 1/64).
GUIDED_SHARE = 2
SMALLEST_JOB_SHARE = 64
# While encoding its own job, the caller unpacks the children's finished jobs this often (a
# select() call when nothing is ready: ~1 us every ~50 ms of encoding). The texts in between are
# encoded in one call, so this is also the caller's batch for the chunk table (chunk_table.py):
# as large as the table's own batches (core.TABLE_BATCH_CHARS), since smaller ones cost ~20% more.
DRAIN_EVERY_CHARS = 1024 * 1024
# A UTF-8 character is at most 4 bytes and every id covers at least one byte.
MAX_IDS_PER_CHAR = 4
# Characters per forked round: bounds the shared buffer at 16 bytes a character (1 GiB).
MAX_SEGMENT_CHARS = 64 * 2**20
_MESSAGE = struct.Struct("=iI")  # (job index, 0 or length of a pickled exception that follows)


def split_guided(texts: list[str], n_workers: int) -> list[tuple[int, int]]:
    """Contiguous (start, stop) ranges of texts covering them in order, sized for guided scheduling:
    a job takes 1/(GUIDED_SHARE * n_workers) of the characters left, never less than the smallest."""
    remaining = sum(map(len, texts))
    smallest = max(1, remaining // SMALLEST_JOB_SHARE)
    target = max(smallest, remaining // (GUIDED_SHARE * n_workers))
    ranges, start, size = [], 0, 0
    for i, text in enumerate(texts):
        size += len(text)
        if size >= target:
            ranges.append((start, i + 1))
            remaining -= size
            start, size = i + 1, 0
            target = max(smallest, remaining // (GUIDED_SHARE * n_workers))
    if start < len(texts):
        ranges.append((start, len(texts)))
    return ranges


def _segments(texts: list[str], max_chars: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of at most max_chars characters (or one longer text)."""
    ranges, start, size = [], 0, 0
    for i, text in enumerate(texts):
        if size and size + len(text) > max_chars:
            ranges.append((start, i))
            start, size = i, 0
        size += len(text)
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
        # All the texts in one call: with GPT-2's regex they go through the chunk table (chunk_table.py).
        packed = tok._encode_packed_many(texts, allowed_special, disallowed_special, "encode_batch")
        return [memoryview(ids).cast(tok._typecode).tolist() for ids in packed]

    # The shared buffer is sized for the worst case (MAX_IDS_PER_CHAR ids of 4 bytes per character);
    # untouched pages cost nothing, but the mapping itself must stay reasonable, so a huge batch is
    # encoded as consecutive segments of at most MAX_SEGMENT_CHARS characters.
    if sum(map(len, texts)) > MAX_SEGMENT_CHARS and len(texts) > 1:
        out: list[list[int]] = []
        for a, b in _segments(texts, MAX_SEGMENT_CHARS):
            out.extend(encode_batch(tok, texts[a:b], n_workers, allowed_special=allowed_special,
                                    disallowed_special=disallowed_special, min_parallel_chars=min_parallel_chars))
        return out

    ranges = split_guided(texts, n_workers)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if "fork" in multiprocessing.get_all_start_methods():
            return _ForkedBatch(tok, texts, ranges, n_workers, allowed_special, disallowed_special).run()
        return _encode_with_spawn(tok, texts, ranges, n_workers, allowed_special, disallowed_special)
    finally:
        if gc_was_enabled:
            gc.enable()


class _ForkedBatch:
    """One encode_batch call: the caller and n_workers - 1 forked children share the jobs."""

    def __init__(self, tok, texts, ranges, n_workers, allowed_special, disallowed_special):
        self.tok, self.texts, self.ranges, self.n_children = tok, texts, ranges, n_workers - 1
        self.options = {"allowed_special": allowed_special, "disallowed_special": disallowed_special}
        self.fmt = tok._typecode
        itemsize = array(self.fmt).itemsize
        # Where each job's ids go: offsets (in ids) bounded by MAX_IDS_PER_CHAR per character.
        self.id_offsets, total = [], 0
        for a, b in ranges:
            self.id_offsets.append(total)
            total += MAX_IDS_PER_CHAR * sum(map(len, texts[a:b]))
        # Layout: [next job: int32][count per text: uint32 * len(texts)][ids]. Anonymous shared
        # memory: pages nobody writes are never allocated, so the generous bound costs nothing.
        self.ids_start = 4 + 4 * len(texts)
        self.shm = mmap.mmap(-1, max(1, self.ids_start + itemsize * total))
        self.claim_lock = multiprocessing.get_context("fork").Lock()
        self.out: list[list[int] | None] = [None] * len(texts)
        self.jobs_done = 0

    def _views(self):
        view = memoryview(self.shm)
        return (view[:4].cast("i"), view[4 : self.ids_start].cast("I"), view[self.ids_start :].cast(self.fmt))

    def _claim(self, next_job) -> int:
        with self.claim_lock:
            job = next_job[0]
            if job < len(self.ranges):
                next_job[0] = job + 1
            return job

    def _encode_own_job(self, job: int, collect_finished) -> None:
        """The caller encodes a job into self.out, stopping every DRAIN_EVERY_CHARS characters to
        unpack what the children have finished: so unpacking keeps pace with the children however
        big this job is, and little is left to unpack once the last job is done."""
        a, b = self.ranges[job]
        encode_many, texts, out, fmt = self.tok._encode_packed_many, self.texts, self.out, self.fmt
        allowed, disallowed = self.options["allowed_special"], self.options["disallowed_special"]
        start, since_drain = a, 0
        for i in range(a, b):
            since_drain += len(texts[i])
            if since_drain >= DRAIN_EVERY_CHARS or i == b - 1:  # the texts since the last drain, in one call
                packed = encode_many(texts[start : i + 1], allowed, disallowed, "encode_batch")
                for j, ids in enumerate(packed, start):
                    out[j] = memoryview(ids).cast(fmt).tolist()
                collect_finished()
                start, since_drain = i + 1, 0

    def _packed_job(self, job: int, counts, ids_bytes, itemsize: int) -> None:
        """A child encodes a job's texts straight into shared memory: packed ids and counts."""
        encode_many, texts = self.tok._encode_packed_many, self.texts  # a job's texts in one call
        allowed, disallowed = self.options["allowed_special"], self.options["disallowed_special"]
        a, b = self.ranges[job]
        position = self.id_offsets[job] * itemsize  # in bytes
        for i, packed in zip(range(a, b), encode_many(texts[a:b], allowed, disallowed, "encode_batch")):
            n = len(packed)
            counts[i] = n // itemsize
            ids_bytes[position : position + n] = packed
            position += n

    def _child(self, write_fd: int) -> None:
        """Claim, encode and publish jobs until none is left. Never returns (os._exit)."""
        code = 1
        try:
            next_job, counts, ids = self._views()
            ids_bytes = ids.cast("B")
            while (job := self._claim(next_job)) < len(self.ranges):
                try:
                    self._packed_job(job, counts, ids_bytes, ids.itemsize)
                except Exception as exc:  # noqa: BLE001 - sent to the caller, which raises it
                    with self.claim_lock:
                        next_job[0] = len(self.ranges)  # stop everyone claiming
                    try:
                        payload = pickle.dumps(exc)
                        pickle.loads(payload)  # some exceptions pickle but cannot be rebuilt
                    except Exception:  # noqa: BLE001 - such an error is still reported, as text
                        payload = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
                    os.write(write_fd, _MESSAGE.pack(job, len(payload)))
                    _write_all(write_fd, payload)
                    break
                os.write(write_fd, _MESSAGE.pack(job, 0))  # the pipe also orders the memory writes
            code = 0
        finally:
            os._exit(code)

    def _collect(self, job: int, counts, ids) -> None:
        """Turn a child's finished job into lists of ints, in place in self.out."""
        out = self.out
        position = self.id_offsets[job]
        a, b = self.ranges[job]
        for i in range(a, b):
            n = counts[i]
            out[i] = ids[position : position + n].tolist()
            position += n
        self.jobs_done += 1

    def run(self) -> list[list[int]]:
        pids, read_fds = [], []
        try:
            for _ in range(self.n_children):
                read_fd, write_fd = os.pipe()
                pid = os.fork()
                if pid == 0:  # child
                    os.close(read_fd)
                    for fd in read_fds:
                        os.close(fd)
                    self._child(write_fd)
                os.close(write_fd)
                pids.append(pid)
                read_fds.append(read_fd)
            return self._run_parent(read_fds)
        finally:
            for pid in pids:  # normally already exited; after an error, do not leave them running
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
            for fd in read_fds:
                os.close(fd)
            self.shm.close()

    def _run_parent(self, read_fds: list[int]) -> list[list[int]]:
        views = self._views()
        try:
            return self._share_jobs(read_fds, *views)
        finally:
            for view in views:  # the mmap cannot be closed while views of it exist
                view.release()

    def _share_jobs(self, read_fds: list[int], next_job, counts, ids) -> list[list[int]]:
        errors: dict[int, BaseException] = {}
        buffers = {fd: b"" for fd in read_fds}
        open_fds = list(read_fds)

        def drain(block: bool) -> None:
            """Read the children's messages; collect each finished job, record each error."""
            ready, _, _ = select.select(open_fds, [], [], None if block else 0)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    open_fds.remove(fd)
                    continue
                data = buffers[fd] + chunk
                while len(data) >= _MESSAGE.size:
                    job, n_error = _MESSAGE.unpack_from(data)
                    if len(data) < _MESSAGE.size + n_error:
                        break
                    if n_error:
                        errors[job] = pickle.loads(data[_MESSAGE.size : _MESSAGE.size + n_error])
                    else:
                        self._collect(job, counts, ids)
                    data = data[_MESSAGE.size + n_error :]
                buffers[fd] = data

        def collect_finished() -> None:
            if open_fds:
                drain(block=False)

        while (job := self._claim(next_job)) < len(self.ranges):
            try:
                self._encode_own_job(job, collect_finished)
                self.jobs_done += 1
            except Exception as exc:  # noqa: BLE001 - raised below, after the children stop
                errors[job] = exc
                with self.claim_lock:
                    next_job[0] = len(self.ranges)
            collect_finished()
        while open_fds:
            drain(block=True)
        if errors:
            raise errors[min(errors)]
        if self.jobs_done != len(self.ranges):
            raise RuntimeError("encode_batch: a worker process died before finishing its jobs")
        return self.out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# ------------------------------------------------------------------------ spawn (no fork)
_worker_tokenizer: Tokenizer | None = None


def _init_spawned_worker(tok: Tokenizer) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tok


def _encode_texts(args: tuple[list[str], object, object]) -> list[bytes]:
    texts, allowed, disallowed = args
    encode = _worker_tokenizer._encode_packed
    return [encode(text, allowed, disallowed, "encode_batch") for text in texts]


def _encode_with_spawn(tok, texts, ranges, n_workers, allowed_special, disallowed_special):
    jobs = [(texts[a:b], allowed_special, disallowed_special) for a, b in ranges]
    out: list[list[int]] = []
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(n_workers, initializer=_init_spawned_worker, initargs=(tok,)) as pool:
        for chunk in pool.imap(_encode_texts, jobs, chunksize=1):  # in job order = input order
            out.extend(memoryview(packed).cast(tok._typecode).tolist() for packed in chunk)
    return out
