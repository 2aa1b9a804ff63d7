"""The floors of the house: every import points down (or stays on its own package).

    floor 3  pipelines/ (the stages and their CLIs)   service/ (the tokenisation service, its client, and the
             models behind the OpenAI-compatible API)
    floor 2  train/ (the pretraining loop)
    floor 1  contract/ (recipe, manifests, raw documents, shard format)   model/ (the GPT)
    floor 0  tokenizer/ (a pure library: imports nothing else of the project)
    outside  harness/, bench/, tests/ (not installed; may use every floor)

Imports are read with `ast`, including the ones inside functions (a lazy import is still a dependency),
and relative imports are resolved, so no spelling of an import can slip past.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent

# Which other packages of the project each package may import. Listing them per package, rather than
# numbering floors, also keeps apart packages on the same floor (model never imports contract; the
# service never imports the stages).
ALLOWED: dict[str, set[str]] = {
    "tokenizer": set(),
    "contract": {"tokenizer"},
    "model": {"tokenizer"},  # only tokenizer.atomic_write, to export weights safely
    "train": {"tokenizer", "contract", "model"},
    "pipelines": {"tokenizer", "contract", "model", "train"},
    "service": {"tokenizer", "contract", "model", "train"},  # model + train: to load and run checkpoints
    "harness": {"tokenizer", "contract", "model", "train", "service"},
    "bench": {"tokenizer", "contract", "model", "train", "pipelines", "service", "harness"},
    "tests": {"tokenizer", "contract", "model", "train", "pipelines", "service", "harness", "bench"},
}
RUNTIME = ("tokenizer", "contract", "model", "train", "pipelines", "service")  # what pip installs


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in one file, relative imports resolved."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    package = parts[:-1]  # what `from .` means in this file (for a/__init__.py and a/b.py alike: a)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ..a import b
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def upward_imports(root: Path, allowed: dict[str, set[str]]) -> list[str]:
    """Every import of one project package by another that `allowed` does not permit."""
    bad = []
    for package, may_import in allowed.items():
        for path in sorted((root / package).rglob("*.py")) if (root / package).is_dir() else []:
            for line, module in imported_modules(path, root):
                target = module.split(".")[0]
                if target in allowed and target != package and target not in may_import:
                    bad.append(f"{path.relative_to(root)}:{line} imports {module} ({package} may not import {target})")
    return bad


def test_every_import_points_down():
    assert upward_imports(REPO, ALLOWED) == []


def test_the_rules_themselves_have_no_cycle():
    """A cycle in ALLOWED would let two packages import each other; the floors must be a strict order."""
    order: list[str] = []
    remaining = {p: set(deps) for p, deps in ALLOWED.items()}
    while remaining:
        ready = [p for p, deps in remaining.items() if deps <= set(order)]
        assert ready, f"cycle among {sorted(remaining)}"
        order += sorted(ready)
        for p in ready:
            del remaining[p]
    assert order[0] == "tokenizer"


def test_every_package_has_a_floor():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages <= set(ALLOWED), f"place the new package(s) {sorted(packages - set(ALLOWED))} in ALLOWED"


def test_harnesses_are_not_installed():
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(i.rstrip("*") for i in include) == sorted(RUNTIME)


@pytest.mark.parametrize("source, offender", [
    ("from pipelines import data\n", "tokenizer/core.py:1 imports pipelines"),
    ("def f():\n    import train.trainer\n", "tokenizer/core.py:2 imports train.trainer"),
    ("from contract.recipe import load_recipe\n", "tokenizer/core.py:1 imports contract.recipe"),
])
def test_an_upward_import_is_caught(tmp_path, source, offender):
    """The checker itself: an import that runs back up, however it is written, is reported."""
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "core.py").write_text(source)
    bad = upward_imports(tmp_path, {"tokenizer": set(), "pipelines": {"tokenizer"}, "train": set(),
                                    "contract": set()})
    assert len(bad) == 1 and bad[0].startswith(offender)


def test_a_relative_import_is_resolved_before_it_is_judged(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "hf.py").write_text("from ..train import checkpoint\nfrom .gpt import GPT\n")
    assert imported_modules(tmp_path / "model" / "hf.py", tmp_path) == [(1, "train"), (2, "model.gpt")]
    bad = upward_imports(tmp_path, {"model": set(), "train": {"model"}})
    assert bad == ["model/hf.py:1 imports train (model may not import train)"]
