"""Stage 3, `make shards`: encode every raw document into fixed-size token shards.

    artifacts/<recipe>/shards/{val,train}_NNNNNN.{npy,arrow} (+ .index.arrow for npy), manifest.json

How the work is cut. The raw parquet files are made of row groups of a few hundred documents
(pipelines/data.py); one row group is one *task*. Worker processes each open the parquet files
themselves and encode whole row groups, so document text never crosses a process boundary: only
the packed token ids come back (one uint16/uint32 buffer per task). Tasks are submitted through a
small window and their results consumed strictly in task order, which is why the output is byte
for byte the same for any number of workers, and why memory stays bounded: at most `window`
results are in flight, and the writer holds at most one shard (contract/shard_format.py).

Validation split. A document goes to "val" when a hash of its id says so: either the hash falls
below `val_fraction` of the hash space, or it is among the `val_documents` smallest hashes (chosen
from the id column alone). Hash-based means the split does not depend on the order of documents
or on how many there are, and a document never moves between splits when more data is added
(for the fraction rule). Each split is written in its own pass (val first, it is small); a pass
reads only the `id` column of row groups that hold none of its documents.

Crash safety. Shards are written under temporary names and renamed. After each shard, one JSON
line is appended to `_progress.jsonl` (the journal): the shard's manifest entry plus `resume`, the
(task, row) and token offset of the first token not yet in a shard. Appending keeps the bookkeeping
O(1) per shard (rewriting a whole progress file after every shard made tiny shards quadratic). A
rerun after kill -9 keeps the longest prefix of intact journaled shards of each split (sha256
checked), ignores a torn last line, and restarts encoding at that point, so it ends with the very
same bytes. The manifest is written last: without it the directory does not count as shards.

The journal stays when the stage is done. When a later up-to-date check finds a shard damaged (or
the manifest edited), the same resume path repairs the directory: the shards before the first
damaged one are kept and the rest re-encoded, instead of re-encoding everything.

Executors. The workers above are processes of the local machine. With `--executor ray` (EXECUTOR=ray) the
same `encode_task` and the same `ShardWriter` run as tasks on a Ray cluster, in two phases (encode
ranges, then write each shard from prefix sums of token counts), with the same journal: the same bytes,
and either executor resumes the other's run (pipelines/executors/ray_shards.py).

Read first: `encode_task` (a row group's documents -> eot + ids each) and `ShardsJob.encode_split` (the
ids, in order, into contract/shard_format.py's `ShardWriter.add`). Bookkeeping a first reading may skip
(marked `# bookkeeping:`): the journal and resume (`Journal`, `read_journal`, `_resume_or_start`,
`_restore`), the up-to-date check in `run`, the Ray executor.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import multiprocessing
import os
import shutil
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from contract import manifest as mf
from contract.raw import RAW_MANIFEST
from contract.recipe import Recipe
from contract.shard_format import (
    SHARD_ENTRY,
    ShardFormatError,
    ShardWriter,
    damaged_files,
    dtype_for_vocab,
    load_matching_tokenizer,
    manifest_schema,
    shards_manifest,
)
from pipelines.executors import LOCAL, RAY
from pipelines.stage_cli import stage_main
from tokenizer.atomic_write import write_text_atomic

PROGRESS = "_progress.jsonl"
RAY_SPILL = "_ray"                 # what the Ray executor encodes before it writes shards (executors/ray_shards.py)
OLD_PROGRESS = "_progress.json"   # what earlier versions wrote (rewritten in full after every shard)
SPLITS = ("val", "train")


class ShardsStageError(ValueError):
    pass


# ------------------------------------------------------------------------------ validation split
def id_hash(doc_id: str) -> int:
    """64-bit hash of a document id: stable across processes and Python versions (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "big")


def select_val_ids(raw_files: list[Path], n: int) -> frozenset[str]:
    """The n ids with the smallest hashes (ties by id): one streaming pass over the id columns,
    holding only n candidates (heapq.nsmallest keeps a bounded heap)."""

    def keyed_ids() -> Iterator[tuple[int, str]]:
        for path in raw_files:
            for batch in pq.ParquetFile(path).iter_batches(columns=["id"], batch_size=8192):
                for doc_id in batch.column("id").to_pylist():
                    yield id_hash(doc_id), doc_id

    return frozenset(doc_id for _, doc_id in heapq.nsmallest(n, keyed_ids()))


