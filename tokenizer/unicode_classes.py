"""Pre-tokenisation patterns that classify every character exactly as tiktoken does.

The problem. `\\p{L}` ("a letter") is only as precise as the Unicode tables behind it. tiktoken's
regex engine (Rust's `regex` crate) has tables of one Unicode version compiled in; the Python
`regex` module, which runs our patterns, has tables of another (each follows its own release).
Characters assigned in between are letters to one and unassigned to the other, so the two cut
text containing them differently: with o200k_base, "\\u05c9'x" is [147, 231, 6, 87] in tiktoken but
was [147, 231, 168788] here, because the newer tables call U+05C9 a letter and glue "'x" to it.

The fix. tokenizer/unicode_data.py holds tiktoken's own tables (General_Category, White_Space and
the case-insensitive matches of the ASCII letters, read off tiktoken by
scripts/make_unicode_tables.py; Unicode 16.0.0 for tiktoken 0.14). `rewrite()` turns a pattern
into two equivalent spellings:
  - `exact`: every \\p{..}, \\P{..}, \\s, \\S, \\d, \\D is replaced by an explicit class of
    code point ranges from those tables, and every ASCII letter under (?i) by its pinned
    case-insensitive class, so the `regex` module's own tables are never consulted for them.
    Correct everywhere, but slow: `regex` tests a character against an explicit class by going
    through its ranges one by one (about 700 for \\p{L}), ~10x slower than a property lookup.
  - `native`: the pattern as written (the engine's own fast property tables).
Both translate what Rust and Python spell differently: `$` (Rust: end of text only; Python: also
before a final "\\n") becomes `\\Z`, and Rust's `\\z` becomes `\\Z`.

`native` is exact on any text in which no character is *disputed*: classified differently by the
installed `regex` module and by the pinned tables, for one of the classes the pattern uses. Those
are computed once per process, when the first text that is not ASCII needs them
(`disputed_ranges`: one pass of the `regex` module over all code points per class, a few
milliseconds each; ASCII is settled at once by `ascii_is_disputed`), and are characters of the
newest Unicode releases, so practically all text takes the fast path. pattern.py checks each
text with a stdlib `re` search; a text that does hold a disputed character is split by `native`
all the same, after each such character has been replaced by a *stand-in* that the `regex`
module classifies as tiktoken classifies the original (`stand_ins`, made when the first such
text comes); `exact` is left for patterns where that is not enough.

Not pinned (the `regex` module's own tables apply): \\w, \\W, \\b, \\B, scripts and other
properties (\\p{Greek}, \\p{Alphabetic}), non-ASCII letters and character classes under (?i).
tiktoken's encodings use none of them.
"""

from __future__ import annotations

import bisect
import functools
import re
import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

from . import unicode_data
from .unicode_data import UNICODE_VERSION

__all__ = ["UNICODE_VERSION", "Rewritten", "ascii_is_disputed", "category_ranges", "disputed_ranges", "rewrite"]

Ranges = tuple[tuple[int, int], ...]
MAX_CODE_POINT = 0x10FFFF

# --------------------------------------------------------------------------------- the tables
_GENERAL_CATEGORIES = ("Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
                       "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn")
_GROUPS = {letter: frozenset(gc for gc in _GENERAL_CATEGORIES if gc[0] == letter) for letter in "LMNPSZC"}
_LONG_NAMES = {
    "letter": "L", "casedletter": "LC", "uppercaseletter": "Lu", "lowercaseletter": "Ll", "titlecaseletter": "Lt",
    "modifierletter": "Lm", "otherletter": "Lo", "mark": "M", "combiningmark": "M", "nonspacingmark": "Mn",
    "spacingmark": "Mc", "enclosingmark": "Me", "number": "N", "decimalnumber": "Nd", "digit": "Nd",
    "letternumber": "Nl", "othernumber": "No", "punctuation": "P", "punct": "P", "connectorpunctuation": "Pc",
    "dashpunctuation": "Pd", "openpunctuation": "Ps", "closepunctuation": "Pe", "initialpunctuation": "Pi",
    "finalpunctuation": "Pf", "otherpunctuation": "Po", "symbol": "S", "mathsymbol": "Sm", "currencysymbol": "Sc",
    "modifiersymbol": "Sk", "othersymbol": "So", "separator": "Z", "spaceseparator": "Zs", "lineseparator": "Zl",
    "paragraphseparator": "Zp", "other": "C", "control": "Cc", "cntrl": "Cc", "format": "Cf", "surrogate": "Cs",
    "privateuse": "Co", "unassigned": "Cn",
}


