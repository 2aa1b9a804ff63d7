"""README.md's examples stay true, and so do those of the pages it links to (docs/*.md).

- Every ```python block runs, statement by statement, in a fresh working directory that holds what
  the README assumes a reader has: GPT-2's `encoder.json` and `vocab.bpe`, the demo recipe's
  `artifacts/demo/{raw,tokenizer,shards}` (built here by the real stages, on a slice of the
  embedded corpus), a tokenisation service serving the demo tokenizer (`make serve`'s setup) and a
  `~/models/gpt2` checkpoint directory (a small random GPT-2-shaped stand-in: GPT-2's real weights
  would have to be downloaded). Nothing is downloaded.
- A statement's trailing comment is checked when it states a value: `expr  # [31373, 995]` must
  evaluate to that literal (a string ending in "..." is a prefix), or `expr  # array('H', ...)` to
  something whose repr starts with the comment; `stmt  # ValueError: message ...` must raise that
  exception with that message. Comments that are prose are not checked.
- A block that cannot run offline (network, GPU, a real trained checkpoint) must be listed in
  SKIPPED_BY_DESIGN with the reason; it is still compiled and its imports resolved. A new block
  that neither runs here nor is listed fails.
- Python code outside a ```python fence (an indented block with imports) fails: fence it, so it
  is checked.
- Every `python -m MODULE` names a runnable module, every `make TARGET` a target of Makefile or
  mk/*.mk, and every source path (tokenizer/bpe.py, configs/demo.toml, ...) exists.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import io
import os
import re
import shutil
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import write_recipe

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
# The operations pages the README links to (the service, crash safety): checked exactly as the README is.
DOCUMENTS = [README, *sorted((REPO / "docs").glob("*.md"))]

# A block whose text contains the key is not run; the value says why. Only for what needs the
# network, a GPU or a real trained checkpoint; keep the key a stable phrase of that block.
SKIPPED_BY_DESIGN: dict[str, str] = {
    'OpenAI(base_url="http://127.0.0.1:8000/v1"': "needs the demo's trained chat model behind the API (make chat-web); "
                                                  "tests/test_openai_api.py drives the same calls on a tiny one",
}

# Names README blocks use without defining them: the reader's own data.
PROVIDED_NAMES = ("texts",)  # a list of documents (here: the demo corpus slice)

# Where README's client examples find the service (`make serve`'s default address); the test's
# service listens on a free port instead, and the address is rewritten to it.
SERVICE_URL = "http://127.0.0.1:8000"

PYTHON_LANGS = {"python", "py", "python3"}
SOURCE_DIRS = ("bench", "configs", "contract", "harness", "mk", "model", "pipelines", "service", "tests",
               "tokenizer", "train")


# ---------------------------------------------------------------------------------------------- README


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # line of the block's first code line in its file
    code: str
    file: str = "README.md"  # README.md or docs/<page>.md


def fenced_blocks(text: str, file: str = "README.md") -> list[Block]:
    blocks: list[Block] = []
    fence, lang, start, lines = None, "", 0, []
    for n, line in enumerate(text.splitlines(), 1):
        if fence is None:
            m = re.match(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)", line)
            if m:
                fence, lang, start, lines = m.group(1), m.group(2).lower(), n + 1, []
        elif line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            blocks.append(Block(lang, start, "\n".join(lines) + "\n", file))
            fence = None
        else:
            lines.append(line)
    assert fence is None, f"{file}: the code fence opened at line {start - 1} is never closed"
    return blocks


def unfenced_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every README line outside ``` fences."""
    out, inside = [], None
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^ {0,3}(`{3,}|~{3,})", line)
        if inside is None and m:
            inside = m.group(1)
        elif inside is not None and line.strip().startswith(inside) and not line.strip().strip(inside[0]):
            inside = None
        elif inside is None:
            out.append((n, line))
    return out


DOC_TEXTS = {path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8") for path in DOCUMENTS}
# The commands, targets and paths checks read every document as one text.
README_TEXT = "\n".join(DOC_TEXTS.values())
BLOCKS = [block for name, text in DOC_TEXTS.items() for block in fenced_blocks(text, name)]
PYTHON_BLOCKS = [b for b in BLOCKS if b.lang in PYTHON_LANGS]


def skip_reason(block: Block) -> str | None:
    reasons = [reason for key, reason in SKIPPED_BY_DESIGN.items() if key in block.code]
    return reasons[0] if reasons else None


# ---------------------------------------------------------------------------------------------- running


def trailing_comments(code: str) -> dict[int, str]:
    """{row: comment text} for comments that follow code on their row."""
    comments, code_rows = {}, set()
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT:
            if tok.start[0] in code_rows:
                comments[tok.start[0]] = tok.string[1:].strip()
        elif tok.type not in skip:
            code_rows.update(range(tok.start[0], tok.end[0] + 1))
    return comments


EXPECTED_ERROR = re.compile(r"^([A-Z]\w*(?:Error|Exception|Mismatch))\b(?::\s*(.*))?$")


def _matches(actual: Any, expected: Any) -> bool:
    if hasattr(actual, "tolist") and not isinstance(actual, (str, bytes)):
        actual = actual.tolist()
    if isinstance(expected, str) and expected.endswith("...") and isinstance(actual, str):
        return actual.startswith(expected[:-3])
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(actual) == len(expected) and all(_matches(a, e) for a, e in zip(actual, expected))
    return actual == expected


def value_mismatch(value: Any, comment: str) -> str | None:
    """Why `value` contradicts a comment that states a value; None if it agrees or the comment is prose."""
    if value is None or comment.startswith(repr(value)):
        return None
    try:
        expected = ast.literal_eval(comment)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None  # prose
    return None if _matches(value, expected) else f"the README says {comment!r}, the code gives {value!r}"


def run_block(code: str, first_line: int, namespace: dict[str, Any], filename: str = str(README)) -> None:
    """Run `code` statement by statement; check each statement's trailing comment (module docstring)."""
    tree = ast.parse(code, filename=filename)
    ast.increment_lineno(tree, first_line - 1)
    comments = {row + first_line - 1: text for row, text in trailing_comments(code).items()}
    last_on_row = {stmt.end_lineno: i for i, stmt in enumerate(tree.body)}
    for i, stmt in enumerate(tree.body):
        where = f"{Path(filename).name}:{stmt.lineno}"
        comment = comments.get(stmt.end_lineno) if last_on_row[stmt.end_lineno] == i else None
        expected_error = EXPECTED_ERROR.match(comment) if comment else None
        if expected_error:
            name, message = expected_error.groups()
            exc_type = namespace.get(name, getattr(builtins, name, None))
            assert isinstance(exc_type, type) and issubclass(exc_type, BaseException), (
                f"{where}: the comment names {name}, which is not an exception in scope")
            with pytest.raises(exc_type) as info:
                exec(compile(ast.Module([stmt], type_ignores=[]), filename, "exec"), namespace)
            if message and message.rstrip(". ").strip():
                assert message.rstrip(". ").strip() in str(info.value), (
                    f"{where}: the README says {name}: {message!r}, the code raises {info.value!r}")
        elif isinstance(stmt, ast.Expr):
            value = eval(compile(ast.Expression(stmt.value), filename, "eval"), namespace)
            problem = value_mismatch(value, comment) if comment else None
            assert problem is None, f"{where}: {problem}"
        else:
            exec(compile(ast.Module([stmt], type_ignores=[]), filename, "exec"), namespace)


def check_compiles_and_imports(block: Block) -> None:
    tree = ast.parse(block.code, filename=str(README))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert alias.name == "*" or hasattr(module, alias.name) or importlib.util.find_spec(
                    f"{node.module}.{alias.name}") is not None, (
                    f"README.md:{block.line}: {node.module} has no {alias.name}")


# ---------------------------------------------------------------------------------------------- fixtures


@dataclass
class ReadmeEnv:
    work: Path          # holds encoder.json, vocab.bpe and artifacts/demo/
    home: Path          # $HOME with models/gpt2
    texts: list[str]
    service_url: str


def quiet(*_args, **_kwargs) -> None:
    pass


@pytest.fixture(scope="module")
def readme_env(tmp_path_factory, gpt2_files):
    import pyarrow.parquet as pq
    import torch

    from contract.recipe import load_recipe
    from harness.service_process import ServiceProcess
    from model.gpt import GPT, GPTConfig
    from model.hf import export_hf
    from pipelines import data, learn_tokenizer, shards

    root = tmp_path_factory.mktemp("readme")
    work = root / "work"
    work.mkdir()
    for src, name in zip(gpt2_files, ("encoder.json", "vocab.bpe")):
        shutil.copyfile(src, work / name)

    # The demo recipe's chain (same name, sections and vocabulary) on 400 documents: a second or so.
    recipe = load_recipe(write_recipe(
        work, name="demo",
        data={"source": "python-docs", "max_documents": 400, "rows_per_file": 200},
        tokenizer={"vocab_size": 4096, "max_characters": 400_000, "heldout_documents": 20},
        shards={"format": "npy", "shard_tokens": 32_768, "val_documents": 20, "workers": 1}))
    for stage in (data, learn_tokenizer, shards):
        stage.run(recipe, progress_bar=False, log=quiet)
    texts = pq.read_table(sorted((work / "artifacts" / "demo" / "raw").glob("*.parquet")),
                          columns=["text"]).column("text").to_pylist()

    # ~/models/gpt2: a save_pretrained directory of GPT-2's shape and vocabulary, tiny and random.
    home = root / "home"
    torch.manual_seed(0)
    stand_in = GPT(GPTConfig(block_size=64, vocab_size=50257, n_layer=2, n_head=2, n_embd=32))
    export_hf(stand_in, home / "models" / "gpt2")

    # `make serve`: the recipe's tokenizer over HTTP (python -m service), on a free loopback port.
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    tokenizer_file = work / "artifacts" / "demo" / "tokenizer" / "tokenizer.ljt.json"
    with ServiceProcess(["--tokenizer", str(tokenizer_file), "--workers", "1", "--log-level", "warning"],
                        env={"PYTHONPATH": pythonpath}) as svc:
        yield ReadmeEnv(work=work, home=home, texts=texts, service_url=svc.url)


# ---------------------------------------------------------------------------------------------- tests


def test_readme_has_python_examples():
    assert PYTHON_BLOCKS, "no ```python block found in README.md: has the fence syntax changed?"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[
    f"line{b.line}" if b.file == "README.md" else f"{b.file}:line{b.line}" for b in PYTHON_BLOCKS])