class SplitRule:
    """Which documents belong to which split. Picklable; evaluated in the workers."""

    def __init__(self, val_fraction: float = 0.0, val_ids: frozenset[str] | None = None):
        self.threshold = int(val_fraction * 2**64)
        self.val_ids = val_ids

    @property
    def has_val(self) -> bool:
        return bool(self.threshold) or bool(self.val_ids)

    def is_val(self, doc_id: str) -> bool:
        if self.val_ids is not None:
            return doc_id in self.val_ids
        return id_hash(doc_id) < self.threshold


# ---------------------------------------------------------------------------------------- workers
_worker: dict[str, Any] = {}


def _init_worker(tok, files: list[str], rule: SplitRule, dtype: str) -> None:
    """Per-process state. With fork the tokenizer is inherited from the parent, already built;
    with spawn it arrives pickled (its definition only, Tokenizer.__reduce__)."""
    _worker.update(tok=tok, files=files, rule=rule, files_open={},
                   typecode="H" if np.dtype(dtype) == np.uint16 else "I")


def _parquet(file_index: int) -> pq.ParquetFile:
    cache = _worker["files_open"]
    if file_index not in cache:
        cache[file_index] = pq.ParquetFile(_worker["files"][file_index])
    return cache[file_index]


def encode_task(task: tuple[int, int], split: str) -> tuple[list[int], list[str], bytes, bytes, int]:
    """Encode the documents of one row group that belong to `split`.

    Returns (row numbers, ids, packed tokens, packed per-document lengths, rows in the group); an
    empty document is reported with length 0 (no tokens, not even eot), so the caller counts it in order.
    Every document is encoded as ordinary text (a literal "<|endoftext|>" in it is just text) and
    preceded by eot, so eot marks document starts and nothing else.
    """
    file_index, row_group = task
    pf = _parquet(file_index)
    # use_threads=False: one column is read at a time, so Arrow's threads would add no speed, only
    # more threads per worker process than cores and per-thread allocator caches (peak RSS jitter).
    rule: SplitRule = _worker["rule"]
    ids = pf.read_row_group(row_group, columns=["id"], use_threads=False).column("id").to_pylist()
    want_val = split == "val"
    rows = [i for i, d in enumerate(ids) if rule.is_val(d) == want_val] if rule.has_val else list(range(len(ids)))
    if not rows:  # nothing for this split here: the text column is never decompressed
        return [], [], b"", b"", len(ids)
    texts = pf.read_row_group(row_group, columns=["text"], use_threads=False).column("text").to_pylist()
    tok = _worker["tok"]
    eot = tok.eot_id
    flat = array(_worker["typecode"])
    lengths = array("Q")
    # The data stage already skips empty documents; raw files from elsewhere may not.
    kept = [texts[r] for r in rows if isinstance(texts[r], str) and texts[r].strip()]
    # All the row group's documents in one call: the tokenizer looks their chunks up in batches,
    # in numpy (tokenizer/chunk_table.py), and the ids come packed: no Python int for any token.
    encoded_docs = iter(tok.encode_to_arrays(kept, disallowed_special=()))  # = encode_ordinary
    for r in rows:
        text = texts[r]
        if not isinstance(text, str) or not text.strip():
            lengths.append(0)
            continue
        encoded = next(encoded_docs)
        flat.append(eot)
        flat.extend(encoded)  # a memcpy: tokenizer and shards both use uint16 up to 65,536 ids, else uint32
        lengths.append(len(encoded) + 1)
    return rows, [ids[r] for r in rows], flat.tobytes(), lengths.tobytes(), len(ids)


