"""Stage 1, `make data`: fetch documents from a source into local parquet files.

    artifacts/<recipe>/raw/part-00000.parquet ...   columns: text, id, source, <metadata fields>
    artifacts/<recipe>/raw/manifest.json             config, input fingerprint, files + sha256, counts

Sources (recipe `[data] source`): `python-docs` (embedded, offline), `hf` (hub streaming) and
`local` (parquet/jsonl/txt). Every source yields records in a fixed order; this module is the one
place that judges them: a non-string text or a missing id is an error naming the record, empty or
whitespace-only texts are skipped and counted, broken Unicode is repaired to U+FFFD and counted, and
a document whose id was already written is skipped and counted (the first one is kept: `SeenIds`).

Resume. Output is cut into files of `rows_per_file` documents. Each file is written under a
temporary name and renamed when complete; then one line is appended to `_progress.jsonl`: the
file's size and sha256, how many source records were consumed, the counts so far and, for hub
streams, `IterableDataset.state_dict()`. Appending keeps the bookkeeping O(1) per file (rewriting a
growing list after every file would cost O(files^2) for a corpus of thousands). A rerun after a crash
re-checks every recorded file against its size and sha256 and keeps the longest intact prefix: a
damaged file is redone (with every file after it: the stream can only restart where the last intact
file ended), never trusted. It continues the stream at the recorded row (`load_state_dict`, or by
skipping rows for local sources). The manifest is written last.

Executors. `_fetch_here` reads the stream in this process. With `--executor ray` (EXECUTOR=ray) each input
file is fetched by a Ray task and the driver replays this module's decisions over what the tasks staged,
so the part files and the manifest are the same bytes (pipelines/executors/ray_data.py).

Read first: `_fetch_here`, its loop over the stream's records: read a record, `_normalize` it, drop a
repeated id, append it to the part file. Bookkeeping a first reading may skip (marked `# bookkeeping:` below): the
up-to-date check in `run`, resume (`_Progress`, `_keep_intact_prefix`), `_remove_leftovers`, the Ray executor.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contract import manifest as mf
from contract.recipe import Recipe
from pipelines.executors import LOCAL, RAY
from pipelines.sources.records import SourceError, SourceRecord, decode_bytes, repair_surrogates
from pipelines.stage_cli import stage_main
from tokenizer.atomic_write import publish, temporary_path, write_text_atomic

PROGRESS = "_progress.jsonl"
RAY_STAGING = "_ray"            # the Ray executor's staged input and part journal (executors/ray_data.py)
PART_PATTERN = "part-{:05d}.parquet"
# A parquet row group is the unit of work of the shards stage (one task per row group), so keep it
# small enough to spread over worker processes and to bound memory, big enough to compress well.
ROW_GROUP_ROWS = 256
ROW_GROUP_CHARS = 2_000_000
# Warnings name the first few cases of each kind (an empty file, a duplicate id); the manifest counts all.
WARN_LIMIT = 5


class DataStageError(ValueError):
    """Bad input or configuration; the message names the file/row/key."""


# ----------------------------------------------------------------------------------------- sources
def input_fingerprint(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the raw files are made from; a change means the data stage must run again."""
    source = cfg["source"]
    if source == "python-docs":
        from pipelines.sources import python_docs

        module = Path(python_docs.__file__).read_bytes()
        return {
            "source": source,
            "python": sys.version.split()[0],   # the corpus is the running interpreter's stdlib
            "corpus_code_sha256": hashlib.sha256(module).hexdigest(),
        }
    if source == "local":
        from pipelines.sources import local

        return {"source": source, "files": local.fingerprint_inputs(cfg["paths"])}
    return {"source": source, "dataset": cfg["dataset"], "config": cfg["config"], "split": cfg["split"]}