def test_python_block(block: Block, readme_env: ReadmeEnv, tmp_path, monkeypatch, torch_one_thread):
    reason = skip_reason(block)
    if reason:
        check_compiles_and_imports(block)
        pytest.skip(f"skipped by design: {reason}")
    for name in ("encoder.json", "vocab.bpe", "artifacts"):
        (tmp_path / name).symlink_to(readme_env.work / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(readme_env.home))
    code = block.code.replace(SERVICE_URL, readme_env.service_url)
    namespace: dict[str, Any] = {"__name__": "__readme__", "texts": list(readme_env.texts)}
    assert set(namespace) - {"__name__"} == set(PROVIDED_NAMES)
    run_block(code, block.line, namespace, filename=str(REPO / block.file))


def test_skip_list_names_blocks_that_exist():
    for key in SKIPPED_BY_DESIGN:
        matching = [b.line for b in PYTHON_BLOCKS if key in b.code]
        assert len(matching) == 1, f"SKIPPED_BY_DESIGN key {key!r} matches README python blocks at {matching}"


def test_block_runner_checks_documented_values():
    """The checker itself: a wrong documented value or a missing exception fails, prose does not."""
    run_block("x = [1, 2]\nx  # [1, 2]\n'abcdef'  # 'abc...'\nlen(x)  # two items\n", 1, {})
    run_block("int('a')  # ValueError: invalid literal ...\n", 1, {})
    with pytest.raises(AssertionError, match="the code gives 3"):
        run_block("1 + 2  # 4\n", 1, {})
    with pytest.raises(AssertionError, match="the code gives"):
        run_block("(1, 'abcdef')  # 1, 'abd...'\n", 1, {})
    with pytest.raises(pytest.fail.Exception):
        run_block("int('1')  # ValueError: invalid literal\n", 1, {})
    with pytest.raises(AssertionError, match="the code raises"):
        run_block("int('a')  # ValueError: something else\n", 1, {})


