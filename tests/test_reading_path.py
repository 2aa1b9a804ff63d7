"""The reading path stays true: README's "A reading path" names functions that exist, every stage's main
module says what to read first and marks its bookkeeping, every fast module points to its reference, and the
facts a learner cross-checks agree with each other (the demo's model is the `tiny` preset, its time is stated
one way, the schedule lives with the optimiser, FLOPs are counted in one place).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
RUNTIME = ("tokenizer", "contract", "model", "train", "pipelines", "service")

# Each stage's main module: it must say what to read first, and mark what a first reading may skip.
STAGE_MODULES = ("pipelines/data.py", "pipelines/learn_tokenizer.py", "pipelines/shards.py", "pipelines/pretrain.py",
                 "train/trainer.py", "contract/shard_format.py")
# Fast module -> the reference it must name (tests/test_reference_bpe.py, test_reference_attention.py pin them).
REFERENCES = {
    "tokenizer/bpe.py": "reference_bpe.py `merge_piece`",
    "tokenizer/merge_batch.py": "reference_bpe.py `merge_piece`",
    "tokenizer/learn_bpe.py": "reference_bpe.py `train_merges`",
    "tokenizer/core.py": "reference_bpe.py `ReferenceTokenizer`",
    "tokenizer/pretokenize.py": "reference_bpe.py `ReferenceTokenizer.train`",
    "model/gpt.py": "`explicit_attention`",
}


def section(title: str) -> str:
    parts = README.split(f"\n## {title}\n", 1)
    assert len(parts) == 2, f"README has no section '## {title}'"
    return parts[1].split("\n## ", 1)[0]


def defined_names(path: Path) -> set[str]:
    """Top-level functions and classes of a module, and Class.method for their methods."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            methods = [m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
            names |= {f"{node.name}.{m.name}" for m in methods}
    return names


def named_functions(text: str, default: str | None = None) -> list[tuple[str, str]]:
    """(file, name) for every `name` in text, each belonging to the last path.py mentioned before it."""
    found, current = [], default
    for path, name in re.findall(r"(?<![\w/])((?:[a-z_]+/)+[a-z_]+\.py)|`([A-Za-z_][\w.]*)`", text):
        if path:
            current = path
        elif current and not name.endswith(".py"):
            found.append((current, name))
    return found


def test_reading_path_names_functions_that_exist():
    text = section("A reading path")
    rows = [line for line in text.splitlines() if line.startswith("| ") and ".py" in line]
    assert len(rows) >= 11, "the reading path (steps 2-6) and the bookkeeping table"
    pairs = [pair for row in rows for pair in named_functions(row)]
    assert len(pairs) >= 30
    missing = [f"{path}: {name}" for path, name in pairs if name not in defined_names(REPO / path)]
    assert not missing, f"README's reading path names what does not exist: {missing}"
    steps = [row.split("|")[2].strip() for row in rows[:5]]
    assert steps == ["the tokenizer, plainly", "the fast tokenizer", "shards", "the model", "the training step"]


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_stage_modules_say_what_to_read_first_and_mark_bookkeeping(module):
    path = REPO / module
    source = path.read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    assert "Read first:" in doc, f"{module}: its docstring says nothing to read first"
    first = doc.split("Read first:", 1)[1].split("\n\n", 1)[0]
    names = [name for _, name in named_functions(first, default=module)]
    assert names, f"{module}: 'Read first' names no function"
    # prose: a name may belong to the module or to any file the paragraph names
    files = {module, *re.findall(r"(?<![\w/])((?:[a-z_]+/)+[a-z_]+\.py)", first)}
    known = set().union(*(defined_names(REPO / f) for f in files))
    missing = [n for n in names if n not in known]
    assert not missing, f"{module}: 'Read first' names what does not exist: {missing}"
    assert "# bookkeeping:" in source or "Bookkeeping" in doc or "bookkeeping around" in doc, module


@pytest.mark.parametrize("module, reference", REFERENCES.items())
def test_fast_modules_point_to_their_reference(module, reference):
    doc = ast.get_docstring(ast.parse((REPO / module).read_text(encoding="utf-8"))) or ""
    assert reference in " ".join(doc.split()), f"{module}'s docstring does not point to {reference}"
    name = reference.split("`")[1]
    owner = REPO / ("tokenizer/reference_bpe.py" if "reference_bpe" in reference else module)
    assert name in defined_names(owner)


def test_the_demo_model_is_the_tiny_preset():
    from model import PRESETS

    recipe = tomllib.loads((REPO / "configs" / "demo.toml").read_text(encoding="utf-8"))["model"]
    assert recipe["preset"] == "tiny"
    overrides = {k: v for k, v in recipe.items() if k != "preset"}
    assert overrides == {k: PRESETS["tiny"][k] for k in overrides}, "the demo recipe overrides its own preset"


def test_the_demo_time_is_stated_one_way():
    demo_toml = "\n".join(line for line in (REPO / "configs" / "demo.toml").read_text().splitlines()
                          if line.startswith("#"))
    places = {"quick start": section("Quick start (fresh machine)"),
              "the demo table": section("What `make pretrain` does on the demo recipe"),
              "the demo log": README.split("### Example: the demo run", 1)[1].split("\n## ", 1)[0],
              "configs/demo.toml": demo_toml}
    stated = {where: set(re.findall(r"(?:about|~)\s?(a few|\d+(?:\s?[-–]\s?\d+)?) min", text))
              for where, text in places.items()}
    assert all(stated.values()), f"a place that no longer states the time: {stated}"
    assert set().union(*stated.values()) == {"2"}, f"the demo's time, stated differently: {stated}"


def test_the_schedule_lives_with_the_optimiser_and_flops_are_counted_once():
    assert "lr_at" in defined_names(REPO / "train" / "optim.py")
    assert "lr_at" not in defined_names(REPO / "train" / "config.py")
    flops = [str(p.relative_to(REPO)) for pkg in RUNTIME for p in sorted((REPO / pkg).rglob("*.py"))
             if re.search(r"^\s*def flops_per_token\(", p.read_text(encoding="utf-8"), flags=re.M)]
    assert flops == ["model/gpt.py"], flops
