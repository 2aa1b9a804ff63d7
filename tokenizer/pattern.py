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

What counts as a letter, a digit or whitespace is decided by Unicode tables, and tiktoken's (Rust)
regex engine and the Python `regex` module have tables of different Unicode versions. Patterns are
therefore never compiled as written: unicode_classes.py pins \\p{L}, \\p{N}, \\s ... to tiktoken's
tables, and `piece_splitter` keeps the speed of the plain pattern on all text that does not contain
one of the few characters on which the two versions disagree.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from itertools import accumulate

import regex

from .unicode_classes import Rewritten, ascii_is_disputed, class_body, disputed_ranges, rewrite, stand_ins

GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

Splitter = Callable[[str], list[str]]


def compile_pattern(pattern: str) -> regex.Pattern:
    """Compile a pre-tokenisation pattern, classifying characters exactly as tiktoken does.

    What is compiled is the pattern's *exact* spelling (unicode_classes.py): \\p{L} and friends
    replaced by explicit classes from tiktoken's Unicode tables. Exact on every text but slow;
    `piece_splitter` is what encoding uses (the same pieces, fast).
    """
    _check(pattern)
    return regex.compile(rewrite(pattern).exact)


def _check(pattern: str) -> None:
    """Reject an invalid pattern with the error `regex` gives for it *as written*."""
    try:
        regex.compile(pattern)
    except regex.error as err:
        raise ValueError(f"invalid pre-tokenisation pattern {pattern!r}: {err}") from None


# --- The fast path: chunks that pre-tokenisation provably never crosses -----------------------
#
# Running the pre-tokenisation regex is the single most expensive step of encoding in Python
# (slower, on its own, than tiktoken's whole encode). Most text has been seen before, though, so
# we want to cache the result for larger units than one piece without running the big regex
# first. That needs places where we can cut the text such that pre-tokenising the parts
# separately gives exactly the pieces of pre-tokenising the whole.
#
# Claim: with GPT2_PATTERN, between a non-whitespace character X and a following whitespace
# character there is always a piece boundary, and cutting the text there changes no piece.
# Proof: (1) No piece contains X and the whitespace after it. The alternatives either start
# with ' (contraction: no whitespace at all), or are " ?" followed by a run of non-whitespace
# (whitespace only as the optional *first* character, so never after X), or consist only of
# whitespace (\s++$, \s+(?!\S), \s: cannot contain X). (2) Every piece is decided looking only
# forward (no look-behind), so the pieces after the cut are the same when matched from the cut.
# (3) The piece ending at X does not depend on what follows X: the runs \p{L}++, \p{N}++,
# [^\s\p{L}\p{N}]++ stop at the whitespace in the full text and at the end of the chunk alone,
# and a contraction is a fixed string. Lookaheads ($, (?!\S)) only appear in whitespace pieces,
# which never end a chunk, except the final chunk, which ends where the text ends. (4) Every
# character is matched by some alternative (\s, or letters / digits / "other"), so the regex
# tiles the text: there are no skipped characters that could shift where the next match starts.
#
# So a chunk is "leading whitespace, then a run of non-whitespace" (roughly a word with its
# punctuation: " dog," or "\n    return"), plus a final all-whitespace chunk if the text ends in
# whitespace. Splitting into chunks needs only a trivial regex, which the stdlib `re` engine
# runs ~4x faster than `regex` runs GPT2_PATTERN, and a chunk seen before costs one dict lookup.
#
# A second fact lets one cache hold chunks and pieces alike: every piece, pre-tokenised on its
# own, is a single piece. A contraction matches its own alternative again; " ?letters",
# " ?digits" and " ?others" cannot start a contraction (no apostrophe followed by a letter in
# them) and are matched whole by their own alternative; an all-whitespace piece is matched whole
# by \s++$. So the ids of a piece, cached under the piece, are also the ids of that string as a
# one-piece chunk.
#
# "Whitespace" must mean exactly what \s means to tiktoken (White_Space; the `regex` module's \s
# agrees), which is not what it means to `re` (re also counts U+001C..U+001F), so the class is
# spelled out. Tests compare it with regex's \s and with the pinned White_Space over every code point.
REGEX_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WS = "[" + "".join(f"\\U{ord(c):08x}" for c in REGEX_WHITESPACE) + "]"
_NOT_WS = "[^" + _WS[1:]
GPT2_CHUNK_PATTERN = f"{_WS}*{_NOT_WS}+|{_WS}+"


