"""`make shards` on a Ray cluster: the local executor's bytes, from tasks spread over many machines.

The local stage reads the documents in order and cuts the token stream into shards of exactly
`shard_tokens` tokens as it goes. A shard boundary falls wherever the count says, in the middle of a
document, so shards cannot be made independently from independent pieces of input... unless the
counts are known first. Hence two phases:

1. Encode. The row groups of the raw files are grouped into *ranges* of about RANGE_BYTES of text.
   One task per range encodes its documents with exactly the local code (`pipelines.shards.encode_task`)
   and writes the ids, per-document lengths and positions to a spill file on the shared file system
   (`shards/_ray/r000012.npz`). It returns only counts: tokens, documents, empty documents per split.

2. Write. Prefix sums of those counts give every range's first token's place in its split's stream,
   so shard k of a split is the tokens [k * shard_tokens, (k + 1) * shard_tokens), and the driver knows
   which ranges hold them. One task per shard reads those slices back and feeds them to the same
   `ShardWriter` the local stage uses, started at shard k, up to the first token of the next shard:
   that token is what makes the writer write the shard, and where it lies is the shard's resume
   point, so the manifest entry comes out exactly as the local run's, down to its journal line.

Byte identity follows from using the local code for both halves: the same encoder call per document,
the same writer, fed the same tokens in the same order with the same positions. The number of nodes,
CPUs or tasks only changes which process does a piece of it, never what the piece is. The range layout
depends on the raw files alone (not on the cluster), so a spill file stays valid across reruns.

Memory per task: a range is at most RANGE_BYTES of text (and its tokens); a write task holds one shard,
as the local writer does, plus the per-document table of the ranges it reads.

Resume. Spill files are written under temporary names and renamed, and phase 1 skips a range whose
spill file exists, so a driver killed with kill -9 loses only the ranges in flight. Shards are journaled
in order, one line each, exactly as the local stage journals them (`_progress.jsonl`); a rerun keeps the
journaled intact shards and continues from the resume point of the last one, with either executor. The
spill directory is deleted once the manifest is written.
"""

from __future__ import annotations

import bisect
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from contract.shard_format import ShardWriter, load_matching_tokenizer
from pipelines import shards as local
from pipelines.executors import ray_cluster
from tokenizer.atomic_write import atomic_open, write_json_atomic

SPILL_DIR = "_ray"
RANGE_BYTES = 32 << 20    # uncompressed parquet bytes per encode task, at most (~8M tokens of English)
RANGES_AT_LEAST = 64      # a small corpus is cut finer, so that every CPU of a cluster gets some of it
START = (0, 0)            # the position (task, row) of a split that has no shard yet


