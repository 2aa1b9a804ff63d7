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

Crash safety. Shards are written under temporary names and renamed. After each shard,
`_progress.json` records the shard list of each split; each entry carries `resume`: the
(task, row) and token offset of the first token not yet in a shard. A rerun after kill -9 keeps
the finished shards and restarts encoding at that point, so it ends with the very same bytes.
The manifest is written last: without it the directory does not count as shards.
"""

from __future__ import annotations

import hashlib
import heapq
import multiprocessing
import os
import sys
import time
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from contract import manifest as mf
from contract.recipe import Recipe
from contract.shard_format import (
    ShardFormatError,
    ShardWriter,
    damaged_files,
    dtype_for_vocab,
    load_matching_tokenizer,
    shards_manifest,
)
from pipelines.stage_cli import stage_main
from tokenizer.atomic_write import write_json_atomic

PROGRESS = "_progress.json"
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
    for r in rows:
        text = texts[r]
        if not isinstance(text, str) or not text.strip():
            lengths.append(0)   # the data stage already skips these; raw files from elsewhere may not
            continue
        # Packed ids straight from the tokenizer's cache: no Python int is made for any token.
        encoded = tok.encode_to_array(text, disallowed_special=())  # = encode_ordinary
        flat.append(eot)
        flat.extend(encoded)  # a memcpy: tokenizer and shards both use uint16 up to 65,536 ids, else uint32
        lengths.append(len(encoded) + 1)
    return rows, [ids[r] for r in rows], flat.tobytes(), lengths.tobytes(), len(ids)


def _ordered_results(pool, tasks: list[tuple[int, int]], start: int, split: str, workers: int) -> Iterator[tuple]:
    """Results of tasks[start:], in task order, with at most a few tasks in flight (bounded memory)."""
    if pool is None:
        for t in range(start, len(tasks)):
            yield t, encode_task(tasks[t], split)
        return
    window = 2 * workers + 2
    pending: deque = deque()
    next_task = start
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


def stage_inputs(recipe: Recipe) -> dict[str, Any]:
    raw_dir, tok_dir, _ = _paths(recipe)
    tok_manifest = mf.read_manifest(tok_dir)
    if tok_manifest is None:
        raise ShardsStageError(f"{tok_dir}/manifest.json is missing: run `make tokenizer` first")
    # The tokenizer's fingerprint, not its manifest's hash: retraining to the same merges (the
    # report's timings differ) must not invalidate the shards; a different vocabulary must.
    return {
        "raw_manifest_sha256": mf.manifest_fingerprint(raw_dir),
        "tokenizer_fingerprint": tok_manifest["tokenizer"]["fingerprint"],
    }


def stage_config(recipe: Recipe) -> dict[str, Any]:
    """The shards section minus `workers`: the output does not depend on it, so neither does staleness."""
    cfg = recipe.section("shards")
    cfg.pop("workers")
    return cfg


def _restore(progress: dict[str, Any], out_dir: Path) -> None:
    """Keep each split's longest prefix of intact shards; resume after the last of them."""
    for state in progress["splits"].values():
        good = []
        for entry in state["shards"]:
            if damaged_files(out_dir, entry):
                break
            good.append(entry)
        state["shards"] = good
        state["done"] = bool(good) and good[-1]["resume"] is None   # a split's last shard has no resume point
        state["stats"] = {"skipped_empty": good[-1]["skipped_empty"] if good else 0}


def _clean(out_dir: Path) -> None:
    for pattern in ("*_[0-9][0-9][0-9][0-9][0-9][0-9].*", PROGRESS, "*.tmp"):
        for p in out_dir.glob(pattern):
            p.unlink()


