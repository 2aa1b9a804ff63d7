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
  rows already yielded. The fallback is taken at most once per file: what Python's reader rejects
  (a line that is not JSON, or not an object) is the file's verdict, reported with its line number.

Inputs that hold nothing are not errors here: a file without records (0 bytes, a zero-row parquet,
a jsonl of blank lines) yields no record and is reported through `on_empty`, and a file listed
twice (two patterns, or two spellings of one path) is read once (`resolve_inputs`). The data stage
decides what that means for the run (warnings, counts in the manifest).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from pipelines.sources.records import (
    ReplacementCounter,
    SourceError,
    SourceRecord,
    decode_bytes,
    expand_file_patterns,
)

BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".txt": "text", ".text": "text"}
# Rows per Arrow batch when streaming a parquet row group. Left unset, datasets takes the row group's own
# row count as the batch size, and a zero-row file or row group then fails ("BatchSize must be greater
# than 0") instead of yielding nothing. Row groups above this size come in several batches: less memory.
PARQUET_BATCH_ROWS = 1024
# The json and parquet builders log "Failed to load JSON from file ..." before they raise. iter_file
# reports every failure itself, in one line, or recovers from it (the fallback reader): their lines are noise.
_BUILDER_LOGGERS = ("datasets.packaged_modules.json.json", "datasets.packaged_modules.parquet.parquet")


def resolve_inputs(patterns: list[str]) -> tuple[list[Path], list[Path]]:
    """Expand globs (sorted), check that every file exists and has a known extension -> (files, repeats).

    A file matched more than once (by two patterns, or by two spellings of its path) is read once, at its
    first listing; `repeats` are the later listings, for the stage to warn about. Reading it twice would
    only produce documents whose ids were already written."""
    if not patterns:
        raise SourceError("source 'local' needs [data] paths = [\"file.parquet\", \"dir/*.jsonl\", ...]")
    files: list[Path] = []
    repeats: list[Path] = []
    seen: set[Path] = set()
    unsupported = f" has unsupported extension (use {', '.join(sorted(BUILDERS))})"
    for p in expand_file_patterns(patterns, "data", BUILDERS, unsupported):
        if p.resolve() in seen:
            repeats.append(p)
            continue
        seen.add(p.resolve())
        files.append(p)
    return files, repeats


def resolve_paths(patterns: list[str]) -> list[Path]:
    """The files to read, each once, in order."""
    return resolve_inputs(patterns)[0]


def id_labels(files: list[Path]) -> dict[Path, str]:
    """The file part of made-up ids ("extra.jsonl:12"): the file name, which stays the same wherever the
    data is moved, unless two inputs share it (data/2023/part.jsonl, data/2024/part.jsonl); those get
    their path as listed, so made-up ids never collide (a collision would drop documents as duplicates)."""
    names = Counter(p.name for p in files)
    return {p: p.name if names[p.name] == 1 else p.as_posix() for p in files}


def _check_fields(path: Path, row: dict, text_field: str, id_field: str, metadata_fields: list[str]) -> None:
    wanted = [text_field] + ([id_field] if id_field else []) + list(metadata_fields)
    missing = [f for f in wanted if f not in row]
    if missing:
        raise SourceError(f"{path}: missing column {missing[0]!r} (columns: {', '.join(map(str, row))})")


def _datasets_rows(path: Path) -> Iterator[tuple[dict, int]]:
    from datasets import load_dataset

    for name in _BUILDER_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    builder = BUILDERS[path.suffix.lower()]
    kwargs: dict = {"encoding_errors": ReplacementCounter.name} if builder == "text" else {}
    if builder == "parquet":
        kwargs["batch_size"] = PARQUET_BATCH_ROWS
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


def _falls_back(builder: str, exc: Exception) -> bool:
    """May Python's line reader succeed where Arrow failed? For JSON lines that Arrow rejects for their
    bytes (lone surrogates, invalid UTF-8); not for a file that cannot be opened at all."""
    return builder == "json" and not isinstance(exc, (FileNotFoundError, PermissionError))


def _cannot_read(path: Path, exc: Exception) -> SourceError:
    # an OSError's own text repeats the path ("[Errno 13] Permission denied: '/data/a.jsonl'"): say it once
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
    return SourceError(f"{path}: cannot be read ({why})")


def iter_file(path: Path, text_field: str, id_field: str, metadata_fields: list[str], id_label: str | None = None,
              on_empty: Callable[[Path], None] | None = None) -> Iterator[SourceRecord]:
    """The records of one file, in order; `on_empty(path)` when it holds none."""
    label = id_label or path.name
    emitted = 0
    builder = BUILDERS[path.suffix.lower()]
    replaced_before = ReplacementCounter.count
    try:
        # 0 bytes hold no record in any format; datasets' json builder would crash on them
        # ("generator raised StopIteration" while it infers the columns from a first batch).
        size = path.stat().st_size
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    rows: Iterator[tuple[dict, int]] = _datasets_rows(path) if size else iter(())
    fell_back = False
    checked = False
    while True:
        try:
            row, repairs = next(rows)
        except StopIteration:
            break
        except SourceError:
            raise   # the fallback reader's verdict on a line: final (retrying it would spin forever)
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError; unreadable files raise OSError
            if not fell_back and _falls_back(builder, exc):
                fell_back = True   # once per file: a second failure is reported, never retried
                rows = _python_json_rows(path, skip=emitted)
                continue
            raise _cannot_read(path, exc) from None
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
            id=row.get(id_field) if id_field else f"{label}:{emitted}",
            where=f"{path} row {emitted}",
            metadata={k: row.get(k) for k in metadata_fields},
        )
        emitted += 1
    if emitted == 0 and on_empty is not None:
        on_empty(path)


def iter_records(files: list[Path], text_field: str, id_field: str, metadata_fields: list[str],
                 on_empty: Callable[[Path], None] | None = None) -> Iterator[SourceRecord]:
    """The records of `files` (from resolve_inputs) in order, file after file."""
    labels = id_labels(files)
    for path in files:
        yield from iter_file(path, text_field, id_field, metadata_fields, labels[path], on_empty)


def fingerprint_inputs(paths: list[str]) -> list[dict]:
    """Cheap identity of the input files (path, size, mtime): a changed file makes the data stage rerun."""
    return [
        {"path": str(p), "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in resolve_paths(paths)
    ]
