"""The pre-tokenisation regex: how text is cut into "pre-tokens" before BPE runs.

BPE merges never cross a pre-token boundary. Splitting first keeps words, numbers, punctuation
runs and whitespace apart, so the vocabulary does not waste entries on "dog." vs "dog!" and the
merge search only ever looks inside short pieces (which is also what makes caching them work).

GPT2_PATTERN is tiktoken's form of GPT-2's regex. It splits exactly like OpenAI's original
    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
but uses possessive quantifiers (++) so the `regex` engine never backtracks into a run it has
matched, which matters on long runs such as 100,000 spaces. Alternatives, in order:
  - English contractions ('s 't 're 've 'm 'll 'd), case-sensitive as in GPT-2;
  - an optional space then letters; an optional space then digits;
  - an optional space then other symbols (punctuation);
  - trailing whitespace at the end of the text;
  - whitespace not followed by non-space: a run of spaces keeps its last space for the next word,
    so "a   b" splits as "a", "  ", " b" and " b" can reuse the common " b" tokens;
  - any single remaining whitespace character.
"""

from __future__ import annotations

import regex

GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)


def compile_pattern(pattern: str) -> regex.Pattern:
    """Compile a pre-tokenisation pattern with the `regex` module (needed for \\p{..} and ++)."""
    try:
        return regex.compile(pattern)
    except regex.error as err:
        raise ValueError(f"invalid pre-tokenisation pattern {pattern!r}: {err}") from None
