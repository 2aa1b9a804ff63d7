"""`make data` on a Ray cluster: each task fetches and converts its own input files; the raw parquet files
and the manifest come out as the local executor writes them.

The local stage reads one stream of records (a hub dataset's files one after the other, the `local`
source's files in order, the embedded corpus), drops empty and duplicate documents, and cuts what is left
into files of `rows_per_file` documents. Which documents land in part-00003.parquet depends on every
record before them (a duplicate id in file 1 shifts everything after it), so the work is split in two:

1. Fetch. The input is cut into *units* the stream is made of: a hub dataset's stream shards (its parquet
   files: `IterableDataset.shard(n, i)` is exactly file i's part of the stream, `datasets` documents it),
   the `local` source's files, or the embedded corpus as one unit. One task per unit reads it with the
   local source code, checks and repairs every record with the local stage's `_normalize`, and writes the
   rows it keeps to a staging file on the shared file system (`raw/_ray/unit-00003.parquet`), with, per
   row, its record number and the running counts of what was skipped or repaired before it.

2. Plan and write. The driver walks the finished units in order, reading only the ids and the counts:
   it drops duplicate ids (the first one kept, the local rule), stops where `max_documents` or
   `max_characters` would stop the local stream, and so knows exactly which rows make each part file.
   Each part file is then written by a task with the local stage's `_PartWriter`, fed the same rows in
   the same order: the same bytes. A part is planned, and its task started, as soon as the units it needs
   are in, so fetching and writing overlap.

The counts in the manifest are the local ones too: a unit's running counts give, for any row, what the
local stream had counted when it reached that row, so a run stopped by a limit in the middle of a unit
counts exactly the records the local stream would have read. A bad record (a non-string text, a missing
id) stops the task's unit there; the driver raises it only if the local stream would have reached it.

Resume. A unit's staging file and its summary (`unit-00003.json`, written last) are kept by a rerun, so
a finished unit is never fetched again; finished part files are journaled (`_ray/parts.jsonl`) and kept
when intact. A unit that raised is fetched again on the next run (its input may have been fixed). The
staging directory goes once the manifest is written: it holds a second copy of the documents meanwhile.

Made-up ids of a hub stream (`id_field = ""`) are numbered across the whole stream ("fineweb-edu:123"),
so they are given by the driver, which knows how many records the earlier units held.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contract import manifest as mf
from pipelines import data as local
from pipelines.executors import ray_cluster
from pipelines.sources.records import SourceError, SourceRecord
from tokenizer.atomic_write import atomic_path, write_json_atomic

STAGING_DIR = "_ray"
PARTS_JOURNAL = "parts.jsonl"
RUNNING_COUNTS = ("skipped_empty", "repaired_documents", "replaced_characters")   # what _normalize counts


# ------------------------------------------------------------------------------------------- units
@dataclass(frozen=True)
class Unit:
    """One piece of the input stream, fetched by one task."""

    index: int
    label: str                   # how messages name it: a file as the recipe lists it, or the stream
    path: str | None = None      # local: the file, absolute (tasks run elsewhere)
    id_label: str | None = None  # local: the file part of made-up ids ("extra.jsonl")
    shards: int = 1              # hf: how many stream shards the dataset has (unit i is shard i)

    def where(self, source: str, record: int, stream_row: int) -> str:
        """The local stage's name for a record, for warnings ("data/a.jsonl row 3", "<dataset> row 12")."""
        if source == "python-docs":
            return f"python-docs document {record}"
        if source == "local":
            return f"{self.label} row {record}"
        return f"{self.label} row {stream_row}"


def list_units(cfg: dict[str, Any], stats: dict[str, int], log) -> list[Unit]:
    """The units of the recipe's source, in stream order (with the local source's warnings and counts)."""
    source = cfg["source"]
    if source == "python-docs":
        return [Unit(0, "python-docs")]
    if source == "local":
        from pipelines.sources import local as local_files

        files, repeats = local_files.resolve_inputs(cfg["paths"])
        stats["repeated_files"] = len(repeats)
        for path in repeats[:local.WARN_LIMIT]:
            log(f"data: warning: {path} is listed more than once in [data] paths; it is read once")
        labels = local_files.id_labels(files)
        return [Unit(i, str(p), str(p.resolve()), labels[p]) for i, p in enumerate(files)]
    stream = _hub_stream(cfg)
    return [Unit(i, cfg["dataset"], shards=stream.ds.num_shards) for i in range(stream.ds.num_shards)]