# --------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class RangeLayout:
    """Consecutive tasks (row groups) grouped into ranges [first, stop) of about the same size.

    The size is read from the parquet footers (uncompressed bytes), so the layout depends on the raw
    files only: the same on every run and for any cluster, which is what lets a rerun reuse spill files."""

    ranges: list[tuple[int, int]]
    rows: list[int]            # documents per range (for the progress bar)

    @classmethod
    def of(cls, files: list[Path], tasks: list[tuple[int, int]]) -> RangeLayout:
        footers = [pq.ParquetFile(p).metadata for p in files]
        groups = [footers[f].row_group(rg) for f, rg in tasks]
        target = max(1, min(RANGE_BYTES, sum(g.total_byte_size for g in groups) // RANGES_AT_LEAST))
        ranges, rows, first, size = [], [], 0, 0
        for t, group in enumerate(groups):
            size += group.total_byte_size
            if size >= target or t == len(groups) - 1:
                ranges.append((first, t + 1))
                rows.append(sum(g.num_rows for g in groups[first:t + 1]))
                first, size = t + 1, 0
        return cls(ranges, rows)


@dataclass
class SplitPlan:
    """Where one split stands and what is left to write: from the journal's last intact shard on.

    `position` is the (task, row) of the first document not wholly in a kept shard, `offset` how many of
    its tokens are, and `empties` how many empty documents came before it (the journal's count). Ranges
    are counted from `position` on: documents before it are in kept shards, whatever range holds them."""

    name: str
    kept: int                       # shards already written (journaled and intact)
    position: tuple[int, int] = START
    offset: int = 0
    empties: int = 0
    ranges: list[int] = field(default_factory=list)         # the ranges holding documents from `position` on
    starts: list[int] = field(default_factory=list)         # each range's first token's index in the split
    ends: list[int] = field(default_factory=list)           # ... and one past its last
    range_empties: list[int] = field(default_factory=list)  # each range's empty documents
    shards: int = 0                                         # of the whole split, kept ones included

    @classmethod
    def from_progress(cls, name: str, state: dict[str, Any]) -> SplitPlan:
        kept = state["shards"]
        if not kept:
            return cls(name, 0)
        last = kept[-1]
        return cls(name, len(kept), tuple(last["resume"]["position"]), last["resume"]["offset"], last["skipped_empty"])

    def lay_out(self, shard_tokens: int, summaries: dict[int, dict[str, Any]]) -> None:
        """Prefix sums of the ranges' token counts: every range's place in the split's token stream."""
        cursor = self.kept * shard_tokens - self.offset   # the first token of the document at `position`
        for r in self.ranges:
            counts = summaries[r][self.name]
            self.starts.append(cursor)
            cursor += counts["tokens"]
            self.ends.append(cursor)
            self.range_empties.append(counts["empty"])
        self.shards = max(self.kept, -(-cursor // shard_tokens))

    @property
    def skipped_empty(self) -> int:
        return self.empties + sum(self.range_empties)

    def shard_task(self, k: int, shard_tokens: int) -> dict[str, Any]:
        """What the task writing shard k needs: the ranges from the one holding its first token to the one
        holding the first token of shard k + 1 (to the end, for the last shard: it also counts the empty
        documents after the last token), with their places in the stream."""
        last = k == self.shards - 1
        first = bisect.bisect_right(self.ends, k * shard_tokens)   # the first range that ends after the start
        stop = len(self.ranges) if last else bisect.bisect_right(self.ends, (k + 1) * shard_tokens) + 1
        return {"split": self.name, "index": k, "last": last, "from": list(self.position),
                "empties_before": self.empties + sum(self.range_empties[:first]),
                "ranges": [[self.ranges[i], self.starts[i]] for i in range(first, min(stop, len(self.ranges)))]}


# ------------------------------------------------------------------------------ phase 1: encoding
_worker_key: dict[str, str] = {}


def _prepare_worker(spec: dict[str, Any], rule: local.SplitRule) -> None:
    """The local stage's per-process state, built once per run in each Ray worker process (which Ray
    keeps for the next task): the tokenizer, checked against the fingerprint the stage recorded, and its
    caches stay warm from one range to the next, as in a local worker."""
    if _worker_key.get("run") == spec["run"]:
        return
    tok = load_matching_tokenizer(spec["tokenizer"], spec["fingerprint"], "the shards stage on the driver loaded",
                                  remedy="`make tokenizer` rebuilds it")
    local._init_worker(tok, spec["files"], rule, spec["dtype"])
    _worker_key["run"] = spec["run"]


def spill_path(spill: str | Path, r: int) -> Path:
    return Path(spill) / f"r{r:06d}.npz"


def encode_range(spec: dict[str, Any], rule: local.SplitRule) -> dict[str, Any]:
    """Phase 1 task: encode the row groups of range `spec["range"]` for every split into its spill file,
    unless an earlier attempt (or run) already did; return the range's counts per split, and whether
    this task encoded it."""
    path = spill_path(spec["spill"], spec["range"])
    encoded = not path.exists()
    if encoded:
        _prepare_worker(spec, rule)
        dtype = np.dtype(spec["dtype"])
        arrays: dict[str, np.ndarray] = {}
        for split in spec["splits"]:
            tokens, lengths, positions, ids = [], [], [], []
            for t, f, rg in spec["tasks"]:
                rows, group_ids, packed, packed_lengths, _ = local.encode_task((f, rg), split)
                tokens.append(np.frombuffer(packed, dtype=dtype))
                lengths.append(np.frombuffer(packed_lengths, dtype=np.uint64))
                positions += [(t, row) for row in rows]
                ids += group_ids
            arrays.update(_spill_arrays(split, tokens, lengths, positions, ids, dtype))
        with atomic_open(path, "wb", durable=False) as f:
            np.savez(f, **arrays)
    return {"encoded": encoded, "splits": _summary(path, spec["splits"], spec["from"])}


def _spill_arrays(split: str, tokens, lengths, positions, ids, dtype) -> dict[str, np.ndarray]:
    encoded = [i.encode("utf-8") for i in ids]
    id_ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
    return {
        f"{split}_tokens": np.concatenate(tokens) if tokens else np.empty(0, dtype),
        f"{split}_lengths": np.concatenate(lengths) if lengths else np.empty(0, np.uint64),
        f"{split}_positions": np.array(positions, dtype=np.int64).reshape(-1, 2),
        f"{split}_id_ends": id_ends,
        f"{split}_id_bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8),
    }


def _at_or_after(positions: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """Which documents come at or after `start`, in (task, row) order."""
    task, row = start
    return (positions[:, 0] > task) | ((positions[:, 0] == task) & (positions[:, 1] >= row))


def _summary(path: Path, splits: list[str], starts: dict[str, list[int]]) -> dict[str, dict[str, int]]:
    """Tokens, documents and empty documents per split, counting only documents from the split's start."""
    out = {}
    with np.load(path) as spill:
        for split in splits:
            keep = _at_or_after(spill[f"{split}_positions"], tuple(starts[split]))
            lengths = spill[f"{split}_lengths"][keep]
            out[split] = {"tokens": int(lengths.sum()), "documents": int(np.count_nonzero(lengths)),
                          "empty": int(np.count_nonzero(lengths == 0))}
    return out


# -------------------------------------------------------------------------------- phase 2: writing
def _spilled_documents(spill: str, r: int, split: str, start: tuple[int, int]) -> Iterator[tuple]:
    """(id, tokens, [task, row]) of the documents of range r in `split`, from `start` on (empty ones too)."""
    with np.load(spill_path(spill, r)) as data:
        tokens = data[f"{split}_tokens"]
        lengths = data[f"{split}_lengths"].astype(np.int64)
        positions = data[f"{split}_positions"]
        id_ends = data[f"{split}_id_ends"]
        id_bytes = data[f"{split}_id_bytes"].tobytes()
    ends = np.cumsum(lengths)
    if len(ends) and ends[-1] != len(tokens):
        raise ValueError(f"{spill_path(spill, r)}: {len(tokens)} tokens for documents of {ends[-1]} (a damaged "
                         "spill file); delete it and rerun")
    keep = _at_or_after(positions, start)
    id_start = 0
    for i, end in enumerate(ends.tolist()):
        doc_id = id_bytes[id_start:id_ends[i]].decode("utf-8")
        id_start = int(id_ends[i])
        if keep[i]:
            yield doc_id, tokens[end - lengths[i]:end], positions[i].tolist()


def write_shard(spec: dict[str, Any]) -> dict[str, Any]:
    """Phase 2 task: write shard `spec["index"]` of a split with the local ShardWriter; return its entry."""
    shard_tokens = spec["shard_tokens"]
    first_token, next_shard = spec["index"] * shard_tokens, (spec["index"] + 1) * shard_tokens
    written: list[dict[str, Any]] = []
    empties = spec["empties_before"]

    def on_shard(entry: dict[str, Any]) -> None:
        entry["skipped_empty"] = empties   # the empty documents before the resume point, as the local stage counts
        written.append(entry)

    writer = ShardWriter(Path(spec["out_dir"]), spec["split"], spec["fmt"], shard_tokens, np.dtype(spec["dtype"]),
                         spec["eot_id"], next_index=spec["index"], on_shard=on_shard)
    start = tuple(spec["from"])
    for r, range_start in spec["ranges"]:
        cursor = range_start   # the index, in the split's stream, of the next document's first token
        for doc_id, tokens, position in _spilled_documents(spec["spill"], r, spec["split"], start):
            n = len(tokens)
            if n == 0:
                empties += 1
                continue
            doc_start, cursor = cursor, cursor + n
            if cursor <= first_token:
                continue      # wholly in an earlier shard
            # Up to and including the next shard's first token (not for the last shard): receiving it is
            # what makes the writer write this shard, with that token's place as the resume point.
            stop = n if spec["last"] else min(n, next_shard + 1 - doc_start)
            writer.add(doc_id, tokens[:stop], position, max(0, first_token - doc_start))
            if written:
                return written[0]
    if not spec["last"]:
        raise RuntimeError(f"{spec['split']} shard {spec['index']}: the ranges planned for it end before it does")
    writer.close()   # the last shard of the split: written without a next token, so with no resume point
    return written[0]


# ---------------------------------------------------------------------------------------- the driver
@dataclass
class ShardsOnRay:
    """What the shards stage hands over: its settings, inputs, progress record and journal. `run` fills
    the progress record as the local executor would (each split's shard entries, done, skipped_empty)."""

    out_dir: Path
    fmt: str
    shard_tokens: int
    dtype: np.dtype
    eot_id: int
    files: list[Path]
    tasks: list[tuple[int, int]]
    rule: local.SplitRule
    tokenizer_path: Path
    tokenizer_fingerprint: str
    fingerprint: str                # the stage's (config + inputs): spill files of other settings are stale
    progress: dict[str, Any]
    journal: local.Journal
    splits: list[str]

    def run(self, log, progress_bar: bool) -> ray_cluster.Cluster:
        with ray_cluster.connected() as cluster:
            log(f"shards: {cluster.describe()}")
            todo = [SplitPlan.from_progress(s, self.progress["splits"][s]) for s in self.splits
                    if not self.progress["splits"][s]["done"]]
            if todo:
                summaries = self._encode(todo, cluster, log, progress_bar)
                for plan in todo:
                    plan.lay_out(self.shard_tokens, summaries)
                self._write(todo, cluster, progress_bar)
            for plan in todo:
                self.progress["splits"][plan.name]["stats"] = {"skipped_empty": plan.skipped_empty}
            for s in self.splits:
                self.progress["splits"][s]["done"] = True
        return cluster   # the spill directory goes once the stage has written its manifest

    # ---- phase 1
    def _spill_dir(self, layout: RangeLayout, log) -> Path:
        """The spill directory for this run's settings, kept from an interrupted run with the same ones."""
        spill = self.out_dir / SPILL_DIR
        header = {"fingerprint": self.fingerprint, "splits": self.splits, "ranges": [list(r) for r in layout.ranges]}
        try:
            same = json.loads((spill / "plan.json").read_text(encoding="utf-8")) == header
        except (OSError, ValueError):
            same = False
        if same:
            done = len(list(spill.glob("r*.npz")))
            if done:
                log(f"shards: {done} encoded range(s) kept from an interrupted run")
            return spill
        shutil.rmtree(spill, ignore_errors=True)
        spill.mkdir(parents=True)
        write_json_atomic(spill / "plan.json", header, durable=False)
        return spill

    def _encode(self, todo: list[SplitPlan], cluster, log, progress_bar: bool) -> dict[int, dict[str, Any]]:
        """Phase 1 over the ranges from the earliest resume point on; their counts by range."""
        from tokenizer.progress import Progress

        layout = RangeLayout.of(self.files, self.tasks)
        spill = self._spill_dir(layout, log)
        for plan in todo:   # a range that ends before a split's resume task holds nothing left to write
            plan.ranges = [r for r, (_, stop) in enumerate(layout.ranges) if stop > plan.position[0]]
        needed = sorted(set().union(*(plan.ranges for plan in todo)))
        starts = {s: list(START) for s in self.splits} | {plan.name: list(plan.position) for plan in todo}
        base = {"run": self.fingerprint, "tokenizer": str(self.tokenizer_path), "fingerprint":
                self.tokenizer_fingerprint, "files": [str(p) for p in self.files], "dtype": self.dtype.str,
                "spill": str(spill), "splits": self.splits, "from": starts}
        rule = ray_cluster.import_ray().put(self.rule)   # into the object store once, not once per task
        task = ray_cluster.remote(encode_range)

        def submit(r: int):
            first, stop = layout.ranges[r]
            return task.remote({**base, "range": r, "tasks": [[t, *self.tasks[t]] for t in range(first, stop)]}, rule)

        summaries: dict[int, dict[str, Any]] = {}
        encoded = 0
        with Progress(sum(layout.rows), unit="doc", desc="shards encode", enabled=progress_bar,
                      initial=sum(layout.rows) - sum(layout.rows[r] for r in needed)) as bar:
            for r, result in ray_cluster.as_completed(needed, submit, cluster.window):
                summaries[r] = result["splits"]
                encoded += result["encoded"]
                bar.update(layout.rows[r])
        log(f"shards: {encoded} of {len(needed)} range(s) encoded in this run")
        return summaries

    # ---- phase 2
    def _write(self, todo: list[SplitPlan], cluster, progress_bar: bool) -> None:
        """One task per shard. Entries are journaled in the local stage's order (each split's shards in
        order, val before train) as soon as every shard before them is in, so the journal is always a
        prefix that a resume can trust, and the same lines as the local stage's."""
        from tokenizer.progress import Progress

        base = {"out_dir": str(self.out_dir), "spill": str(self.out_dir / SPILL_DIR), "shard_tokens":
                self.shard_tokens, "fmt": self.fmt, "dtype": self.dtype.str, "eot_id": self.eot_id}
        order = [(plan, k) for plan in todo for k in range(plan.kept, plan.shards)]
        task = ray_cluster.remote(write_shard)

        def submit(i: int):
            plan, k = order[i]
            return task.remote({**base, **plan.shard_task(k, self.shard_tokens)})

        finished: dict[int, dict[str, Any]] = {}
        journaled = 0
        with Progress(len(order), unit="shard", desc="shards write", enabled=progress_bar) as bar:
            for i, entry in ray_cluster.as_completed(range(len(order)), submit, cluster.window):
                finished[i] = entry
                bar.update(1)
                while journaled in finished:
                    split = order[journaled][0].name
                    entry = finished.pop(journaled)
                    self.progress["splits"][split]["shards"].append(entry)
                    self.journal.append(split, entry)
                    journaled += 1