class _Stream:
    """A source positioned after `consumed` records; `state()` is what a resume needs (hub streams).

    Local inputs that hold no records are counted in `stats["empty_files"]` and warned about as the
    stream reaches them, but only at or after the resume point: those before it were counted by the
    run that read them (their count is in the recorded stats)."""

    def __init__(self, cfg: dict[str, Any], consumed: int, state: dict | None, stats: dict[str, int], log):
        source = cfg["source"]
        self._hub = None
        self.label = source
        if source == "python-docs":
            from pipelines.sources import python_docs

            records: Iterator[SourceRecord] = (
                SourceRecord(text=d.text, id=d.id, where=f"python-docs document {i}")
                for i, d in enumerate(python_docs.iter_documents())
            )
            self.records = itertools.islice(records, consumed, None)
        elif source == "local":
            from pipelines.sources import local

            files, repeats = local.resolve_inputs(cfg["paths"])
            stats["repeated_files"] = len(repeats)
            for path in repeats[:WARN_LIMIT]:
                log(f"data: warning: {path} is listed more than once in [data] paths; it is read once")
            produced = 0

            def on_empty(path: Path) -> None:
                if produced >= consumed:
                    stats["empty_files"] += 1
                    if stats["empty_files"] <= WARN_LIMIT:
                        log(f"data: warning: {path} holds no records (an empty file); it adds no documents")

            def counted(records: Iterator[SourceRecord]) -> Iterator[SourceRecord]:
                nonlocal produced
                for rec in records:
                    produced += 1
                    yield rec

            records = local.iter_records(files, cfg["text_field"], cfg["id_field"], cfg["metadata_fields"], on_empty)
            self.records = itertools.islice(counted(records), consumed, None)
        else:
            from pipelines.sources.hf import HubStream

            self._hub = HubStream(cfg["dataset"], cfg["config"], cfg["split"], cfg["text_field"], cfg["id_field"],
                                  cfg["metadata_fields"], resume_state=state, skip_rows=consumed)
            self.label = cfg["dataset"]
            self.records = iter(self._hub)

    def state(self) -> dict | None:
        return self._hub.state() if self._hub is not None else None