def _hub_stream(cfg: dict[str, Any]):
    from pipelines.sources.hf import HubStream

    return HubStream(cfg["dataset"], cfg["config"], cfg["split"], cfg["text_field"], cfg["id_field"],
                     cfg["metadata_fields"])


def unit_records(cfg: dict[str, Any], unit: Unit) -> Iterator[SourceRecord]:
    """The records of one unit, read by the local source code."""
    if cfg["source"] == "python-docs":
        from pipelines.sources import python_docs

        for i, d in enumerate(python_docs.iter_documents()):
            yield SourceRecord(text=d.text, id=d.id, where=f"python-docs document {i}")
    elif cfg["source"] == "local":
        from pipelines.sources import local as local_files

        yield from local_files.iter_file(Path(unit.path), cfg["text_field"], cfg["id_field"], cfg["metadata_fields"],
                                         unit.id_label)
    else:
        stream = _hub_stream(cfg)
        # The same stream the local stage reads, narrowed to this unit's file: `shard(n, i)` with n = the
        # number of shards keeps shard i, and the shards concatenated are the stream, in order.
        stream.ds = stream.ds.shard(num_shards=unit.shards, index=unit.index, contiguous=True)
        for record in stream:
            record.where = f"{record.where} (stream shard {unit.index} of {unit.shards})"
            yield record


def made_up_ids(cfg: dict[str, Any]) -> bool:
    """Hub records without an id field get ids numbered across the whole stream: only the driver knows them."""
    return cfg["source"] == "hf" and not cfg["id_field"]


# --------------------------------------------------------------------------------- phase 1: fetching
def unit_paths(staging: str | Path, index: int) -> tuple[Path, Path]:
    return Path(staging) / f"unit-{index:05d}.parquet", Path(staging) / f"unit-{index:05d}.json"


STAGED_SCHEMA = pa.schema([
    ("text", pa.string()), ("id", pa.string()), ("meta", pa.binary()), ("record", pa.int64()), ("chars", pa.int64()),
    *[(name, pa.int64()) for name in RUNNING_COUNTS],
])


def fetch_unit(cfg: dict[str, Any], unit: Unit, staging: str, fingerprint: str) -> dict[str, Any]:
    """The task: read one unit, check every record as the local stage does, stage the rows it keeps.

    Each staged row carries its record number in the unit and the running counts (empty documents skipped,
    documents and characters repaired) up to and including it; the summary has the unit's totals, how
    many records it held, and the error that stopped it, if one did."""
    rows_path, summary_path = unit_paths(staging, unit.index)
    counts = dict.fromkeys(RUNNING_COUNTS, 0)
    columns: dict[str, list] = {name: [] for name in STAGED_SCHEMA.names}
    records, rows, error = 0, 0, None
    with atomic_path(rows_path, durable=False) as tmp, pq.ParquetWriter(tmp, STAGED_SCHEMA, compression="zstd") as out:
        try:
            for records, rec in enumerate(unit_records(cfg, unit), start=1):
                if made_up_ids(cfg):
                    rec.id = ""   # a placeholder that passes the id check; the driver numbers it
                row = local._normalize(rec, cfg, counts)
                if row is None:
                    continue
                text, doc_id = row.pop("text"), row.pop("id")
                del row["source"]
                for name, value in (("text", text), ("id", None if made_up_ids(cfg) else doc_id),
                                    ("meta", pickle.dumps(row, protocol=5)), ("record", records - 1),
                                    ("chars", len(text)), *counts.items()):
                    columns[name].append(value)
                rows += 1
                if len(columns["text"]) >= local.ROW_GROUP_ROWS:
                    out.write_table(pa.table(columns, schema=STAGED_SCHEMA))
                    columns = {name: [] for name in STAGED_SCHEMA.names}
        except (local.DataStageError, SourceError) as exc:
            error = str(exc)   # raised by the driver, if the local stream would get this far
        if columns["text"]:
            out.write_table(pa.table(columns, schema=STAGED_SCHEMA))
    summary = {"fingerprint": fingerprint, "unit": unit.index, "records": records if error is None else None,
               "rows": rows, "totals": counts, "error": error}
    write_json_atomic(summary_path, summary, durable=False)
    return summary


