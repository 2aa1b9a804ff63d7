"""Manifests: how each stage records what it made, from what, and decides whether to run again.

Every stage directory (artifacts/<recipe>/{raw,tokenizer,shards}) ends with a `manifest.json`:

    {"stage": ..., "config": <the recipe section used>, "inputs": <fingerprints of what was read>,
     "outputs": [{"path", "bytes", "sha256"}, ...], ...stage facts...}

The manifest is written LAST, atomically (temporary name + os.replace), so its presence means the
stage finished: a killed stage leaves no manifest and no output that looks complete. A stage is
up to date when its manifest exists, its config and inputs equal the current ones, and every
output still has its recorded size (sizes are cheap to check; sha256 is for `inspect --verify`).
Manifests hold no timestamps, so rerunning a deterministic stage reproduces them byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tokenizer.atomic_write import write_json_atomic

MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """A manifest (or another stage record) that is present but not what the contract says: names file and key."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def fingerprint(obj: Any) -> str:
    """sha256 of the canonical JSON of obj: equal configs give equal fingerprints."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def write_manifest(stage_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Publish a stage's manifest.json: call it LAST, when every output it lists is in place."""
    return write_json_atomic(Path(stage_dir) / MANIFEST, manifest)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def output_entry(path: Path, root: Path) -> dict[str, Any]:
    """{"path": relative to the stage directory, "bytes", "sha256"} for one output file."""
    return {"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def read_manifest(stage_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(stage_dir) / MANIFEST
    try:
        return read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable or half-written by something else: treat as absent, the stage reruns


def manifest_fingerprint(stage_dir: str | os.PathLike) -> str:
    """The input fingerprint a downstream stage records: sha256 of this stage's manifest file."""
    path = Path(stage_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the stage that makes {Path(stage_dir).name}/ first")
    return sha256_file(path)


def is_up_to_date(stage_dir: str | os.PathLike, config: Any, inputs: Any) -> bool:
    """True when the stage's manifest matches this config + inputs and its outputs are intact (by size)."""
    stage_dir = Path(stage_dir)
    manifest = read_manifest(stage_dir)
    if manifest is None:
        return False
    if canonical_json(manifest.get("config")) != canonical_json(config):
        return False
    if canonical_json(manifest.get("inputs")) != canonical_json(inputs):
        return False
    for out in manifest.get("outputs", []):
        p = stage_dir / out["path"]
        if not p.is_file() or p.stat().st_size != out["bytes"]:
            return False
    return True


def remove_manifest(stage_dir: str | os.PathLike) -> None:
    """Called before a stage starts writing, so outputs in progress never sit next to an old manifest."""
    try:
        os.remove(Path(stage_dir) / MANIFEST)
    except FileNotFoundError:
        pass