# ------------------------------------------------------------------------------------ duplicate ids
class SeenIds:
    """The ids of the documents written so far, for the duplicate check, in about 13 bytes per id.

    A Python set of the id strings would take 100+ bytes per document: over 1 GB for the 9.7M
    documents of FineWeb-Edu's sample-10BT. Here each id is reduced to an 8-byte blake2b digest; the
    digests live in a sorted uint64 array (binary search), the newest in a small set that is merged
    into the array when it reaches 1/16 of the array's size (at least `buffer`). Each merge is
    O(n) (np.insert at searchsorted positions) and the geometric threshold makes them O(log n), so
    adding stays O(1) amortised. Measured for 10M ids: +126 MB (13 bytes/id), +218 MB at the peak of
    a merge (23 bytes/id), ~5 us per id (about what checking the record costs; reading it costs more).
    blake2b rather than the built-in hash(): that one is salted per process, and a collision (below)
    must drop the same document in every run, or reruns would not give the same bytes.

    A digest collision (two different ids, equal digests; probability ~n^2/2^65, about 3e-6 for 10M
    documents) would drop one document as a duplicate; it would be counted like one.
    """

    def __init__(self, buffer: int = 1 << 16):
        self.buffer = buffer
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()

    @staticmethod
    def digest(doc_id: str) -> int:
        data = doc_id.encode("utf-8", "surrogatepass")   # ids are not repaired; any str hashes
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")

    def add(self, doc_id: str) -> bool:
        """Record `doc_id`; False when it was recorded before."""
        key = self.digest(doc_id)
        if key in self._recent:
            return False
        merged = self._sorted
        if merged.size:
            i = int(merged.searchsorted(np.uint64(key)))
            if i < merged.size and int(merged[i]) == key:
                return False
        self._recent.add(key)
        if len(self._recent) >= max(self.buffer, merged.size // 16):
            new = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
            new.sort()
            self._sorted = np.insert(merged, merged.searchsorted(new), new)
            self._recent = set()
        return True

    def __len__(self) -> int:
        return self._sorted.size + len(self._recent)


def _ids_of_finished_files(out_dir: Path, entries: list[dict[str, Any]]) -> SeenIds:
    """The duplicate check's memory after a resume: the ids of the kept files, read from their id column
    (a fraction of the bytes of the texts; ~5 s per million documents, mostly hashing)."""
    seen = SeenIds()
    for entry in entries:
        pf = pq.ParquetFile(out_dir / entry["output"]["path"])
        for group in range(pf.num_row_groups):
            for doc_id in pf.read_row_group(group, columns=["id"]).column("id").to_pylist():
                seen.add(doc_id)
    return seen


# ----------------------------------------------------------------------------------------- writing
class _PartWriter:
    """One raw parquet file, written under a temporary name in row groups, renamed when closed."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, temporary_path(path)
        self.rows: list[dict[str, Any]] = []
        self.chars = 0
        self.count = 0
        self.writer: pq.ParquetWriter | None = None

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.count += 1
        self.chars += len(row["text"])
        if len(self.rows) >= ROW_GROUP_ROWS or self.chars >= ROW_GROUP_CHARS:
            self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        if self.writer is None:
            table = pa.Table.from_pylist(self.rows)
            schema = table.schema
            # text/id/source are always strings, even when a row group happens to be all-null elsewhere
            for name in ("text", "id", "source"):
                schema = schema.set(schema.get_field_index(name), pa.field(name, pa.string()))
            self.schema = schema
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        try:
            table = pa.Table.from_pylist(self.rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataStageError(f"{self.path.name}: a metadata field changed type between rows "
                                 f"(schema from the first rows: {self.schema}): {exc}") from None
        self.writer.write_table(table, row_group_size=len(self.rows))
        self.rows, self.chars = [], 0

    def close(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
            # durable (fsync before the rename): a power cut right after the progress record would
            # otherwise cost this file (the resume's checksum would catch it, and it would be fetched again)
            publish(self.tmp, self.path, durable=True)

    def abort(self) -> None:
        """The run failed: drop the half-written file (a `*.tmp` is never trusted anyway, but leave none)."""
        if self.writer is not None:
            try:
                self.writer.close()
            except (OSError, pa.ArrowException):
                pass   # it is deleted next; whatever the close met does not matter
        self.tmp.unlink(missing_ok=True)


def _normalize(rec: SourceRecord, cfg: dict[str, Any], stats: dict[str, int]) -> dict[str, Any] | None:
    """Check and repair one record -> a raw row, or None when it is skipped (counted in stats)."""
    text = rec.text
    if isinstance(text, (bytes, bytearray)):
        text, n = decode_bytes(bytes(text))
        if n:
            stats["repaired_documents"] += 1
            stats["replaced_characters"] += n
    if not isinstance(text, str):
        kind = "missing (null)" if text is None else f"a {type(text).__name__}"
        raise DataStageError(f"{rec.where}: field {cfg['text_field']!r} must be a string, got {kind}")
    text, n = repair_surrogates(text)
    n += rec.repairs
    if n:
        stats["repaired_documents"] += 1
        stats["replaced_characters"] += n
    if not text.strip():
        stats["skipped_empty"] += 1
        return None
    if rec.id is None or isinstance(rec.id, (dict, list, bytes)):
        raise DataStageError(f"{rec.where}: id field {cfg['id_field']!r} must be a string or number, got {rec.id!r}")
    row = {"text": text, "id": str(rec.id), "source": cfg["source"]}
    for key, value in rec.metadata.items():
        row[key] = value
    return row


# ----------------------------------------------------------------------------------------- progress
def _new_stats() -> dict[str, int]:
    return {"documents": 0, "characters": 0, "skipped_empty": 0, "repaired_documents": 0, "replaced_characters": 0,
            "skipped_duplicates": 0, "empty_files": 0, "repeated_files": 0}


class _Progress:
    """`_progress.jsonl`: a header line `{"fingerprint": ...}`, then one line per finished file:

        {"output": {"path", "bytes", "sha256"}, "consumed": <records read>, "stream_state": ..., "stats": {...}}

    Each line is the complete resume point after its file, so any prefix of the lines is a valid record,
    and a line torn by a crash (the last one) is simply not there. Lines are appended and fsynced: the
    cost per file is constant however many files came before."""

    def __init__(self, path: Path, fingerprint: str, entries: list[dict[str, Any]]):
        self.path, self.fingerprint, self.entries = path, fingerprint, entries

    @classmethod
    def start(cls, path: Path, fingerprint: str, entries: list[dict[str, Any]] | None = None) -> _Progress:
        """A new record holding `entries` (none: a fresh run); written whole, atomically."""
        entries = entries or []
        lines = [{"fingerprint": fingerprint}, *entries]
        write_text_atomic(path, "".join(_json_line(x) for x in lines))
        return cls(path, fingerprint, entries)

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> _Progress | None:
        """The recorded progress of an interrupted run of this very config, or None."""
        header, entries = _read_progress_lines(path)
        if header.get("fingerprint") != fingerprint:
            return None
        return cls(path, fingerprint, entries)

    def append(self, entry: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(_json_line(entry))
            f.flush()
            os.fsync(f.fileno())
        self.entries.append(entry)

    def last(self, key: str, default: Any) -> Any:
        return self.entries[-1][key] if self.entries else default


def _read_progress_lines(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, entries) of a progress record; ({}, []) when there is none or it is unreadable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0]) if lines else {}
    except (OSError, ValueError):
        return {}, []
    if not isinstance(header, dict):
        return {}, []
    entries = []
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except ValueError:
            break   # torn by a crash while appending: the record ends before it
        if not _is_progress_entry(entry):
            break   # garbled some other way: the same, it only costs the files from here on
        entries.append(entry)
    return header, entries


def _is_progress_entry(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("output"), dict):
        return False
    out = entry["output"]
    return (isinstance(out.get("path"), str) and isinstance(out.get("bytes"), int)
            and isinstance(out.get("sha256"), str) and isinstance(entry.get("consumed"), int)
            and isinstance(entry.get("stats"), dict) and "stream_state" in entry)


def recorded_files(out_dir: Path) -> list[dict[str, Any]]:
    """The progress lines of the finished files of an interrupted (or running) data stage, oldest first."""
    return _read_progress_lines(Path(out_dir) / PROGRESS)[1]


def _json_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n"


def _part_problem(out_dir: Path, output: dict[str, Any]) -> str | None:
    """Why a finished file no longer is the one its progress line recorded, or None when it is."""
    path = out_dir / output["path"]
    if not path.is_file():
        return "missing"
    if path.stat().st_size != output["bytes"]:
        return f"{path.stat().st_size} bytes, {output['bytes']} recorded"
    if mf.sha256_file(path) != output["sha256"]:
        return "sha256 differs from the one recorded"
    return None


def _keep_intact_prefix(progress: _Progress, out_dir: Path, log) -> _Progress:
    """Check each recorded file (size, then sha256); keep those before the first damaged one, delete the
    rest (and any part file the record does not list), and rewrite the record if it shrank."""
    keep = []
    for entry in progress.entries:
        problem = _part_problem(out_dir, entry["output"])
        if problem:
            dropped = len(progress.entries) - len(keep)
            log(f"data: {entry['output']['path']} is damaged ({problem}): redoing it"
                + (f" and the {dropped - 1} file(s) after it" if dropped > 1 else ""))
            break
        keep.append(entry)
    listed = {e["output"]["path"] for e in keep}
    for part in out_dir.glob("part-*.parquet"):
        if part.name not in listed:
            part.unlink()
    if len(keep) == len(progress.entries):
        return progress
    return _Progress.start(progress.path, progress.fingerprint, keep)


def run(recipe: Recipe, force: bool = False, progress_bar: bool = True, log=print,
        executor: str = LOCAL) -> dict[str, Any]:
    """Run the data stage (or skip it when up to date); returns the manifest."""
    cfg = recipe.section("data")
    out_dir = recipe.stage_dir("raw")
    try:
        inputs = input_fingerprint(cfg)
    except SourceError as exc:
        raise DataStageError(str(exc)) from None
    # bookkeeping: skip the stage when its manifest says it is up to date, else say why it reruns
    fresh = mf.Freshness("forced") if force else mf.is_up_to_date(out_dir, cfg, inputs)
    if fresh:
        _remove_leftovers(out_dir, progress=True)   # a kill between the manifest and the cleanup
        log(f"data: {out_dir} is up to date (FORCE=1 to redo)")
        return mf.read_manifest(out_dir)
    if fresh.changed:   # say why the documents are about to be replaced
        log(f"data: {fresh.reason}: rebuilding {out_dir}")
    if executor == RAY:   # before anything is changed: Ray is installed, the cluster answers
        from pipelines.executors.ray_cluster import preflight

        preflight()
    out_dir.mkdir(parents=True, exist_ok=True)
    mf.remove_manifest(out_dir)
    _remove_leftovers(out_dir, progress=False)

    fp = mf.fingerprint({"config": cfg, "inputs": inputs})
    if executor == RAY:   # the same files from tasks on a cluster, each fetching its own input files
        from pipelines.executors.ray_data import fetch_on_ray

        outputs, stats, label = fetch_on_ray(cfg, out_dir, fp, force, log, progress_bar)
    else:
        outputs, stats, label = _fetch_here(cfg, out_dir, fp, force, log, progress_bar)

    for kind, what in (("empty_files", "input file(s) held no records"),
                       ("skipped_duplicates", "document(s) skipped for an id already written")):
        if stats[kind] > WARN_LIMIT:
            log(f"data: warning: {stats[kind]} {what} in all (the first {WARN_LIMIT} are named above)")
    if stats["documents"] == 0:
        raise DataStageError(f"data: source {label!r} produced no non-empty documents ({stats})")
    manifest = {
        "stage": "data",
        "recipe": recipe.name,
        "config": cfg,
        "inputs": inputs,
        "outputs": outputs,
        "stats": stats,
    }
    mf.write_manifest(out_dir, manifest)
    _remove_leftovers(out_dir, progress=True)   # the progress records: both executors'
    log(f"data: {stats['documents']} documents, {stats['characters']:,} characters in {len(outputs)} "
        f"file(s) -> {out_dir} (skipped empty: {stats['skipped_empty']}, repaired: {stats['repaired_documents']})")
    return manifest


def _fetch_here(cfg: dict[str, Any], out_dir: Path, fp: str, force: bool, log,
                progress_bar: bool) -> tuple[list[dict[str, Any]], dict[str, int], str]:
    """The local executor: read the stream in this process, write the part files as they fill.
    Returns the part files' manifest entries in order, the stats, and the source's label."""
    # bookkeeping: resume after the files a killed run finished (a fresh start removes an older run's files)
    progress_path = out_dir / PROGRESS
    progress = None if force else _Progress.load(progress_path, fp)
    if progress is None:  # fresh start: nothing of an older run may survive next to the new files
        for old in out_dir.glob("part-*.parquet"):
            old.unlink()
        shutil.rmtree(out_dir / RAY_STAGING, ignore_errors=True)
        progress = _Progress.start(progress_path, fp)
    else:
        progress = _keep_intact_prefix(progress, out_dir, log)
        if progress.entries:
            log(f"data: resuming after {len(progress.entries)} finished file(s), "
                f"{progress.last('consumed', 0)} records read")

    stats = {**_new_stats(), **progress.last("stats", {})}
    seen_ids = _ids_of_finished_files(out_dir, progress.entries)
    consumed = progress.last("consumed", 0)
    max_docs, max_chars = cfg["max_documents"], cfg["max_characters"]

    def limit_reached() -> bool:
        return bool((max_docs and stats["documents"] >= max_docs) or (max_chars and stats["characters"] >= max_chars))

    try:
        stream = _Stream(cfg, consumed, progress.last("stream_state", None), stats, log)
    except SourceError as exc:
        raise DataStageError(str(exc)) from None

    from tokenizer.progress import Progress  # a bar on a terminal, a line now and then in a log

    bar = Progress(max_docs or None, initial=stats["documents"], unit="doc", desc=f"data {stream.label}",
                   enabled=progress_bar)
    writer: _PartWriter | None = None

    def finish_file() -> None:  # bookkeeping: record the finished file, so that a rerun resumes after it
        nonlocal writer
        assert writer is not None
        writer.close()
        progress.append({"output": mf.output_entry(writer.path, out_dir), "consumed": consumed,
                         "stream_state": stream.state(), "stats": dict(stats)})
        writer = None

    try:
        if not limit_reached():
            for rec in stream.records:
                consumed += 1
                row = _normalize(rec, cfg, stats)
                if row is None:
                    continue
                if not seen_ids.add(row["id"]):
                    stats["skipped_duplicates"] += 1
                    if stats["skipped_duplicates"] <= WARN_LIMIT:
                        log(f"data: warning: {rec.where}: duplicate id {row['id']!r}; skipped (the first is kept)")
                    continue
                if writer is None:
                    writer = _PartWriter(out_dir / PART_PATTERN.format(len(progress.entries)))
                writer.add(row)
                stats["documents"] += 1
                stats["characters"] += len(row["text"])
                bar.update(1)
                if stats["documents"] % 256 == 0:
                    bar.set_postfix(chars=f"{stats['characters'] / 1e6:.1f}M")
                if writer.count >= cfg["rows_per_file"]:
                    finish_file()
                if limit_reached():
                    break
        if writer is not None:
            finish_file()
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if isinstance(exc, SourceError):
            raise DataStageError(str(exc)) from None
        raise
    finally:
        bar.close()

    return [entry["output"] for entry in progress.entries], stats, stream.label


def _remove_leftovers(out_dir: Path, progress: bool) -> None:
    """Delete what a killed run may leave: half-written `*.tmp` files (never trusted, always
    rewritten from the source) and, once the manifest exists, the obsolete progress record."""
    if not out_dir.is_dir():
        return
    for tmp in out_dir.glob("*.tmp"):
        tmp.unlink()
    if progress:
        (out_dir / PROGRESS).unlink(missing_ok=True)
        shutil.rmtree(out_dir / RAY_STAGING, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, "make data: fetch documents into artifacts/<recipe>/raw/", (DataStageError,), argv,
                      stage="data", stage_dir="raw", prog="python -m pipelines.data")


if __name__ == "__main__":
    # Run as `python -m pipelines.data`, this file is `__main__`, and a second copy of it is what other modules
    # import as `pipelines.data` (the Ray executor raises that copy's DataStageError): use that copy's main,
    # so there is one DataStageError and a bad input stays one `error:` line.
    from pipelines.data import main as imported_main

    sys.exit(imported_main())
