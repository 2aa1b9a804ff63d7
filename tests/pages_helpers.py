"""For the tests of the web pages (tests/test_pages_*.py): a small demo-like project made by the real stages,
copies of it to damage, and where screenshots go.

The project is the demo recipe in miniature: the embedded corpus (300 documents), a 1,024-token BPE learnt
on it, and shards of 20,000 tokens, so that long documents run across shard boundaries. It is built once per
test process (~2 s) and only read; tests that damage it work on a copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline_helpers import write_recipe

from pipelines import data, learn_tokenizer, shards

NAME = "demo"
SECTIONS = {
    "data": {"source": "python-docs", "max_documents": 300, "rows_per_file": 100},
    "tokenizer": {"vocab_size": 1024, "max_characters": 300_000, "heldout_documents": 10},
    "shards": {"shard_tokens": 20_000, "val_documents": 10, "workers": 1},
}
# Set to a directory (e.g. docs/img) to keep the screenshots the page tests take; without it they are
# written to the test's temporary directory, so a plain test run never touches the repository.
SCREENSHOTS_ENV = "LLM_JOURNEY_SCREENSHOTS"

_BUILT: dict[str, Path] = {}


def demo_project(tmp_path_factory) -> Path:
    """The project root: root/artifacts/demo/{raw,tokenizer,shards} and root/demo.toml. Do not modify it."""
    if "root" not in _BUILT:
        root = tmp_path_factory.mktemp("pages-project")
        recipe = write_recipe(root, name=NAME, **SECTIONS)
        for stage in (data, learn_tokenizer, shards):
            assert stage.main(["--config", str(recipe), "--no-progress"]) == 0
        _BUILT["root"] = root
    return _BUILT["root"]


def copy_recipe(project: Path, artifacts: Path, name: str) -> Path:
    """artifacts/<name>/: a copy of the demo recipe's stages (shard manifests name their tokenizer by a
    relative path, so a copy under another name reads like the original)."""
    target = artifacts / name
    shutil.copytree(project / "artifacts" / NAME, target)
    return target


def flip_last_byte(path: Path) -> None:
    """Damage a file in place, keeping its size: only a sha256 finds this."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def screenshot_dir(tmp_path_factory) -> Path:
    where = os.environ.get(SCREENSHOTS_ENV)
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
