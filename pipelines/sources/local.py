"""The `local` source: parquet, jsonl/json and txt files, read through `datasets` streaming.

Going through `datasets.load_dataset(<builder>, data_files=..., streaming=True)` means local files
take the very code path that hub datasets take (the same iterator, the same Arrow conversion), so
what works here works for `hf` too. Files are read one at a time, in the order the recipe lists
them (globs sorted), so the record order is deterministic and every error names its file and row.
Parquet files are streamed one row group at a time (`IterableDataset.reshard`), which bounds the
memory Arrow's read-ahead may take to one row group instead of one file.

Two fallbacks keep bad bytes from killing a run, and are counted by the data stage:
- `txt`: decoded with a counting "replace" handler (invalid UTF-8 -> U+FFFD);
- `jsonl`: Arrow's JSON parser rejects lone-surrogate escapes ("\\ud800") and invalid UTF-8; such a
  file is re-read line by line with Python's json module (which accepts them), resuming after the
  rows already yielded.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from pathlib import Path

from pipelines.sources.records import ReplacementCounter, SourceError, SourceRecord, decode_bytes

BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".txt": "text", ".text": "text"}


def resolve_paths(patterns: list[str]) -> list[Path]:
    """Expand globs (sorted) and check that every file exists and has a known extension."""
    if not patterns:
        raise SourceError("source 'local' needs [data] paths = [\"file.parquet\", \"dir/*.jsonl\", ...]")
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise SourceError(f"[data] paths: pattern {pattern!r} matches no file")
        for m in matches:
            p = Path(m)
            if not p.is_file():
                raise SourceError(f"[data] paths: {p} does not exist or is not a file")
            if p.suffix.lower() not in BUILDERS:
                raise SourceError(f"[data] paths: {p} has unsupported extension (use {', '.join(sorted(BUILDERS))})")
            files.append(p)
    return files


def _check_fields(path: Path, row: dict, text_field: str, id_field: str, metadata_fields: list[str]) -> None:
    wanted = [text_field] + ([id_field] if id_field else []) + list(metadata_fields)
    missing = [f for f in wanted if f not in row]
    if missing:
        raise SourceError(f"{path}: missing column {missing[0]!r} (columns: {', '.join(map(str, row))})")


def _datasets_rows(path: Path) -> Iterator[tuple[dict, int]]:
    from datasets import load_dataset

    builder = BUILDERS[path.suffix.lower()]
    kwargs = {"encoding_errors": ReplacementCounter.name} if builder == "text" else {}
    ds = load_dataset(builder, data_files=[str(path)], split="train", streaming=True, **kwargs)
    if builder == "parquet":
        # One stream shard per row group instead of one per file. Arrow's scanner reads a file ahead
        # in the background as fast as the disk allows; a consumer slower than the disk (ours: it
        # normalises and writes every row) then holds most of the file in memory (measured: +54 MB
        # of Arrow buffers for a 30 MB file). Per row group, read-ahead stops at one row group.
        ds = ds.reshard()
    for row in ds:
        yield row, 0


def _python_json_rows(path: Path, skip: int) -> Iterator[tuple[dict, int]]:
    with open(path, "rb") as f:
        row = 0
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            if row >= skip:
                line, repairs = decode_bytes(raw)
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise SourceError(f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
                yield obj, repairs
            row += 1


def iter_file(path: Path, text_field: str, id_field: str, metadata_fields: list[str]) -> Iterator[SourceRecord]:
    emitted = 0
    builder = BUILDERS[path.suffix.lower()]
    replaced_before = ReplacementCounter.count
    rows: Iterator[tuple[dict, int]] = _datasets_rows(path)
    checked = False
    while True:
        try:
            row, repairs = next(rows)
        except StopIteration:
            return
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError; unreadable files raise OSError
            if builder == "json" and not isinstance(exc, (FileNotFoundError, PermissionError)):
                rows = _python_json_rows(path, skip=emitted)  # lone surrogates / bad bytes: Python's json copes
                continue
            raise SourceError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
        if not checked:
            _check_fields(path, row, text_field, id_field, metadata_fields)
            checked = True
        text = row.get(text_field)
        # The text reader decodes whole blocks, so which line held the invalid bytes is lost; when the
        # file had any, the U+FFFD in a line are its repairs (a genuine U+FFFD there is counted too).
        if builder == "text" and ReplacementCounter.count != replaced_before and isinstance(text, str):
            repairs += text.count("\ufffd")
        yield SourceRecord(
            text=text,
            repairs=repairs,
            id=row.get(id_field) if id_field else f"{path.name}:{emitted}",
            where=f"{path} row {emitted}",
            metadata={k: row.get(k) for k in metadata_fields},
        )
        emitted += 1


def iter_records(paths: list[str], text_field: str, id_field: str,
                 metadata_fields: list[str]) -> Iterator[SourceRecord]:
    for path in resolve_paths(paths):
        yield from iter_file(path, text_field, id_field, metadata_fields)


def fingerprint_inputs(paths: list[str]) -> list[dict]:
    """Cheap identity of the input files (path, size, mtime): a changed file makes the data stage rerun."""
    return [
        {"path": str(p), "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in resolve_paths(paths)
    ]
