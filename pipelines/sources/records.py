"""The record every source yields, and the text repairs shared by all of them.

A source turns "somewhere documents live" into a stream of `SourceRecord`s, in a fixed order.
It does not judge the documents: the data stage (pipelines/data.py) checks types, skips empty
texts and repairs broken Unicode in one place, so every source behaves the same way.

Broken Unicode is repaired the way the tokenizer treats it, with U+FFFD REPLACEMENT CHARACTER:
invalid UTF-8 bytes decode with errors="replace" (like `Tokenizer.decode`), and lone surrogates
(legal in a Python str and in JSON escapes, impossible in UTF-8) become U+FFFD as tiktoken does
before encoding. Every repair is counted, so a corpus full of mojibake shows up in the manifest.
"""

from __future__ import annotations

import codecs
import glob
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class SourceRecord:
    text: Any                    # should be str; anything else is reported by the data stage
    id: Any                      # the source's id field, or a made-up stable one ("a.jsonl:12")
    where: str                   # "data/a.jsonl row 12": names the record in error messages
    metadata: dict[str, Any] = field(default_factory=dict)
    repairs: int = 0             # U+FFFD the source already put in for invalid bytes (counted, not re-done)


class SourceError(ValueError):
    """A source that cannot be read; the message names the file, row or key."""


class ReplacementCounter:
    """A codecs error handler that replaces invalid UTF-8 with U+FFFD and counts each replacement.

    datasets' text reader opens files with `errors=<name>`; registering a named handler lets us
    count what "replace" would have hidden.
    """

    name = "llm-journey-count-replace"
    count = 0

    @classmethod
    def handler(cls, exc: UnicodeError) -> tuple[str, int]:
        if not isinstance(exc, UnicodeDecodeError):
            raise exc
        cls.count += 1
        return REPLACEMENT, exc.end


codecs.register_error(ReplacementCounter.name, ReplacementCounter.handler)


def decode_bytes(data: bytes) -> tuple[str, int]:
    """UTF-8 decode with U+FFFD for invalid bytes -> (text, number of replacements)."""
    before = ReplacementCounter.count
    text = data.decode("utf-8", errors=ReplacementCounter.name)
    return text, ReplacementCounter.count - before


def repair_surrogates(text: str) -> tuple[str, int]:
    """Replace lone surrogates by U+FFFD -> (text, number replaced). Fast path: valid text is returned as is."""
    try:
        text.encode("utf-8")
        return text, 0
    except UnicodeEncodeError:
        return _SURROGATE.subn(REPLACEMENT, text)


def expand_file_patterns(patterns: list[str], section: str, suffixes, unsupported: str) -> Iterator[Path]:
    """The files a recipe's `paths` name, in order: globs expanded and sorted, plain paths as written.

    One rule for every source that reads local files ([data] and [sft]): a pattern that matches nothing,
    a path that is not a file, or a suffix not in `suffixes` is an error naming the recipe section and
    the path; `unsupported` says which suffixes are read."""
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise SourceError(f"[{section}] paths: pattern {pattern!r} matches no file")
        for m in matches:
            p = Path(m)
            if not p.is_file():
                raise SourceError(f"[{section}] paths: {p} does not exist or is not a file")
            if p.suffix.lower() not in suffixes:
                raise SourceError(f"[{section}] paths: {p}{unsupported}")
            yield p