def _normalise(name: str) -> str:
    """Loose matching of property names (UTS #18): case, spaces, '_' and '-' do not count."""
    return "".join(ch for ch in name.lower() if ch not in " _-")


def _general_category(name: str) -> frozenset[str] | None:
    """The two-letter categories that \\p{name} stands for, or None if `name` is no category."""
    loose = _normalise(name)
    for prefix in ("generalcategory=", "generalcategory:", "gc=", "gc:"):
        if loose.startswith(prefix):
            loose = loose[len(prefix):]
    short = _LONG_NAMES.get(loose, loose)
    if short in ("lc", "l&", "LC"):
        return frozenset({"Lu", "Ll", "Lt"})
    for gc in _GENERAL_CATEGORIES:
        if short.lower() == gc.lower():
            return frozenset({gc})
    if len(short) == 1 and short.upper() in _GROUPS:
        return _GROUPS[short.upper()]
    return None


@functools.cache
def _category_runs() -> tuple[tuple[int, ...], tuple[str, ...]]:
    starts, categories = [], []
    for line in unicode_data.GENERAL_CATEGORY_RUNS.split():
        if len(line) == 2:
            categories.append(line)
        else:
            starts.append(int(line, 16))
    return tuple(starts), tuple(categories)


@functools.cache
def category_ranges(categories: frozenset[str]) -> Ranges:
    """The pinned code point ranges of the union of some two-letter General_Categories."""
    starts, gcs = _category_runs()
    ends = starts[1:] + (MAX_CODE_POINT + 1,)
    return _merge((lo, end - 1) for lo, end, gc in zip(starts, ends, gcs) if gc in categories)


def _merge(ranges: Iterable[tuple[int, int]]) -> Ranges:
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)


def _complement(ranges: Ranges) -> Ranges:
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODE_POINT:
        out.append((nxt, MAX_CODE_POINT))
    return tuple(out)


# Each pinned construct is named by a key; pinned_ranges(key) is its class, regex_spelling(key)
# how the `regex` module writes the same class with its own tables.
#   ("gc", frozenset of categories)  \p{L}, \p{Lu}, ...       ("ws",)  \s     ("fold", "s")  (?i:s)
def pinned_ranges(key: tuple) -> Ranges:
    if key[0] == "gc":
        return category_ranges(key[1])
    if key[0] == "ws":
        return _merge(unicode_data.WHITE_SPACE)
    return _merge((ord(ch), ord(ch)) for ch in unicode_data.CASE_FOLDS[key[1]])


def regex_spelling(key: tuple) -> str:
    if key[0] == "gc":
        return "[" + "".join(rf"\p{{{gc}}}" for gc in sorted(key[1])) + "]"
    if key[0] == "ws":
        return r"\s"
    return f"(?i:{key[1]})"


# Groups of categories that the `regex` module also knows under one name (Unicode's own groups),
# the larger ones first: {Lu, Ll, Lt, Lm, Lo} is \p{L}, not \p{LC} and two more.
_NAMED_GROUPS = {**_GROUPS, "LC": frozenset({"Lu", "Ll", "Lt"})}


def regex_spelling_parts(key: tuple) -> tuple[str, ...]:
    """regex_spelling(key) as a union of single-property spellings, for scanning with `regex`.

    `regex` tests one property (\\p{L}) with a single table lookup, but a class of several
    ([\\p{Ll}\\p{Lm}\\p{Lo}\\p{Lt}\\p{Lu}]) member by member, ~8x slower over every code point.
    So whole groups are spelled by their group name (\\p{L} is by definition the union of its
    categories; tests/test_tokenizer_load_speed.py checks that the installed `regex` agrees)
    and the rest one category each: each part is one fast pass, and their matches are unioned.
    """
    if key[0] != "gc":
        return (regex_spelling(key),)
    left, parts = set(key[1]), []
    for name, members in _NAMED_GROUPS.items():
        if members <= left:
            parts.append(rf"\p{{{name}}}")
            left -= members
    return (*parts, *(rf"\p{{{gc}}}" for gc in sorted(left)))