def _ordered_results(pool_of: Callable[[], Any] | None, tasks: list[tuple[int, int]], start: int, split: str,
                     workers: int) -> Iterator[tuple]:
    """Results of tasks[start:], in task order, with at most a few tasks in flight (bounded memory).

    pool_of() gives the worker pool (None: everything is encoded here). The first task is always
    encoded here, before the pool is asked for: with fork, workers made after it start from the
    words it taught this process's tokenizer (a copy of its caches), rather than each learning the
    commonest words of the corpus again."""
    if start >= len(tasks):
        return
    yield start, encode_task(tasks[start], split)
    pool = pool_of() if pool_of is not None else None
    if pool is None:
        for t in range(start + 1, len(tasks)):
            yield t, encode_task(tasks[t], split)
        return
    window = 2 * workers + 2
    pending: deque = deque()
    next_task = start + 1
    while next_task < len(tasks) and len(pending) < window:
        pending.append((next_task, pool.apply_async(encode_task, (tasks[next_task], split))))
        next_task += 1
    while pending:
        t, result = pending.popleft()
        value = result.get()
        if next_task < len(tasks):
            pending.append((next_task, pool.apply_async(encode_task, (tasks[next_task], split))))
            next_task += 1
        yield t, value


# ------------------------------------------------------------------------------------------ stage
def _paths(recipe: Recipe) -> tuple[Path, Path, Path]:
    return recipe.stage_dir("raw"), recipe.stage_dir("tokenizer"), recipe.stage_dir("shards")


def tokenizer_manifest(recipe: Recipe) -> dict[str, Any]:
    tok_dir = recipe.stage_dir("tokenizer")
    tok_manifest = mf.read_manifest(tok_dir, mf.TOKENIZER_MANIFEST)
    if tok_manifest is None:
        raise ShardsStageError(f"{tok_dir}/manifest.json is missing: run `make tokenizer` first")
    return tok_manifest


def stage_inputs(recipe: Recipe) -> dict[str, Any]:
    raw_dir, _, _ = _paths(recipe)
    # The tokenizer's fingerprint, not its manifest's hash: retraining to the same merges (the
    # report's timings differ) must not invalidate the shards; a different vocabulary must.
    tokenizer_fingerprint = tokenizer_manifest(recipe)["tokenizer"]["fingerprint"]
    return {"raw_manifest_sha256": mf.manifest_fingerprint(raw_dir, RAW_MANIFEST),
            "tokenizer_fingerprint": tokenizer_fingerprint}


def stage_schema(fmt: str) -> dict[str, Any]:
    """The shards stage's own manifest: every stage's keys plus the shard format's."""
    return {**mf.STAGE_MANIFEST, **manifest_schema(fmt)}


# ------------------------------------------------------------------------------------- the journal
# One line per finished shard: its manifest entry plus where the input stands after it.
JOURNAL_HEADER = {"fingerprint": str}
JOURNAL_LINE = {"split": str, "shard": {**SHARD_ENTRY, "skipped_empty": int,
                                        "resume": ({"position": [int], "offset": int}, None)}}