def finished_unit(staging: Path, index: int, fingerprint: str) -> dict[str, Any] | None:
    """The summary of a unit an earlier run fetched, if it finished without error under these settings."""
    rows_path, summary_path = unit_paths(staging, index)
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(summary, dict) and summary.get("fingerprint") == fingerprint and summary.get("error") is None
    return summary if ok and rows_path.is_file() else None


# ------------------------------------------------------------------------------------ phase 2: writing
def write_part(out_dir: str, index: int, pieces: list[tuple[str, np.ndarray, list[str] | None]],
               source: str) -> dict[str, Any]:
    """The task: part file `index`, from the staged rows the plan chose (row numbers per unit, and the ids
    the driver made up, if any), written by the local stage's `_PartWriter`."""
    writer = local._PartWriter(Path(out_dir) / local.PART_PATTERN.format(index))
    try:
        for rows_path, rows, ids in pieces:
            staged = pq.ParquetFile(rows_path)
            wanted = iter(zip(rows.tolist(), ids or [None] * len(rows)))
            row, doc_id = next(wanted, (None, None))
            first = 0
            for g in range(staged.num_row_groups):
                n = staged.metadata.row_group(g).num_rows
                if row is None:
                    break
                if row >= first + n:
                    first += n
                    continue
                table = staged.read_row_group(g, columns=["text", "id", "meta"], use_threads=False)
                texts, stored_ids, metas = (table.column(c).to_pylist() for c in ("text", "id", "meta"))
                while row is not None and row < first + n:
                    i = row - first
                    writer.add({"text": texts[i], "id": doc_id if doc_id is not None else stored_ids[i],
                                "source": source, **pickle.loads(metas[i])})
                    row, doc_id = next(wanted, (None, None))
                first += n
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return mf.output_entry(writer.path, Path(out_dir))


