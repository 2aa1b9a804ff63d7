"""Helpers for the tests of the data stages' failure handling: a tiny project built once through the
stage commands, copied per test (so each test may damage its copy), and the real command line.

Copies keep the recipe's name, so their manifests are byte-identical to the original's until a test
changes something: "repaired" can be checked as "the same bytes as before the damage".
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from pipeline_helpers import file_bytes, write_recipe

from pipelines import data, learn_tokenizer, shards

REPO = Path(__file__).resolve().parent.parent
NAME = "mini"
SECTIONS = {
    "data": {"source": "python-docs", "max_documents": 300, "rows_per_file": 100},
    "tokenizer": {"vocab_size": 300, "max_characters": 50_000, "heldout_documents": 10},
    "shards": {"shard_tokens": 20_000, "val_documents": 10, "workers": 1},
}
SHARD_PATTERNS = ("*.npy", "*.arrow", "manifest.json")


def recipe_in(root: Path, **shards_cfg) -> Path:
    """The tiny recipe, with its artifacts under root/artifacts/mini/."""
    return write_recipe(root, name=NAME, **{**SECTIONS, "shards": {**SECTIONS["shards"], **shards_cfg}})


def build(root: Path, stages=(data, learn_tokenizer, shards)) -> Path:
    recipe = recipe_in(root)
    for stage in stages:
        assert stage.main(["--config", str(recipe), "--no-progress"]) == 0
    return recipe


_BUILT: dict[str, Path] = {}


def original_project(tmp_path_factory) -> Path:
    """The tiny project with all three stages done, built once per test process and shared by the
    modules that use it: tests only read it, and damage their own copies (copy_project)."""
    if "root" not in _BUILT:
        root = tmp_path_factory.mktemp("stage-project")
        build(root)
        _BUILT["root"] = root
    return _BUILT["root"]


def copy_project(original: Path, root: Path, **shards_cfg) -> Path:
    """A copy of original's artifacts under root, with its own recipe file (same name, same settings)."""
    shutil.copytree(original / "artifacts", root / "artifacts", symlinks=True)
    return recipe_in(root, **shards_cfg)


def stage_dir(root: Path, stage: str) -> Path:
    return root / "artifacts" / NAME / stage


def shard_bytes(root: Path) -> dict[str, bytes]:
    return file_bytes(stage_dir(root, "shards"), SHARD_PATTERNS)


def error_line(err: str) -> str:
    """The one line a failed command prints: exactly one, starting with `error:`, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def python_m(module: str, *args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """`python -m module args...` run from the repository, as a user types it."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kwargs)