def read_journal(path: Path, fingerprint: str) -> dict[str, list[dict[str, Any]]] | None:
    """The journaled shards of each split, or None when there is no journal for these settings.

    Only complete lines count: the text after the last newline is a line a kill cut short, and a line
    that is not JSON is what a power cut can leave of an unsynced tail; both end the journal there
    (what follows is re-encoded). A well-formed line with a missing key or a wrong type is neither:
    that is an error naming the line and the key."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    lines = data.split(b"\n")[:-1]   # the last element is the torn line, or b"" after a final newline
    try:
        header = json.loads(lines[0]) if lines else None
    except ValueError:
        return None
    if header is None:
        return None
    remedy = f"delete {path} or run `make shards FORCE=1` to start the stage over"
    try:
        mf.check_schema(header, JOURNAL_HEADER, file=f"{path}:1")
    except mf.ManifestError as exc:
        raise mf.ManifestError(f"{exc}; {remedy}") from None
    if header["fingerprint"] != fingerprint:
        return None
    splits: dict[str, list[dict[str, Any]]] = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line)
        except ValueError:
            break
        try:
            mf.check_schema(record, JOURNAL_LINE, file=f"{path}:{number}")
        except mf.ManifestError as exc:
            raise mf.ManifestError(f"{exc}; {remedy}") from None
        splits.setdefault(record["split"], []).append(record["shard"])
    return splits


class Journal:
    """The open journal: rewritten once when a run starts (the header and the shards it keeps),
    then appended to, one flushed line per shard. Not fsynced: like the shards themselves, every
    journaled shard is checked by sha256 before a resume keeps it, so durability buys nothing."""

    def __init__(self, path: Path, fingerprint: str, kept: dict[str, list[dict[str, Any]]]):
        lines = [json.dumps({"fingerprint": fingerprint})]
        lines += [_journal_line(split, entry) for split, entries in kept.items() for entry in entries]
        write_text_atomic(path, "".join(line + "\n" for line in lines), durable=False)
        self._file = open(path, "a", encoding="utf-8")

    def append(self, split: str, entry: dict[str, Any]) -> None:
        self._file.write(_journal_line(split, entry) + "\n")
        self._file.flush()   # into the page cache: a kill -9 cannot lose it

    def close(self) -> None:
        self._file.close()


def _journal_line(split: str, entry: dict[str, Any]) -> str:
    return json.dumps({"split": split, "shard": entry}, ensure_ascii=False, sort_keys=True)


def stage_config(recipe: Recipe) -> dict[str, Any]:
    """The shards section minus `workers`: the output does not depend on it, so neither does staleness."""
    cfg = recipe.section("shards")
    cfg.pop("workers")
    return cfg


def _restore(journaled: dict[str, list[dict[str, Any]]], out_dir: Path) -> dict[str, Any]:
    """Keep each split's longest prefix of intact shards (sha256 checked); resume after the last of them."""
    splits = {}
    for split, entries in journaled.items():
        good = []
        for entry in entries:
            if damaged_files(out_dir, entry):
                break
            good.append(entry)
        splits[split] = {
            "shards": good,
            "done": bool(good) and good[-1]["resume"] is None,   # a split's last shard has no resume point
            "stats": {"skipped_empty": good[-1]["skipped_empty"] if good else 0},
        }
    return {"splits": splits}


def _clean(out_dir: Path) -> None:
    for pattern in ("*_[0-9][0-9][0-9][0-9][0-9][0-9].*", PROGRESS):
        for p in out_dir.glob(pattern):
            p.unlink()
    shutil.rmtree(out_dir / RAY_SPILL, ignore_errors=True)


def _resume_or_start(out_dir: Path, fingerprint: str, force: bool, log) -> dict[str, Any]:
    """The progress to continue from: the journal's intact shards, or nothing (and a clean directory)."""
    journaled = None if force else read_journal(out_dir / PROGRESS, fingerprint)
    if journaled is None:
        _clean(out_dir)
        return {"splits": {}}
    progress = _restore(journaled, out_dir)
    done = sum(len(s["shards"]) for s in progress["splits"].values())
    log(f"shards: resuming after {done} finished shard(s)")
    return progress


