"""Stage 1, `make data`: fetch documents from a source into local parquet files.

    artifacts/<recipe>/raw/part-00000.parquet ...   columns: text, id, source, <metadata fields>
    artifacts/<recipe>/raw/manifest.json             config, input fingerprint, files + sha256, counts

Sources (recipe `[data] source`): `python-docs` (embedded, offline), `hf` (hub streaming) and
`local` (parquet/jsonl/txt). Every source yields records in a fixed order; this module is the one
place that judges them: a non-string text or a missing id is an error naming the record, empty or
whitespace-only texts are skipped and counted, broken Unicode is repaired to U+FFFD and counted.

Resume. Output is cut into files of `rows_per_file` documents. Each file is written under a
temporary name and renamed when complete; after each rename `_progress.json` records how many
source records were consumed and, for hub streams, `IterableDataset.state_dict()`. A rerun after a
crash keeps the finished files (never fetched again) and continues the stream at the recorded row
(`load_state_dict`, or by skipping rows for local sources). The manifest is written last.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from contract import manifest as mf
from contract.recipe import Recipe
from pipelines.sources.records import SourceError, SourceRecord, decode_bytes, repair_surrogates
from pipelines.stage_cli import stage_main
from tokenizer.atomic_write import publish, temporary_path, write_json_atomic

PROGRESS = "_progress.json"
PART_PATTERN = "part-{:05d}.parquet"
# A parquet row group is the unit of work of the shards stage (one task per row group), so keep it
# small enough to spread over worker processes and to bound memory, big enough to compress well.
ROW_GROUP_ROWS = 256
ROW_GROUP_CHARS = 2_000_000


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
    """A source positioned after `consumed` records; `state()` is what a resume needs (hub streams)."""

    def __init__(self, cfg: dict[str, Any], consumed: int, state: dict | None):
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

            records = local.iter_records(cfg["paths"], cfg["text_field"], cfg["id_field"], cfg["metadata_fields"])
            self.records = itertools.islice(records, consumed, None)
        else:
            from pipelines.sources.hf import HubStream

            self._hub = HubStream(cfg["dataset"], cfg["config"], cfg["split"], cfg["text_field"], cfg["id_field"],
                                  cfg["metadata_fields"], resume_state=state, skip_rows=consumed)
            self.label = cfg["dataset"]
            self.records = iter(self._hub)

    def state(self) -> dict | None:
        return self._hub.state() if self._hub is not None else None


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
            # durable (fsync before the rename): _progress.json (fsynced too) is about to vouch for this
            # file, and a resume trusts every file it lists, so the file must reach the disk first.
            publish(self.tmp, self.path, durable=True)


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


def _new_progress(fp: str) -> dict[str, Any]:
    return {"fingerprint": fp, "files": [], "consumed": 0, "stream_state": None,
            "stats": {"documents": 0, "characters": 0, "skipped_empty": 0, "repaired_documents": 0,
                      "replaced_characters": 0}}


def run(recipe: Recipe, force: bool = False, progress_bar: bool = True, log=print) -> dict[str, Any]:
    """Run the data stage (or skip it when up to date); returns the manifest."""
    cfg = recipe.section("data")
    out_dir = recipe.stage_dir("raw")
    try:
        inputs = input_fingerprint(cfg)
    except SourceError as exc:
        raise DataStageError(str(exc)) from None
    if not force and mf.is_up_to_date(out_dir, cfg, inputs):
        _remove_leftovers(out_dir, progress=True)   # a kill between the manifest and the cleanup
        log(f"data: {out_dir} is up to date (FORCE=1 to redo)")
        return mf.read_manifest(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mf.remove_manifest(out_dir)
    _remove_leftovers(out_dir, progress=False)

    fp = mf.fingerprint({"config": cfg, "inputs": inputs})
    progress_path = out_dir / PROGRESS
    progress = None if force else _read_progress(progress_path, fp)
    if progress is None:  # fresh start: nothing of an older run may survive next to the new files
        for old in out_dir.glob("part-*.parquet"):
            old.unlink()
        progress = _new_progress(fp)
    elif progress["files"]:
        log(f"data: resuming after {len(progress['files'])} finished file(s), {progress['consumed']} records read")

    stats = progress["stats"]
    max_docs, max_chars = cfg["max_documents"], cfg["max_characters"]

    def limit_reached() -> bool:
        return bool((max_docs and stats["documents"] >= max_docs) or (max_chars and stats["characters"] >= max_chars))

    try:
        stream = _Stream(cfg, progress["consumed"], progress["stream_state"])
    except SourceError as exc:
        raise DataStageError(str(exc)) from None

    from tqdm import tqdm

    bar = tqdm(total=max_docs or None, initial=stats["documents"], unit="doc", desc=f"data {stream.label}",
               disable=not progress_bar, dynamic_ncols=True)
    writer: _PartWriter | None = None
    consumed = progress["consumed"]

    def finish_file() -> None:
        nonlocal writer
        assert writer is not None
        writer.close()
        progress["files"].append(writer.path.name)
        progress["consumed"] = consumed
        progress["stream_state"] = stream.state()
        write_json_atomic(progress_path, progress)
        writer = None

    try:
        if not limit_reached():
            for rec in stream.records:
                consumed += 1
                row = _normalize(rec, cfg, stats)
                if row is None:
                    continue
                if writer is None:
                    writer = _PartWriter(out_dir / PART_PATTERN.format(len(progress["files"])))
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
    except SourceError as exc:
        raise DataStageError(str(exc)) from None
    finally:
        bar.close()

    if stats["documents"] == 0:
        raise DataStageError(f"data: source {stream.label!r} produced no non-empty documents ({stats})")
    manifest = {
        "stage": "data",
        "recipe": recipe.name,
        "config": cfg,
        "inputs": inputs,
        "outputs": [mf.output_entry(out_dir / name, out_dir) for name in progress["files"]],
        "stats": stats,
    }
    mf.write_manifest(out_dir, manifest)
    progress_path.unlink(missing_ok=True)
    log(f"data: {stats['documents']} documents, {stats['characters']:,} characters in {len(progress['files'])} "
        f"file(s) -> {out_dir} (skipped empty: {stats['skipped_empty']}, repaired: {stats['repaired_documents']})")
    return manifest


def _remove_leftovers(out_dir: Path, progress: bool) -> None:
    """Delete what a killed run may leave: half-written `*.tmp` files (never trusted, always
    rewritten from the source) and, once the manifest exists, the obsolete _progress.json."""
    if not out_dir.is_dir():
        return
    for tmp in out_dir.glob("*.tmp"):
        tmp.unlink()
    if progress:
        (out_dir / PROGRESS).unlink(missing_ok=True)


def _read_progress(path: Path, fp: str) -> dict[str, Any] | None:
    try:
        progress = mf.read_json(path)
    except (OSError, ValueError):
        return None
    if progress.get("fingerprint") != fp:
        return None
    # every finished file must still be there; otherwise start over rather than guess
    if not all((path.parent / name).is_file() for name in progress["files"]):
        return None
    return progress


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, "make data: fetch documents into artifacts/<recipe>/raw/", (DataStageError,), argv)


if __name__ == "__main__":
    sys.exit(main())