def chunk_splitter(pattern: str):
    """`findall` that cuts text into cacheable chunks for `pattern`, or None if none is proven.

    The proof above is about GPT2_PATTERN only (other patterns, such as cl100k's, glue newlines
    to punctuation and break the claim), so any other pattern gets no fast path.
    """
    if pattern != GPT2_PATTERN:
        return None
    import re

    return re.compile(GPT2_CHUNK_PATTERN).findall


# --- ASCII shortcut for the chunk-cache misses -------------------------------------------------
#
# A miss in the chunk cache runs GPT2_PATTERN on the chunk. The `regex` module costs ~3 us per
# call even for " word,", about three times the stdlib `re` engine, and misses are most of the
# cost of a cold pass. Almost all chunks are pure ASCII, and restricted to ASCII the pattern's
# classes are plain character sets: \p{L} is [A-Za-z], \p{N} is [0-9], and \s (to `regex`) is
# [\t\n\x0b\x0c\r ] (not U+001C..U+001F). Possessive quantifiers can become greedy ones, because
# each of those runs ends its alternative, so there is nothing after it to backtrack for; and
# greedy WS+$ finds the same runs as \s++$ (a run not at the end cannot reach the end by being
# shorter). So on ASCII text this stdlib pattern splits exactly like GPT2_PATTERN; the tests
# compare the two on every short ASCII string and on random text.
_A_WS = r"\t\n\x0b\x0c\r "
GPT2_ASCII_PATTERN = (
    rf"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^{_A_WS}A-Za-z0-9]+"""
    rf"""|[{_A_WS}]+$|[{_A_WS}]+(?![^{_A_WS}])|[{_A_WS}]"""
)


def piece_splitter(pattern: str) -> Splitter:
    """`findall` for `pattern` that splits exactly like tiktoken, at the speed of the plain pattern.

    Routes that all give the same pieces (unicode_classes.py has the reasoning):
      - ASCII text: GPT2_PATTERN's stdlib twin above, or the native pattern (ASCII characters are
        classified alike by every Unicode version);
      - other text: the native pattern (the `regex` module's fast property tables), unless the
        text holds a character those tables classify differently from tiktoken's;
      - text that does: the native pattern on a copy in which each such character is replaced by
        a stand-in that `regex` classifies as tiktoken classifies it (same length, so the pieces
        are cut from the original at the same places); for the rare pattern where that is not
        enough (see stand_ins), the exact pattern, compiled on first need.
    Making a splitter settles only whether ASCII text may take its route (a look at 128
    characters); which other characters are disputed, and their stand-ins, wait for the first
    text that needs them (_DisputedRoutes): loading a tokenizer stays cheap, and ASCII text
    never pays for them.
    """
    _check(pattern)
    spellings = rewrite(pattern)
    compiled = regex.compile(spellings.native)
    native = compiled.findall
    ascii_split = re.compile(GPT2_ASCII_PATTERN).findall if pattern == GPT2_PATTERN else native
    ascii_is_safe = not ascii_is_disputed(spellings.keys)  # always, unless the tables were broken
    routes = _DisputedRoutes(spellings, compiled)

    def split(text: str) -> list[str]:
        if text.isascii() and ascii_is_safe:  # O(1): str knows whether it is ASCII
            return ascii_split(text)
        has_disputed = routes.has_disputed or routes.find_disputed()
        if not has_disputed(text):
            return native(text)
        return (routes.split_disputed or routes.make_split_disputed())(text)

    return split