def run(recipe: Recipe, force: bool = False, progress_bar: bool = True, log=print,
        workers: int | None = None, executor: str = LOCAL) -> dict[str, Any]:
    """Run the shards stage (or skip it when up to date); returns the manifest.

    `executor` says where the documents are encoded: worker processes here ("local") or tasks on a Ray
    cluster ("ray", pipelines/executors/ray_shards.py). Both write the same bytes, so it is not part of
    the config the manifest records, and either one resumes what the other left."""
    raw_dir, tok_dir, out_dir = _paths(recipe)
    cfg = stage_config(recipe)
    inputs = stage_inputs(recipe)
    # bookkeeping: what a killed run leaves (temporary files, the progress file of versions before the
    # journal), then the up-to-date check
    mf.remove_leftovers(out_dir)
    (out_dir / OLD_PROGRESS).unlink(missing_ok=True)
    schema = stage_schema(cfg["format"])
    fresh = mf.Freshness("forced") if force else mf.is_up_to_date(out_dir, cfg, inputs, schema)
    if fresh:
        log(f"shards: {out_dir} is up to date (FORCE=1 to redo)")
        return mf.read_manifest(out_dir, schema)
    if fresh.damaged:
        log(f"shards: {fresh.reason}: repairing (intact shards before the first damaged one are kept)")
    elif fresh.changed:   # e.g. after SET=shards.format=arrow, a plain `make shards` goes back to npy: say so
        log(f"shards: {fresh.reason}: rebuilding {out_dir}")
    workers = workers or recipe.section("shards")["workers"] or os.cpu_count() or 1
    if executor == RAY:   # before anything is changed: Ray is installed, the cluster answers
        from pipelines.executors.ray_cluster import preflight

        preflight()

    from contract.raw import raw_files

    files = raw_files(raw_dir)
    tok_manifest = tokenizer_manifest(recipe)
    vocab_size, eot_id = tok_manifest["tokenizer"]["n_vocab"], tok_manifest["tokenizer"]["eot_id"]
    if eot_id is None:
        raise ShardsStageError(f"{tok_dir}: the tokenizer has no <|endoftext|> token to separate documents")
    dtype = dtype_for_vocab(vocab_size)
    tokenizer_path = recipe.tokenizer_file

    out_dir.mkdir(parents=True, exist_ok=True)
    mf.remove_manifest(out_dir)
    fp = mf.fingerprint({"config": cfg, "inputs": inputs})
    progress = _resume_or_start(out_dir, fp, force, log)  # bookkeeping: the journaled shards a rerun keeps

    tasks = [(fi, rg) for fi, p in enumerate(files) for rg in range(pq.ParquetFile(p).num_row_groups)]
    total_docs = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    rule = SplitRule(val_fraction=cfg["val_fraction"])
    if cfg["val_documents"]:
        if cfg["val_documents"] >= total_docs:
            raise ShardsStageError(f"{recipe.path} [shards] val_documents = {cfg['val_documents']} leaves none of the "
                                   f"{total_docs} raw documents for training")
        rule = SplitRule(val_ids=select_val_ids(files, cfg["val_documents"]))
    splits = [s for s in SPLITS if s == "train" or rule.has_val]

    tok = load_matching_tokenizer(tokenizer_path, inputs["tokenizer_fingerprint"],
                                  f"{tok_dir / mf.MANIFEST} records", remedy="`make tokenizer` rebuilds it")

    journal = Journal(out_dir / PROGRESS, fp, {s: state["shards"] for s, state in progress["splits"].items()})
    for split in splits:
        progress["splits"].setdefault(split, {"shards": [], "done": False, "stats": {"skipped_empty": 0}})
    t0 = time.perf_counter()
    try:
        if executor == RAY:
            from pipelines.executors.ray_shards import ShardsOnRay

            cluster = ShardsOnRay(out_dir.resolve(), cfg["format"], cfg["shard_tokens"], dtype, eot_id,
                                  [p.resolve() for p in files], tasks, rule, Path(tokenizer_path).resolve(),
                                  tok.fingerprint, fp, progress, journal, splits).run(log, progress_bar)
            where = f"{cluster.cpus} CPU(s) on {cluster.nodes} Ray node(s)"
        else:
            ShardsJob(out_dir, cfg["format"], cfg["shard_tokens"], dtype, eot_id, tasks, None, workers, progress,
                      journal).encode_here(tok, files, rule, splits, total_docs, progress_bar)
            where = f"{workers} worker(s)"
    finally:
        journal.close()
    elapsed = time.perf_counter() - t0

    manifest = shards_manifest(
        fmt=cfg["format"], vocab_size=vocab_size, eot_id=eot_id, shard_tokens=cfg["shard_tokens"],
        tokenizer={"fingerprint": tok.fingerprint, "name": tok_manifest["tokenizer"].get("name"),
                   "path": os.path.relpath(tokenizer_path, out_dir)},
        splits={s: progress["splits"][s]["shards"] for s in splits},
        skipped_empty={s: progress["splits"][s]["stats"]["skipped_empty"] for s in splits},
        stage="shards", recipe=recipe.name, config=cfg, inputs=inputs,
    )
    mf.write_manifest(out_dir, manifest)   # the journal stays: it lets a later run repair a damaged shard
    shutil.rmtree(out_dir / RAY_SPILL, ignore_errors=True)   # what an interrupted Ray run encoded, if any
    tokens = sum(manifest["splits"][s]["tokens"] for s in splits)
    log(f"shards: {tokens:,} tokens in " + ", ".join(
        f"{s} {len(manifest['splits'][s]['shards'])} shard(s)/{manifest['splits'][s]['documents']} docs"
        for s in splits) + f" -> {out_dir} ({elapsed:.1f} s, {where})")
    return manifest


