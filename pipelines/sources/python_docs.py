"""The embedded corpus, `python-docs`: English prose that every Python install already carries.

Tests, benchmarks and the default recipe need a corpus that is available offline, is the same on
every run, and is big enough (~1.5-2 MB) for BPE to learn real merges. The running interpreter
ships one: the help topics of `pydoc_data.topics` (the language reference, as plain text) and the
docstrings of the standard library.

Everything is read with `ast` from the source files: nothing is imported or executed, so building
the corpus has no side effects and cannot be changed by the environment. Files are visited in
sorted order, so the document sequence is deterministic for a given interpreter version.
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Packages whose docstrings are mostly test scaffolding, vendored code or tool internals.
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "lib2to3", "__pycache__",
              "ensurepip", "turtledemo", "venv", "pydoc_data"}
# One-line docstrings ("Return self.") teach BPE little; keep documents with some prose in them.
MIN_DOC_CHARS = 80


@dataclass(frozen=True)
class Document:
    id: str      # stable, human-readable: "topic:assert" or "doc:json/decoder.py:JSONDecoder.decode"
    text: str


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _topic_documents(stdlib: Path) -> Iterator[Document]:
    """The `topics = {...}` dict literal of pydoc_data/topics.py, read without importing it."""
    path = stdlib / "pydoc_data" / "topics.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "topics" for t in node.targets):
            topics = ast.literal_eval(node.value)
            for name in sorted(topics):
                text = topics[name].strip()
                if len(text) >= MIN_DOC_CHARS:
                    yield Document(f"topic:{name}", text)
            return


def _docstrings(tree: ast.Module) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) for the module and every class and function, in source order."""
    doc = ast.get_docstring(tree, clean=True)
    if doc:
        yield "<module>", doc

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child, clean=True)
                if doc:
                    yield name, doc
                yield from walk(child, name + ".")

    yield from walk(tree, "")


def _docstring_documents(stdlib: Path) -> Iterator[Document]:
    files = sorted(
        p for p in stdlib.rglob("*.py") if not (_SKIP_DIRS & set(p.relative_to(stdlib).parts[:-1]))
    )
    for path in files:
        rel = path.relative_to(stdlib).as_posix()
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, UnicodeDecodeError):
            continue  # a few stdlib files are deliberately invalid (bad-syntax fixtures)
        # Ids must be unique (the data stage drops a repeated id as a duplicate document), but a module
        # may define a name twice (a fallback redefinition); the later ones become "name#2", "name#3".
        # Only a repeat gets a suffix, so ids that were unique already never change.
        times_seen: dict[str, int] = {}
        for name, doc in _docstrings(tree):
            if len(doc) >= MIN_DOC_CHARS:
                times_seen[name] = times_seen.get(name, 0) + 1
                suffix = f"#{times_seen[name]}" if times_seen[name] > 1 else ""
                yield Document(f"doc:{rel}:{name}{suffix}", doc)


def iter_documents() -> Iterator[Document]:
    """Yield the corpus one document at a time: topics first, then stdlib docstrings."""
    stdlib = _stdlib_dir()
    yield from _topic_documents(stdlib)
    yield from _docstring_documents(stdlib)


@lru_cache(maxsize=1)
def documents() -> tuple[Document, ...]:
    """The whole corpus, built once per process (about 2 MB of text)."""
    return tuple(iter_documents())


def texts() -> list[str]:
    """Just the texts, in corpus order."""
    return [d.text for d in documents()]