def class_body(ranges: Ranges) -> str:
    """Ranges as the inside of a character class, every character escaped (any engine reads it)."""
    return "".join(_escape(lo) if lo == hi else f"{_escape(lo)}-{_escape(hi)}" for lo, hi in ranges)


def _escape(c: int) -> str:
    return f"\\u{c:04x}" if c <= 0xFFFF else f"\\U{c:08x}"


# ------------------------------------------------------------------------------- the rewriter
@dataclass(frozen=True)
class Rewritten:
    native: str           # the engine's own tables (fast); exact on text without disputed characters
    exact: str            # every class spelled out from the pinned tables (slow, always exact)
    keys: frozenset       # the pinned constructs the pattern uses (see pinned_ranges)
    translatable: bool    # what the pattern says about a character depends on `keys` alone (see stand_ins)


_SHORTHANDS = {"s": (("ws",), False), "S": (("ws",), True), "d": (("gc", frozenset({"Nd"})), False),
               "D": (("gc", frozenset({"Nd"})), True)}
_FLAGS = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])")
# Group openers that carry a name or a condition, copied whole (their letters are not literals).
_NAMED_GROUP = re.compile(r"\(\?(?:P?<(?![=!])[^>]*>|P[=>][^)]*\)|&[^)]*\)|\([^)]*\))")
_ESCAPE_WITH_ARGUMENT = re.compile(r"\\(?:x\{[^}]*\}|x[0-9a-fA-F]{0,2}|u[0-9a-fA-F]{0,4}|U[0-9a-fA-F]{0,8}"
                                   r"|[Ngk]\{[^}]*\}|[gk]<[^>]*>|[0-7]{1,3})")


@functools.cache
def rewrite(pattern: str) -> Rewritten:
    """The native and exact spellings of a pre-tokenisation pattern (see the module docstring).

    A small scanner over the pattern: it tracks character classes, escapes and which flags
    (i: case-insensitive, m: multi-line, x: verbose) hold in each group, and rewrites only the
    constructs it pins; everything else is copied as written.
    """
    return _Rewriter(pattern).run()


