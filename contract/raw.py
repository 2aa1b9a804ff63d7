"""The raw documents contract: what `make data` leaves in artifacts/<recipe>/raw/ for the stages after it.

    part-00000.parquet ...   one row per document, columns text (str), id (str), source (str) and the
                             recipe's metadata fields; small row groups, so a reader holds one at a time
    manifest.json            the data stage's manifest; its `outputs` list the parquet files IN ORDER

The order of the documents is part of the contract: the tokenizer stage holds out the last documents
and the shards stage numbers positions by (row group, row), so both read the files in manifest order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from contract import manifest as mf

# raw/manifest.json as its readers use it: the outputs in order, and the counts the data stage reports.
RAW_MANIFEST = {
    **mf.STAGE_MANIFEST,
    "stats": {"documents": int, "characters": int, "skipped_empty": int, "repaired_documents": int,
              "replaced_characters": int},
}


def raw_files(raw_dir: Path) -> list[Path]:
    """The raw parquet files in order, from the data stage's manifest (which must exist and be valid)."""
    manifest = mf.read_manifest(raw_dir, RAW_MANIFEST)
    if manifest is None:
        raise FileNotFoundError(f"{raw_dir}/manifest.json is missing: run `make data` first")
    return [raw_dir / out["path"] for out in manifest["outputs"]]


def iter_raw_documents(raw_dir: Path, start: int = 0) -> Iterator[tuple[str, str]]:
    """(id, text) of the raw documents in order, from document number `start` on.

    Read one row group at a time (bounded memory: the data stage keeps row groups small). The
    parquet footers give every row group's row count, so the documents before `start` are
    skipped without reading them: the tokenizer report's held-out tail of a 10B-token corpus
    costs a few footers, not a pass over every document.
    """
    for path in raw_files(raw_dir):
        pf = pq.ParquetFile(path)
        for group in range(pf.num_row_groups):
            rows = pf.metadata.row_group(group).num_rows
            if start >= rows:
                start -= rows
                continue
            table = pf.read_row_group(group, columns=["id", "text"], use_threads=False)
            ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
            yield from zip(ids[start:], texts[start:])
            start = 0


def count_raw_documents(raw_dir: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in raw_files(raw_dir))