# ------------------------------------------------------------------------------------- the driver
class Plan:
    """The local stage's decisions, replayed over the staged units in order: duplicates, limits, counts,
    and which rows make which part file."""

    def __init__(self, cfg: dict[str, Any], stats: dict[str, int], log):
        self.cfg, self.stats, self.log = cfg, stats, log
        self.seen = local.SeenIds()
        self.stream_rows = 0          # records in the units planned so far (hub: made-up ids and messages)
        self.stopped = False          # a limit was reached: the local stream reads nothing more
        self.pending: list[tuple[str, np.ndarray, list[str] | None]] = []   # rows of the part being planned
        self.pending_rows = 0

    def limit_reached(self) -> bool:
        docs, chars = self.cfg["max_documents"], self.cfg["max_characters"]
        return bool((docs and self.stats["documents"] >= docs) or (chars and self.stats["characters"] >= chars))

    def add_unit(self, unit: Unit, summary: dict[str, Any], staging: Path) -> Iterator[list]:
        """Plan one unit; yield each part file it completes (a list of pieces for write_part)."""
        if self.stopped or self.limit_reached():
            self.stopped = True
            return
        rows_path, _ = unit_paths(staging, unit.index)
        if summary["records"] == 0:   # an input without records: the local stream warns as it passes it
            self.stats["empty_files"] += 1
            if self.stats["empty_files"] <= local.WARN_LIMIT:
                self.log(f"data: warning: {unit.label} holds no records (an empty file); it adds no documents")
        table = pq.read_table(rows_path, columns=["id", "record", "chars", *RUNNING_COUNTS])
        records = table.column("record").to_numpy()
        chars = table.column("chars").to_numpy()
        running = {name: table.column(name).to_numpy() for name in RUNNING_COUNTS}
        ids = table.column("id").to_pylist()
        base = {name: self.stats[name] for name in RUNNING_COUNTS}
        keep: list[int] = []
        keep_ids: list[str] = []
        label = Path(self.cfg["dataset"]).name
        for j, doc_id in enumerate(ids):
            record = int(records[j])
            if doc_id is None:
                doc_id = f"{label}:{self.stream_rows + record}"
            for name in RUNNING_COUNTS:
                self.stats[name] = base[name] + int(running[name][j])
            if not self.seen.add(doc_id):
                self.stats["skipped_duplicates"] += 1
                if self.stats["skipped_duplicates"] <= local.WARN_LIMIT:
                    where = unit.where(self.cfg["source"], record, self.stream_rows + record)
                    self.log(f"data: warning: {where}: duplicate id {doc_id!r}; skipped (the first is kept)")
                continue
            keep.append(j)
            keep_ids.append(doc_id)
            self.stats["documents"] += 1
            self.stats["characters"] += int(chars[j])
            if self.pending_rows + len(keep) >= self.cfg["rows_per_file"]:
                yield self._take(rows_path, keep, keep_ids)
                keep, keep_ids = [], []
            if self.limit_reached():
                self.stopped = True
                break
        if keep:
            self.pending.append(self._piece(rows_path, keep, keep_ids))
            self.pending_rows += len(keep)
        if self.stopped:
            return
        for name in RUNNING_COUNTS:   # the records after the last kept row count too (skipped or repaired)
            self.stats[name] = base[name] + summary["totals"][name]
        if summary["error"] is not None:
            raise local.DataStageError(summary["error"])
        self.stream_rows += summary["records"]

    def _piece(self, rows_path: Path, keep: list[int], keep_ids: list[str]):
        return (str(rows_path), np.array(keep, dtype=np.int64), keep_ids if made_up_ids(self.cfg) else None)

    def _take(self, rows_path: Path, keep: list[int], keep_ids: list[str]) -> list:
        part = [*self.pending, self._piece(rows_path, keep, keep_ids)]
        self.pending, self.pending_rows = [], 0
        return part

    def rest(self) -> list | None:
        """The last, shorter part file, if rows are left."""
        part, self.pending, self.pending_rows = self.pending, [], 0
        return part or None