class _Rewriter:
    def __init__(self, pattern: str):
        self.p = pattern
        self.i = 0
        self.native: list[str] = []
        self.exact: list[str] = []
        self.keys: set[tuple] = set()
        self.flags: frozenset[str] = frozenset()
        self.saved: list[frozenset[str]] = []  # flags to restore when each open group closes
        self.translatable = True

    def emit(self, native: str, exact: str | None = None) -> None:
        self.native.append(native)
        self.exact.append(native if exact is None else exact)

    def run(self) -> Rewritten:
        p = self.p
        while self.i < len(p):
            ch = p[self.i]
            if ch == "\\":
                self.escape_outside_class()
            elif ch == "[":
                self.character_class()
            elif ch == "(":
                self.open_group()
            elif ch == ")":
                self.flags = self.saved.pop() if self.saved else self.flags
                self.emit(ch)
                self.i += 1
            elif ch == "$" and "m" not in self.flags:
                self.emit(r"\Z")
                self.i += 1
            elif ch == "#" and "x" in self.flags:
                end = p.find("\n", self.i)
                end = len(p) if end < 0 else end
                self.emit(p[self.i:end])
                self.i = end
            elif "i" in self.flags and ch.isascii() and ch.isalpha():
                key = ("fold", ch.lower())
                self.keys.add(key)
                self.emit(ch, f"(?-i:[{class_body(pinned_ranges(key))}])")
                self.i += 1
            else:
                self.translatable &= ch.isascii()
                self.emit(ch)
                self.i += 1
        return Rewritten("".join(self.native), "".join(self.exact), frozenset(self.keys), self.translatable)

    # -- escapes ------------------------------------------------------------------------------
    def read_escape(self) -> tuple[str, tuple | None, bool]:
        """(the escape as written, its pinned key or None, negated) for the escape at self.i."""
        p, i = self.p, self.i
        letter = p[i + 1] if i + 1 < len(p) else ""
        if letter in "pP":
            if p[i + 2:i + 3] == "{":
                end = p.find("}", i + 3)
                end = len(p) - 1 if end < 0 else end
                name, written = p[i + 3:end], p[i:end + 1]
            else:
                name, written = p[i + 2:i + 3], p[i:i + 3]
            negated = letter == "P"
            if name.startswith("^"):
                name, negated = name[1:], not negated
            categories = _general_category(name)
            return written, (("gc", categories) if categories else None), negated
        if letter in _SHORTHANDS:
            key, negated = _SHORTHANDS[letter]
            return p[i:i + 2], key, negated
        m = _ESCAPE_WITH_ARGUMENT.match(p, i)  # \x41, \u00e9, \N{...}, \g<name>: copied whole
        return (m.group() if m else p[i:i + 2]), None, False

    def escape_outside_class(self) -> None:
        written, key, negated = self.read_escape()
        self.i += len(written)
        self.note_unpinned(written, key)
        if written == r"\z":  # Rust's end of text; Python spells it \Z
            self.emit(r"\Z")
        elif key is None:
            self.emit(written)
        else:
            self.keys.add(key)
            self.emit(written, "[" + ("^" if negated else "") + class_body(pinned_ranges(key)) + "]")

    def note_unpinned(self, written: str, key: tuple | None) -> None:
        """Clear `translatable` for an escape whose meaning for some character the keys do not
        decide: \\w, \\b, \\p{Greek}, a backreference, a non-ASCII character (\\u00e9, \\N{...})."""
        if key is not None:
            return
        letter = written[1:2]
        if letter in "xuU" and len(written) > 2:
            self.translatable &= int(written[2:].strip("{}") or "0", 16) < 0x80
        elif letter.isalnum() and letter not in "ntrfvaAZz0" or letter in "pP":
            self.translatable = False

    # -- [...] ----------------------------------------------------------------------------------
    def character_class(self) -> None:
        """Copy a class; in the exact spelling its pinned members become one merged range list."""
        p = self.p
        start = self.i
        self.i += 1
        head = "["
        if p[self.i:self.i + 1] == "^":
            head, self.i = "[^", self.i + 1
        body: list[str] = []  # members copied as written (literals, unpinned escapes)
        native: list[str] = []
        pinned: list[tuple[int, int]] = []
        if p[self.i:self.i + 1] == "]":  # a ']' first is a literal
            body.append("]")
            native.append("]")
            self.i += 1
        while self.i < len(p) and p[self.i] != "]":
            ch = p[self.i]
            if ch == "\\":
                written, key, negated = self.read_escape()
                self.i += len(written)
                self.note_unpinned(written, key)
                native.append(written)
                if key is None:
                    body.append(written)
                else:
                    self.keys.add(key)
                    ranges = pinned_ranges(key)
                    pinned.extend(_complement(ranges) if negated else ranges)
            elif ch == "[" and p[self.i + 1:self.i + 2] == ":":  # POSIX [:alpha:]
                self.translatable = False
                end = p.find(":]", self.i + 2)
                end = len(p) if end < 0 else end + 2
                body.append(p[self.i:end])
                native.append(p[self.i:end])
                self.i = end
            else:
                self.translatable &= ch.isascii()
                body.append(ch)
                native.append(ch)
                self.i += 1
        if self.i >= len(p):  # unterminated: copy as is, the engine reports the error
            self.emit(p[start:])
            return
        self.i += 1
        written = head + "".join(native) + "]"
        if "i" not in self.flags:
            self.emit(written, head + "".join(body) + class_body(_merge(pinned)) + "]")
        elif not pinned and all(len(m) == 1 and m.isascii() for m in body) and "-" not in body[1:-1]:
            # (?i)[sdmt]: plain ASCII members, each letter widened to its pinned case-insensitive
            # matches, and matched case-sensitively, like a letter outside a class.
            members = [(ord(m), ord(m)) for m in body]
            for m in body:
                if m.isalpha():
                    self.keys.add(("fold", m.lower()))
                    members.extend(pinned_ranges(("fold", m.lower())))
            self.emit(written, f"(?-i:{head}{class_body(_merge(members))}])")
        else:  # other classes under (?i) fold their members with the `regex` module's tables
            self.translatable = False
            self.emit(written, head + "".join(body) + class_body(_merge(pinned)) + "]")

    # -- (...) ----------------------------------------------------------------------------------
    def open_group(self) -> None:
        p = self.p
        if p.startswith("(?#", self.i):  # a comment: copied, no group
            end = p.find(")", self.i)
            end = len(p) if end < 0 else end + 1
            self.emit(p[self.i:end])
            self.i = end
            return
        named = _NAMED_GROUP.match(p, self.i)
        if named is not None:
            if not named.group().startswith(("(?P=", "(?P>", "(?&")):  # those are references, not groups
                self.saved.append(self.flags)
            else:
                self.translatable = False
            self.emit(named.group())
            self.i = named.end()
            return
        m = _FLAGS.match(p, self.i)
        if m is not None:
            on, off, tail = set(m.group(1)), set(m.group(2) or ""), m.group(3)
            if tail == ":":  # (?i:...): new flags for this group only
                self.saved.append(self.flags)
            self.flags = frozenset((self.flags | on) - off)
            self.emit(m.group())
            self.i = m.end()
            return
        self.saved.append(self.flags)
        self.emit("(")
        self.i += 1