class _DisputedRoutes:
    """The part of a splitter that deals with disputed characters, each piece made on first need.

    has_disputed: does a text hold a disputed character (a DisputedSearch)? None until the first
    text that is not ASCII; find_disputed() then asks disputed_ranges (one pass of `regex` over
    every code point per class, once per process). Without disputed characters (the installed
    `regex` has tiktoken's Unicode version) it answers False, and the native pattern is exact.
    split_disputed: how a text that does is split, None until the first such text;
    make_split_disputed() builds the stand-in route, or compiles the exact spelling when the
    pattern cannot use stand-ins.

    Threads: each attribute goes from None to its finished value in one assignment (the value it
    depends on, _disputed, is assigned before it). Two threads that both find it None both compute
    the same value and one assignment wins; no thread sees a half-made one.
    """

    def __init__(self, spellings: Rewritten, compiled: regex.Pattern):
        self._spellings = spellings
        self._compiled = compiled
        self._disputed: tuple[tuple[int, int], ...] = ()
        self.has_disputed: Callable[[str], bool] | None = None
        self.split_disputed: Splitter | None = None

    def find_disputed(self) -> Callable[[str], bool]:
        disputed = disputed_ranges(self._spellings.keys)
        self._disputed = disputed
        has_disputed = _disputed_search(disputed) if disputed else _holds_none
        self.has_disputed = has_disputed
        return has_disputed

    def make_split_disputed(self) -> Splitter:
        spellings, compiled = self._spellings, self._compiled
        table = stand_ins(spellings.keys, self._disputed) if spellings.translatable else None
        if table is not None:
            def split(text: str) -> list[str]:
                return _cut_like(text, text.translate(table), compiled)
        else:
            split = regex.compile(spellings.exact).findall
        self.split_disputed = split
        return split


def _holds_none(text: str) -> bool:
    return False


def _cut_like(text: str, stand_in_text: str, compiled: regex.Pattern) -> list[str]:
    """Split `stand_in_text` (a same-length copy of `text`) and cut `text` at the same places."""
    pieces = compiled.findall(stand_in_text)
    ends = list(accumulate(map(len, pieces)))
    if ends and ends[-1] == len(text):  # the pieces tile the text (tiktoken's patterns always do)
        return list(map(text.__getitem__, map(slice, [0, *ends[:-1]], ends)))
    return [text[m.start():m.end()] for m in compiled.finditer(stand_in_text)]  # a pattern that skips characters


class DisputedSearch:
    """`search(text)`: does `text` contain a character of `ranges`? Fast enough to ask of every text.

    Stdlib `re` searches, a few nanoseconds per character. `re` stores the Basic Multilingual
    Plane part of a character class as a bitmap (one lookup per character), but the part above
    U+FFFF as a list of ranges that it walks for every character the bitmap does not hold, which
    would make a search for the disputed characters themselves ~10x slower. So the first search
    looks for the disputed BMP characters or *any* supplementary character (U+10000..U+10FFFF, a
    single range): on text without emoji and the like, that one pass decides. After a
    supplementary character, the rest of the text takes two passes: the disputed BMP characters,
    then its supplementary characters, collected and checked against a set.
    """

    def __init__(self, ranges: tuple[tuple[int, int], ...]):
        bmp = class_body(tuple((lo, min(hi, 0xFFFF)) for lo, hi in ranges if lo <= 0xFFFF))
        self._search_bmp = re.compile(f"[{bmp}]").search if bmp else None
        self._search_bmp_or_astral = re.compile(f"[{bmp}\\U00010000-\\U0010ffff]").search
        self._astral = frozenset(chr(c) for lo, hi in ranges if hi > 0xFFFF for c in range(max(lo, 0x10000), hi + 1))
        self._find_astral = re.compile("[\\U00010000-\\U0010ffff]").findall

    def __call__(self, text: str) -> bool:
        found = self._search_bmp_or_astral(text)
        if found is None:
            return False
        if found.group() <= "\uffff" or found.group() in self._astral:
            return True
        rest = found.end()
        if self._search_bmp is not None and self._search_bmp(text, rest) is not None:
            return True
        return not self._astral.isdisjoint(self._find_astral(text, rest))


_disputed_search = functools.cache(DisputedSearch)  # one per set of ranges, shared by all tokenizers