def run(recipe: Recipe, force: bool = False, progress_bar: bool = True, log=print,
        workers: int | None = None) -> dict[str, Any]:
    """Run the shards stage (or skip it when up to date); returns the manifest."""
    raw_dir, tok_dir, out_dir = _paths(recipe)
    cfg = stage_config(recipe)
    inputs = stage_inputs(recipe)
    if not force and mf.is_up_to_date(out_dir, cfg, inputs):
        # a kill between writing the manifest and removing _progress.json leaves it behind
        for leftover in [out_dir / PROGRESS, *out_dir.glob("*.tmp")]:
            leftover.unlink(missing_ok=True)
        log(f"shards: {out_dir} is up to date (FORCE=1 to redo)")
        return mf.read_manifest(out_dir)
    workers = workers or recipe.section("shards")["workers"] or os.cpu_count() or 1

    from contract.raw import raw_files

    files = raw_files(raw_dir)
    tok_manifest = mf.read_manifest(tok_dir)
    vocab_size, eot_id = tok_manifest["tokenizer"]["n_vocab"], tok_manifest["tokenizer"]["eot_id"]
    if eot_id is None:
        raise ShardsStageError(f"{tok_dir}: the tokenizer has no <|endoftext|> token to separate documents")
    dtype = dtype_for_vocab(vocab_size)
    tokenizer_path = recipe.tokenizer_file

    out_dir.mkdir(parents=True, exist_ok=True)
    mf.remove_manifest(out_dir)
    fp = mf.fingerprint({"config": cfg, "inputs": inputs})
    progress_path = out_dir / PROGRESS
    progress = None
    if not force and progress_path.exists():
        try:
            progress = mf.read_json(progress_path)
        except (OSError, ValueError):
            progress = None
        if progress is not None and progress.get("fingerprint") != fp:
            progress = None
        if progress is not None:
            _restore(progress, out_dir)
    if progress is None:
        _clean(out_dir)
        progress = {"fingerprint": fp, "splits": {}}
    else:
        done = sum(len(s["shards"]) for s in progress["splits"].values())
        log(f"shards: resuming after {done} finished shard(s)")

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
                                  f"{tok_dir / mf.MANIFEST} records")
    init_args = (tok, [str(p) for p in files], rule, dtype.str)
    pool = None
    if workers > 1:
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=init_args)
    else:
        _init_worker(*init_args)

    from tqdm import tqdm

    job = ShardsJob(out_dir, cfg["format"], cfg["shard_tokens"], dtype, eot_id, tasks, pool, workers, progress)
    t0 = time.perf_counter()
    try:
        for split in splits:
            state = progress["splits"].setdefault(
                split, {"shards": [], "done": False, "stats": {"skipped_empty": 0}}
            )
            if state["done"]:
                continue
            bar = tqdm(total=total_docs, unit="doc", desc=f"shards {split}", disable=not progress_bar,
                       dynamic_ncols=True)
            job.encode_split(split, bar)
            bar.close()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    elapsed = time.perf_counter() - t0

    manifest = shards_manifest(
        fmt=cfg["format"], vocab_size=vocab_size, eot_id=eot_id, shard_tokens=cfg["shard_tokens"],
        tokenizer={"fingerprint": tok.fingerprint, "name": tok_manifest["tokenizer"].get("name"),
                   "path": os.path.relpath(tokenizer_path, out_dir)},
        splits={s: progress["splits"][s]["shards"] for s in splits},
        skipped_empty={s: progress["splits"][s]["stats"]["skipped_empty"] for s in splits},
        stage="shards", recipe=recipe.name, config=cfg, inputs=inputs,
    )
    mf.write_manifest(out_dir, manifest)
    progress_path.unlink(missing_ok=True)
    tokens = sum(manifest["splits"][s]["tokens"] for s in splits)
    log(f"shards: {tokens:,} tokens in " + ", ".join(
        f"{s} {len(manifest['splits'][s]['shards'])} shard(s)/{manifest['splits'][s]['documents']} docs"
        for s in splits) + f" -> {out_dir} ({elapsed:.1f} s, {workers} worker(s))")
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

    def save_progress(self) -> None:
        # not durable: a resume re-checks every shard the record lists (damaged_files) before keeping it
        write_json_atomic(self.out_dir / PROGRESS, self.progress, durable=False)

    def encode_split(self, split: str, bar) -> None:
        """Encode one split from where its progress record stops, cutting shards as they fill."""
        state = self.progress["splits"][split]
        stats = state["stats"]

        def on_shard(entry: dict[str, Any]) -> None:
            entry["skipped_empty"] = stats["skipped_empty"]   # counted up to the resume point (all, in the last)
            state["shards"].append(entry)
            self.save_progress()

        resume = state["shards"][-1]["resume"] if state["shards"] else {"position": [0, 0], "offset": 0}
        stats["skipped_empty"] = state["shards"][-1]["skipped_empty"] if state["shards"] else 0
        start_position = tuple(resume["position"])
        writer = ShardWriter(self.out_dir, split, self.fmt, self.shard_tokens, self.dtype, self.eot_id,
                             next_index=len(state["shards"]), on_shard=on_shard)
        results = _ordered_results(self.pool, self.tasks, start_position[0], split, self.workers)
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
        self.save_progress()


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, "make shards: encode raw documents into token shards", (ShardsStageError, ShardFormatError),
                      argv)


if __name__ == "__main__":
    sys.exit(main())
