"""Two offline corpora of unseen text for the encoding benchmarks, built from files on this machine.

Our encoder is fast on text its caches have seen and slower on text they have not, so its speed on
*new* text must be measured on text that was not used to tune it. Hence two corpora:

  - tuning ("usr-share-doc"): the documentation installed with the system's packages,
    /usr/share/doc/**/*.md, *.txt, *.rst and README* files (gzipped ones decompressed): READMEs,
    API docs, FAQs, release notes; one document per file. The encoder's thresholds were tuned on it.
  - held aside ("site-packages-docstrings"): the docstrings of every Python module installed in this
    interpreter's site-packages (read with `ast`, never imported), one document per module (its
    docstrings joined by blank lines), exact repeats of a docstring dropped (vendored and copied code).
    Only ever measured on, never tuned on.

Both are deterministic: files are visited in sorted order, documents are then put in an order fixed
by a hash of their path (so neither corpus is a run of one package's files), and the held-aside corpus
is cut at HELD_ASIDE_CHARS characters. Their content depends on what is installed here, so figures
from another machine are not comparable; the benchmark output names each corpus's size.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import sysconfig
import warnings
from pathlib import Path

DOC_ROOT = Path("/usr/share/doc")
DOC_SUFFIXES = (".md", ".txt", ".rst")
HELD_ASIDE_CHARS = 28_000_000


def _hash_order(items: list[tuple[str, str]]) -> list[str]:
    """Texts of (path, text) pairs in an order fixed by a hash of the path: a deterministic shuffle."""
    return [text for _, text in sorted(items, key=lambda item: hashlib.blake2b(item[0].encode()).digest())]


def tuning_corpus(root: Path = DOC_ROOT) -> list[str]:
    """The package documentation under /usr/share/doc, one document per file."""
    items = []
    for path in sorted(root.rglob("*")):
        name = path.name.removesuffix(".gz")
        if path.is_symlink() or not path.is_file():
            continue
        if not (name.endswith(DOC_SUFFIXES) or name.startswith("README")):
            continue
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        if b"\0" in data or not data.strip():  # binary, or nothing to encode
            continue
        items.append((str(path.relative_to(root)), data.decode("utf-8", errors="replace")))
    if not items:
        raise SystemExit(f"encode corpora: no documentation files under {root}")
    return _hash_order(items)


def _docstrings(source: str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarnings of old escape sequences in third-party code
        tree = ast.parse(source)
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [doc for node in ast.walk(tree) if isinstance(node, kinds) and (doc := ast.get_docstring(node))]


def held_aside_corpus(max_chars: int = HELD_ASIDE_CHARS) -> list[str]:
    """Docstrings of the installed Python packages, one document per module, cut at max_chars."""
    root = Path(sysconfig.get_paths()["purelib"])
    items = []
    for path in sorted(root.rglob("*.py")):
        try:
            docs = _docstrings(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue  # Python 2 files, other encodings: not worth a special case
        if docs:
            items.append((str(path.relative_to(root)), docs))
    seen: set[str] = set()
    texts, total = [], 0
    for docs in _hash_order(items):
        fresh = [d for d in docs if d not in seen]
        seen.update(fresh)
        if fresh:
            texts.append("\n\n".join(fresh))
            total += len(texts[-1])
            if total >= max_chars:
                return texts
    raise SystemExit(f"encode corpora: only {total:,} characters of docstrings under {root}, "
                     f"{max_chars:,} wanted")


CORPORA = {"tuning: usr-share-doc": tuning_corpus, "held aside: site-packages-docstrings": held_aside_corpus}
