"""Helpers for the data pipeline tests: tiny recipes in temporary directories.

Every recipe written here sets `artifacts_root` to the test's tmp dir, so tests never touch the
repository's artifacts/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_recipe(tmp_path: Path, name: str = "tiny", **sections: dict[str, Any]) -> Path:
    """configs-like TOML file in tmp_path; artifacts go to tmp_path/artifacts/<name>/."""
    lines = [f"name = {toml_value(name)}", f"artifacts_root = {toml_value(str(tmp_path / 'artifacts'))}"]
    for section, values in sections.items():
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]], row_group_size: int = 64) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def file_bytes(directory: Path, patterns: tuple[str, ...] = ("*.npy", "*.arrow", "manifest.json")) -> dict[str, bytes]:
    """{name: content} of the files of a stage directory: equal dicts mean byte-identical output."""
    return {p.name: p.read_bytes() for pattern in patterns for p in sorted(directory.glob(pattern))}