# ------------------------------------------------------------------- where `regex` disagrees
def _all_code_points() -> str:
    """Every code point except the surrogates, in order, as one string (~1.1M characters, 4.4 MB:
    built when needed, not kept).

    Built from bytes, not from 1.1M Python ints: plane 0's 65,536 code points as uint32, copied
    17 times, and in copy p the byte that holds the plane number (bits 16..23) set to p, all
    C-level copies (~5x faster than array("I", range(0x110000))).
    """
    plane_0 = array("I", range(0x10000))
    assert plane_0.itemsize == 4, "utf-32 needs 4-byte code units"
    data = bytearray(plane_0.tobytes() * 17)
    plane_byte = 2 if sys.byteorder == "little" else 1
    data[plane_byte::4] = b"".join(bytes([plane]) * 0x10000 for plane in range(17))
    del data[0xD800 * 4:0xE000 * 4]  # the surrogates: not characters, and the codec refuses them
    return data.decode("utf-32-le" if sys.byteorder == "little" else "utf-32-be")


def _regex_ranges(spelling: str, everything: str) -> Ranges:
    """The code points the `regex` module matches with `spelling`, using its own tables.

    `everything` is _all_code_points() or a prefix of it (such as the 128 ASCII characters)."""
    import regex

    ranges = []
    for m in regex.finditer(f"(?:{spelling})+", everything):
        first, last = m.start(), m.end() - 1  # string indexes; from 0xD800 on they skip the 2048 surrogates
        if first < 0xD800 <= last:
            ranges += [(first, 0xD7FF), (0xE000, last + 0x800)]
        else:
            ranges.append((first if first < 0xD800 else first + 0x800, last if last < 0xD800 else last + 0x800))
    return _merge(ranges)


def _symmetric_difference(a: Ranges, b: Ranges) -> Ranges:
    """Code points in exactly one of two range lists (a sweep over their boundaries)."""
    events = sorted([(lo, 1) for lo, _ in a] + [(hi + 1, -1) for _, hi in a]
                    + [(lo, 1) for lo, _ in b] + [(hi + 1, -1) for _, hi in b])
    out, depth, i = [], 0, 0
    while i < len(events):
        at = events[i][0]
        before = depth
        while i < len(events) and events[i][0] == at:
            depth += events[i][1]
            i += 1
        if depth == 1 and before != 1:
            start = at
        elif before == 1 and depth != 1:
            out.append((start, at - 1))
    return _merge(out)


_disputed: dict[tuple, Ranges] = {}  # key -> its disputed ranges, computed once per process


def disputed_ranges(keys: Iterable[tuple]) -> Ranges:
    """Code points that the `regex` module, with its own tables, puts in a different class than
    the pinned tables do, for any of these pinned constructs. Empty when its Unicode version is
    the pinned one.

    One pass of `regex` over every code point per part of each key (regex_spelling_parts), a few
    milliseconds each; pattern.py asks for it only when a text that is not ASCII needs it.
    Threads may compute the same key at once: each stores the same value, whole."""
    keys = list(keys)
    missing = [key for key in keys if key not in _disputed]
    if missing:
        everything = _all_code_points()
        for key in missing:
            _disputed[key] = _disputed_within(key, everything)
    return _merge(r for key in keys for r in _disputed[key])


