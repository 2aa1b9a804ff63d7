"""What the pages find under the artifacts directory: recipes, their stage manifests, tokenizer files.

The pages never take a path from a request. A request names a recipe or a tokenizer by a key that
this module handed out (a directory name under the artifacts root, a file path relative to it), and
the key is looked up among what a fresh scan finds, so `../../etc/passwd` is simply not a key. The
scan is shallow (artifacts/<recipe>/<stage>/[hf/]<file>) and cheap: a few hundred directory entries
even for the 10B-token recipe, whose shards are listed in one directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from contract.manifest import CHECKSUM_KEY, MANIFEST, STAGE_MANIFEST, ManifestError, check_manifest

from .errors import ServiceError

# The stages in the order they run; any other directory with a manifest comes after them, by name.
STAGE_ORDER = ("raw", "tokenizer", "shards", "pretrain", "sft-data", "sft")
# A manifest is a few KB; one larger than this is not something to send to a browser whole.
MAX_MANIFEST_BYTES = 4 * 2**20
# Outputs listed per stage manifest (the raw stage of a hub dataset may list thousands of files).
MAX_LISTED_OUTPUTS = 50
# A fact of a manifest (a top-level value) whose JSON is longer than this is summarised, not shown whole.
MAX_FACT_CHARS = 20_000


def is_tokenizer_file(name: str) -> bool:
    """The file kinds `[tokenizer] use` loads: ours, tiktoken's (plain or gzipped), HF's tokenizer.json."""
    return name.endswith((".ljt.json", ".tiktoken", ".tiktoken.gz")) or name == "tokenizer.json"


def _visible_dirs(path: Path) -> list[Path]:
    """Subdirectories, without hidden ones (locks, stamps) and a killed writer's `*.tmp` leftovers."""
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []
    return [Path(e.path) for e in entries
            if not e.name.startswith(".") and not e.name.endswith(".tmp") and e.is_dir()]


class Artifacts:
    """The artifacts directory (`artifacts/` by default; `--artifacts DIR`), read on every request: a stage
    that finishes while the service runs shows up at the next page load."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()

    # ---- recipes and their stages
    def stage_dirs(self, recipe_dir: Path) -> list[Path]:
        """Stage directories of one recipe that hold a manifest (so the stage finished), in pipeline order."""
        found = [d for d in _visible_dirs(recipe_dir) if (d / MANIFEST).is_file()]
        rank = {name: i for i, name in enumerate(STAGE_ORDER)}
        return sorted(found, key=lambda d: (rank.get(d.name, len(rank)), d.name))

    def recipes(self) -> list[str]:
        """Directories under the root with at least one finished stage."""
        return [d.name for d in _visible_dirs(self.root) if self.stage_dirs(d)]

    def recipe_dir(self, name: str) -> Path:
        """The directory of recipe `name`, or 404 unknown_recipe naming the recipes there are."""
        known = self.recipes()
        if name not in known:
            there = ", ".join(known) if known else "none: run `make shards` first"
            raise ServiceError(404, "unknown_recipe", f"no recipe {name!r} under {self.root} (recipes: {there})")
        return self.root / name

    # ---- tokenizer files
    def tokenizer_files(self) -> list[str]:
        """Tokenizer files under artifacts/<recipe>/<stage>/ and one level below (hf/), as paths relative to
        the root: `demo/tokenizer/tokenizer.ljt.json`, `demo/tokenizer/hf/tokenizer.json`, ..."""
        found = []
        for recipe in _visible_dirs(self.root):
            for stage in _visible_dirs(recipe):
                for folder in (stage, *_visible_dirs(stage)):
                    try:
                        names = sorted(e.name for e in os.scandir(folder) if e.is_file() and is_tokenizer_file(e.name))
                    except OSError:
                        continue
                    found += [(folder / n).relative_to(self.root).as_posix() for n in names]
        return found


def _short_json(value: Any) -> Any:
    """`value`, or a note saying how big it is when it is too big to be worth showing in a page."""
    text = json.dumps(value, ensure_ascii=False)
    return value if len(text) <= MAX_FACT_CHARS else f"({len(text):,} characters of JSON: see the file)"


def _outputs_problem(stage_dir: Path, outputs: list[dict[str, Any]]) -> str | None:
    """The first output that is missing or has another size than recorded (stat only: no hashing here;
    the shards get their sha256 checked one shard at a time, see pages_shards.py)."""
    for out in outputs:
        path = stage_dir / out["path"]
        try:
            size = path.stat().st_size
        except OSError:
            return f"{out['path']} is missing"
        if size != out["bytes"]:
            return f"{out['path']}: {size} bytes, the manifest says {out['bytes']}"
    return None


def stage_summary(artifacts: Artifacts, stage_dir: Path) -> dict[str, Any]:
    """One stage's manifest as the shard browser shows it: its config, inputs and facts, its outputs (how
    many, how big, whether each is present with its recorded size), and whether the manifest passes its
    schema and its own checksum. A broken manifest is reported, never raised: the other stages still show."""
    path = stage_dir / MANIFEST
    summary: dict[str, Any] = {"stage": stage_dir.name, "path": path.relative_to(artifacts.root).as_posix(),
                               "ok": False, "problem": None}
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            summary["problem"] = f"{path}: {size:,} bytes, too large to show here"
            return summary
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:
        summary["problem"] = f"{path}: cannot be read ({exc})"
        return summary
    try:
        check_manifest(manifest, STAGE_MANIFEST, path)
    except ManifestError as exc:
        summary["problem"] = str(exc)
    if not isinstance(manifest, dict):
        return summary
    outputs = manifest.get("outputs") if isinstance(manifest.get("outputs"), list) else []
    if summary["problem"] is None:
        summary["problem"] = _outputs_problem(stage_dir, outputs)
    summary["ok"] = summary["problem"] is None
    summary.update({
        "config": _short_json(manifest.get("config")),
        "inputs": _short_json(manifest.get("inputs")),
        "facts": {k: _short_json(v) for k, v in manifest.items()
                  if k not in ("config", "inputs", "outputs", CHECKSUM_KEY)},
        "checksum": manifest.get(CHECKSUM_KEY),
        "outputs": {
            "files": len(outputs),
            "bytes": sum(o.get("bytes", 0) for o in outputs if isinstance(o, dict) and isinstance(o.get("bytes"), int)),
            "listed": outputs[:MAX_LISTED_OUTPUTS],
        },
    })
    return summary