def test_python_examples_are_fenced():
    """An indented block with imports is Python that no test would run: it must be a ```python fence."""
    lines = [line for text in DOC_TEXTS.values() for line in unfenced_lines(text)]
    offenders = [n for i, (n, line) in enumerate(lines)
                 if re.match(r"^ {4,}(from [\w.]+ import |import [\w.]+)", line)
                 and (i == 0 or not lines[i - 1][1].strip() or lines[i - 1][1].startswith("    "))]
    assert not offenders, f"README.md lines {offenders}: Python outside a ```python fence"


def _python_m_modules() -> set[str]:
    found = set(re.findall(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*)(?![\w.<])", README_TEXT))
    found |= set(re.findall(r"\btorchrun\b[^\n`]*?\s-m\s+([A-Za-z_][\w.]*)(?![\w.<])", README_TEXT))
    return found


def test_python_m_modules_exist():
    modules = _python_m_modules()
    assert len(modules) >= 3, modules  # the extraction works
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"README runs `python -m {name}`, but there is no module {name}"
        if spec.submodule_search_locations is not None:  # a package runs its __main__
            assert importlib.util.find_spec(f"{name}.__main__") is not None, (
                f"README runs `python -m {name}`, but the package {name} has no __main__")


def make_targets() -> set[str]:
    targets: set[str] = set()
    for path in [REPO / "Makefile", *sorted((REPO / "mk").glob("*.mk"))]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith(("\t", " ", "#")):
                continue
            m = re.match(r"^([^:#=]+?)\s*::?(?!=)(.*)$", line)
            if not m:
                continue
            names = m.group(2).split() if m.group(1).strip() == ".PHONY" else m.group(1).split()
            targets.update(n for n in names if "$" not in n and "%" not in n)
    return targets


def _readme_make_targets() -> set[str]:
    found = set()
    for span in re.findall(r"`([^`\n]+)`", README_TEXT):
        found.update(re.findall(r"^make\s+([a-z][\w-]*)", span.strip()))
    for line in README_TEXT.splitlines():
        found.update(re.findall(r"^(?:\$\s+)?make\s+([a-z][\w-]*)", line.strip()))
    return found


def test_make_targets_exist():
    available = make_targets()
    assert {"setup", "test", "pretrain", "serve"} <= available, available  # the parsing works
    wanted = _readme_make_targets()
    assert {"pretrain", "serve", "bench-learn-bpe"} <= wanted, wanted  # the extraction works
    missing = sorted(wanted - available)
    assert not missing, f"README mentions `make {missing[0]}`, but Makefile and mk/*.mk define no such target"


def test_source_paths_exist():
    pattern = r"(?<![\w./~-])((?:" + "|".join(SOURCE_DIRS) + r")/[\w.*/-]*)"
    paths = {p.rstrip(".") for p in re.findall(pattern, README_TEXT)}
    paths = {p for p in paths if p.endswith("/") or re.search(r"\.\w+$", p)}  # train/val is prose
    assert "tokenizer/bpe.py" in paths, paths  # the extraction works
    missing = sorted(p for p in paths if not list(REPO.glob(p.rstrip("/"))))
    assert not missing, f"README names {missing}, which do not exist in the repository"