def _disputed_within(key: tuple, code_points: str) -> Ranges:
    """disputed_ranges((key,)) among the first len(code_points) code points of _all_code_points()."""
    last = len(code_points) - 1 if len(code_points) <= 0xD800 else len(code_points) + 0x7FF
    pinned = tuple((lo, min(hi, last)) for lo, hi in pinned_ranges(key) if lo <= last)
    matched = _merge(r for part in regex_spelling_parts(key) for r in _regex_ranges(part, code_points))
    return _symmetric_difference(pinned, matched)


_ASCII = "".join(map(chr, range(0x80)))


@functools.cache
def ascii_is_disputed(keys: frozenset) -> bool:
    """Whether disputed_ranges(keys) holds an ASCII character (never, unless the tables were broken).

    Asked of the 128 ASCII characters alone (a `regex` pass over 128 characters, not 1.1M), so
    that a splitter knows at once whether ASCII text may take its fast route, and ASCII text
    never waits for disputed_ranges."""
    return any(_disputed_within(key, _ASCII) for key in keys)


# --------------------------------------------------------------------------- the stand-in trick
@functools.cache
def stand_ins(keys: frozenset, disputed: Ranges) -> dict[int, str] | None:
    """A str.translate table: each disputed character -> a stand-in, or None if one is missing.

    The stand-in of a character d is a character that is in every pinned class of `keys` that d
    is in, and in no other, and that is itself not disputed, so that the `regex` module, with its
    own tables, puts it in exactly the classes in which tiktoken puts d. If nothing in a pattern
    depends on a character except its membership in those classes (Rewritten.translatable:
    no \\w, no scripts, no backreferences, no non-ASCII literals), then running the *native*
    pattern on the translated text matches at the same positions, with pieces of the same
    lengths, as tiktoken on the original text. Cutting the original at those lengths gives
    tiktoken's pieces, at about the native pattern's speed instead of the exact one's.
    """
    ordered = sorted(keys, key=repr)
    classes = [pinned_ranges(key) for key in ordered]

    def signature(c: int) -> tuple[bool, ...]:
        return tuple(_contains(ranges, c) for ranges in classes)

    # A character's signature changes only where a class starts or ends, so it is computed once
    # per segment of the disputed ranges between two such places, not once per character.
    segments = _cut_at_boundaries(disputed, classes)
    needed = {signature(lo) for lo, _ in segments}
    # Every class is a union of whole General_Category runs, White_Space or a few case-fold
    # characters, so the signatures that exist all show up on these candidates.
    starts, _ = _category_runs()
    candidates = set(starts) | {s - 1 for s in starts[1:]} | {MAX_CODE_POINT}
    candidates |= {c for key in ordered if key[0] != "gc" for lo, hi in pinned_ranges(key) for c in range(lo, hi + 1)}
    chosen: dict[tuple[bool, ...], int] = {}  # signature -> the smallest candidate that has it
    for c in sorted(candidates):
        if c >= 0x80 and not 0xD800 <= c <= 0xDFFF and not _contains(disputed, c):
            chosen.setdefault(signature(c), c)
            if needed <= chosen.keys():  # later candidates could only choose for other signatures
                break
    if not needed <= chosen.keys():
        return None
    table: dict[int, str] = {}
    for lo, hi in segments:
        table.update(dict.fromkeys(range(lo, hi + 1), chr(chosen[signature(lo)])))
    return table


def _cut_at_boundaries(ranges: Ranges, classes: list[Ranges]) -> list[tuple[int, int]]:
    """`ranges`, each cut where a range of `classes` starts or ends after its start: within each
    piece, every character is in the same classes."""
    cuts = sorted({lo for cls in classes for lo, _ in cls} | {hi + 1 for cls in classes for _, hi in cls})
    pieces = []
    for lo, hi in ranges:
        i = bisect.bisect_right(cuts, lo)  # the first cut after lo
        while i < len(cuts) and cuts[i] <= hi:
            pieces.append((lo, cuts[i] - 1))
            lo = cuts[i]
            i += 1
        pieces.append((lo, hi))
    return pieces


def _contains(ranges: Ranges, c: int) -> bool:
    i = bisect.bisect_right(ranges, (c, MAX_CODE_POINT + 1)) - 1
    return i >= 0 and ranges[i][0] <= c <= ranges[i][1]