@dataclass
class ShardsJob:
    """One run of the stage: the tasks to encode, the shards to cut, and the progress record that
    makes the run resumable (each split's finished shards, with the input position after each)."""

    out_dir: Path
    fmt: str
    shard_tokens: int
    dtype: np.dtype
    eot_id: int
    tasks: list[tuple[int, int]]   # (raw file, row group) in document order
    pool: Any                      # a multiprocessing pool, or None to encode in this process
    workers: int
    progress: dict[str, Any]
    journal: Journal

    def worker_pool(self):
        """The pool of worker processes, made on first need (after this process has encoded a task)."""
        if self.pool is None:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.pool = ctx.Pool(self.workers, initializer=_init_worker, initargs=self._init_args)
        return self.pool

    def encode_here(self, tok, files: list[Path], rule: SplitRule, splits: list[str], total_docs: int,
                    progress_bar: bool) -> None:
        """Encode every split not yet done in worker processes of the local machine (or in this process)."""
        from tokenizer.progress import Progress  # a bar on a terminal, a line now and then in a log

        init_args = self._init_args = (tok, [str(p) for p in files], rule, self.dtype.str)
        _init_worker(*init_args)  # this process encodes too: each split's first task (_ordered_results)
        try:
            for split in splits:
                if self.progress["splits"][split]["done"]:
                    continue
                with Progress(total_docs, unit="doc", desc=f"shards {split}", enabled=progress_bar) as bar:
                    self.encode_split(split, bar)
        finally:
            if self.pool is not None:
                self.pool.terminate()
                self.pool.join()

    def encode_split(self, split: str, bar) -> None:
        """Encode one split from where its progress record stops, cutting shards as they fill."""
        state = self.progress["splits"][split]
        stats = state["stats"]

        def on_shard(entry: dict[str, Any]) -> None:
            entry["skipped_empty"] = stats["skipped_empty"]   # counted up to the resume point (all, in the last)
            state["shards"].append(entry)
            self.journal.append(split, entry)

        # bookkeeping: resume where the last journaled shard ends (the start of the split on a fresh run)
        resume = state["shards"][-1]["resume"] if state["shards"] else {"position": [0, 0], "offset": 0}
        stats["skipped_empty"] = state["shards"][-1]["skipped_empty"] if state["shards"] else 0
        start_position = tuple(resume["position"])
        writer = ShardWriter(self.out_dir, split, self.fmt, self.shard_tokens, self.dtype, self.eot_id,
                             next_index=len(state["shards"]), on_shard=on_shard)
        results = _ordered_results(self.worker_pool if self.workers > 1 else None, self.tasks, start_position[0],
                                   split, self.workers)
        for t, (rows, ids, packed, packed_lengths, group_rows) in results:
            tokens = np.frombuffer(packed, dtype=self.dtype)
            ends = np.cumsum(np.frombuffer(packed_lengths, dtype=np.uint64)).tolist()
            start = 0
            for row, doc_id, end in zip(rows, ids, ends):
                if (t, row) >= start_position:
                    if end == start:
                        stats["skipped_empty"] += 1
                    else:
                        skip = resume["offset"] if (t, row) == start_position else 0
                        writer.add(doc_id, tokens[start:end], [t, row], skip)
                start = end
            bar.update(group_rows)
        writer.close()
        state["done"] = True
        state["stats"] = dict(stats)


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, "make shards: encode raw documents into token shards", (ShardsStageError, ShardFormatError),
                      argv, stage="shards", stage_dir="shards", prog="python -m pipelines.shards")


if __name__ == "__main__":
    sys.exit(main())