class PartsJournal:
    """`_ray/parts.jsonl`: one line per part file written, so a rerun keeps the intact ones."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        kept: dict[int, dict[str, Any]] = {}
        try:
            lines = path.read_text(encoding="utf-8").split("\n")[:-1]   # a torn last line is not a line
            if lines and json.loads(lines[0]) == {"fingerprint": fingerprint}:
                for line in lines[1:]:
                    entry = json.loads(line)
                    kept[entry["part"]] = entry["output"]
        except (OSError, ValueError, KeyError, TypeError):
            kept = {}
        self.done = {p: out for p, out in kept.items() if local._part_problem(path.parent.parent, out) is None}
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps({"fingerprint": fingerprint}) + "\n")
            f.writelines(json.dumps({"part": p, "output": out}) + "\n" for p, out in sorted(self.done.items()))

    def append(self, part: int, output: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"part": part, "output": output}) + "\n")
        self.done[part] = output


def fetch_on_ray(cfg: dict[str, Any], out_dir: Path, fingerprint: str, force: bool, log,
                 progress_bar: bool) -> tuple[list[dict[str, Any]], dict[str, int], str]:
    """Run the data stage's work on the cluster. Returns (the part files' manifest entries, in order,
    the stats, the source's label), as the local executor's loop ends with them."""
    from tokenizer.progress import Progress

    out_dir = out_dir.resolve()
    staging = out_dir / STAGING_DIR
    if force:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    for tmp in staging.glob("*.tmp"):
        tmp.unlink()
    stats = local._new_stats()
    try:
        units = list_units(cfg, stats, log)
    except SourceError as exc:
        raise local.DataStageError(str(exc)) from None
    journal = PartsJournal(staging / PARTS_JOURNAL, fingerprint)
    for part in out_dir.glob("part-*.parquet"):   # not journaled: from another run, rewritten if needed
        if part.name not in {Path(out["path"]).name for out in journal.done.values()}:
            part.unlink()
    kept = sum(finished_unit(staging, u.index, fingerprint) is not None for u in units)
    if kept or journal.done:
        log(f"data: resuming: {kept} of {len(units)} unit(s) fetched, {len(journal.done)} part file(s) written")

    label = cfg["dataset"] if cfg["source"] == "hf" else cfg["source"]
    plan = Plan(cfg, stats, log)
    if cfg["source"] == "hf" and Path(cfg["dataset"]).is_dir():   # a local directory: tasks run elsewhere
        cfg = {**cfg, "dataset": str(Path(cfg["dataset"]).resolve())}
    with ray_cluster.connected() as cluster:
        log(f"data: {cluster.describe()}; {len(units)} unit(s) of input")
        with Progress(cfg["max_documents"] or None, unit="doc", desc=f"data {label}", enabled=progress_bar) as bar:
            driver = _Driver(cfg, units, staging, fingerprint, out_dir, journal, plan, bar, cluster.window)
            driver.run()
    log(f"data: {driver.fetched} unit(s) fetched and {driver.written} part file(s) written in this run")
    outputs = [journal.done[p] for p in range(driver.parts)]
    return outputs, stats, label


class _Driver:
    """The loop on the driver: units fetched a window at a time, planned in order, part files written as
    soon as planned, all through one `ray.wait` so that fetching and writing overlap."""

    def __init__(self, cfg, units, staging, fingerprint, out_dir, journal, plan, bar, window):
        self.cfg, self.units, self.staging, self.fingerprint = cfg, units, staging, fingerprint
        self.out_dir, self.journal, self.plan, self.bar, self.window = out_dir, journal, plan, bar, window
        self.ray = ray_cluster.import_ray()
        self.fetch = ray_cluster.remote(fetch_unit)
        self.write = ray_cluster.remote(write_part)
        self.summaries: dict[int, dict[str, Any]] = {}
        self.fetching: dict[Any, int] = {}
        self.writing: dict[Any, int] = {}
        self.next_unit = 0       # the next unit to submit
        self.planned = 0         # units planned so far (in order)
        self.parts = 0           # part files planned so far
        self.fetched = 0         # units fetched and part files written by this run (not kept from an earlier one)
        self.written = 0

    def run(self) -> None:
        while True:
            self._submit_fetches()
            self._plan_ready_units()
            if self.plan.stopped and self.fetching:   # a limit was reached: the rest of the input is not needed
                for ref in self.fetching:
                    self.ray.cancel(ref, force=True)
                self.fetching.clear()
            if not self.fetching and not self.writing:
                break   # every unit is planned (or the plan stopped), every planned part written
            ready, _ = self.ray.wait([*self.fetching, *self.writing], num_returns=1)
            ref = ready[0]
            if ref in self.fetching:
                self.summaries[self.fetching.pop(ref)] = ray_cluster.result_of(ref)
            else:
                self.journal.append(self.writing.pop(ref), ray_cluster.result_of(ref))
        last = self.plan.rest()
        if last:
            self._submit_part(last)
        while self.writing:
            ready, _ = self.ray.wait(list(self.writing), num_returns=1)
            self.journal.append(self.writing.pop(ready[0]), ray_cluster.result_of(ready[0]))

    def _submit_fetches(self) -> None:
        while not self.plan.stopped and self.next_unit < len(self.units) and len(self.fetching) < self.window:
            unit = self.units[self.next_unit]
            summary = finished_unit(self.staging, unit.index, self.fingerprint)
            if summary is not None:
                self.summaries[unit.index] = summary
            else:
                self.fetching[self.fetch.remote(self.cfg, unit, str(self.staging), self.fingerprint)] = unit.index
                self.fetched += 1
            self.next_unit += 1

    def _plan_ready_units(self) -> None:
        while self.planned in self.summaries and not self.plan.stopped:
            unit = self.units[self.planned]
            before = self.plan.stats["documents"]
            for part in self.plan.add_unit(unit, self.summaries.pop(self.planned), self.staging):
                self._submit_part(part)
            self.bar.update(self.plan.stats["documents"] - before)
            self.planned += 1

    def _submit_part(self, pieces: list) -> None:
        index = self.parts
        self.parts += 1
        if index not in self.journal.done:
            self.writing[self.write.remote(str(self.out_dir), index, pieces, self.cfg["source"])] = index
            self.written += 1
