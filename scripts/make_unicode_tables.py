"""Write tokenizer/unicode_data.py: the Unicode tables of tiktoken's regex engine, read off tiktoken itself.

    .venv/bin/python scripts/make_unicode_tables.py           # rewrite tokenizer/unicode_data.py
    .venv/bin/python scripts/make_unicode_tables.py --check   # exit 1 if the committed file is stale

Why. tiktoken splits text with Rust's `regex` crate, whose \\p{L}, \\p{N}, \\s ... come from
tables compiled into the tiktoken wheel, frozen at one Unicode version. Python's `regex` module
has tables of its own, of whatever Unicode version its release follows. Each Unicode release
assigns thousands of new letters, so two engines of different versions cut text containing them
differently, and the token ids differ. The pre-tokeniser therefore uses the tables written here
instead of the `regex` module's (tokenizer/unicode_classes.py explains how, and how it stays fast).

How. By asking tiktoken, so the tables are tiktoken's by construction and no Unicode data files
(nor a network) are needed. For a class X, tiktoken encodes the text "!c!c!c..." (every code point
c once) with the pattern `!X|(?s:.)` and a vocabulary of the 256 single bytes plus the 256 tokens
"!" + byte. When c is in X, "!c" is one piece and BPE merges "!" with c's first byte into one of
the extra tokens; when it is not, "!" and c are separate pieces and "!" stays a token of its own.
One encode per class answers the question for all 1,112,064 code points (surrogates have no UTF-8
form, so tiktoken never sees them; their category is Cs by definition). Probed:
  - each two-letter General_Category (Lu, Ll, ..., Cn): every code point must land in exactly one,
    which checks the probe itself;
  - \\s (White_Space) and \\d (which must equal Nd);
  - case-insensitive matching of each ASCII letter, (?i:x): the code points tiktoken folds onto it
    (for "s" that includes U+017F LATIN SMALL LETTER LONG S, for "k" U+212A KELVIN SIGN).

Which Unicode version that is, tiktoken does not say; the script finds it from landmark letters,
one per release: the newest release whose landmark tiktoken calls a letter, while it calls the
next release's landmark unassigned. It also prints how far Python's own `unicodedata` (an older
or newer version) and the installed `regex` module disagree with tiktoken, for information.
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tokenizer" / "unicode_data.py"

GENERAL_CATEGORIES = (
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po",
    "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Co", "Cn",  # Cs: the surrogates, set by definition
)
SURROGATES = range(0xD800, 0xE000)

# (Unicode version, a letter first assigned in it, what it is). Add a line when tiktoken moves on.
LANDMARKS = (
    ("14.0.0", 0x0870, "ARABIC LETTER ALEF WITH ATTACHED FATHA (Arabic Extended-B)"),
    ("15.0.0", 0x11F04, "KAWI LETTER A"),
    ("15.1.0", 0x2EBF0, "first ideograph of CJK Unified Ideographs Extension I"),
    ("16.0.0", 0x105C0, "TODHRI LETTER A"),
    ("17.0.0", 0x10940, "first letter of the Sidetic block"),
)

CODE_POINTS = [c for c in range(0x110000) if c not in SURROGATES]


def probe_vocabulary() -> dict[bytes, int]:
    ranks = {bytes([b]): b for b in range(256)}
    for b in range(256):
        ranks[b"!" + bytes([b])] = 256 + b
    return ranks


def probe(tiktoken, cls: str) -> set[int]:
    """The code points c for which tiktoken matches `!` + cls on "!c" (see the module docstring)."""
    enc = tiktoken.Encoding(f"probe {cls}", pat_str=f"!{cls}|(?s:.)", mergeable_ranks=probe_vocabulary(),
                            special_tokens={})
    ids = enc.encode_ordinary("".join("!" + chr(c) for c in CODE_POINTS))
    members, i = set(), 0
    for c in CODE_POINTS:
        width = len(chr(c).encode("utf-8"))
        if ids[i] >= 256:  # "!" merged with c's first byte: one piece
            members.add(c)
            i += width
        elif ids[i] == ord("!"):
            i += 1 + width
        else:
            raise SystemExit(f"probe {cls}: unexpected token {ids[i]} at U+{c:04X}")
    if i != len(ids):
        raise SystemExit(f"probe {cls}: {len(ids) - i} tokens left over")
    return members


def to_ranges(members) -> list[tuple[int, int]]:
    ranges: list[list[int]] = []
    for c in sorted(members):
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return [(lo, hi) for lo, hi in ranges]


def category_runs(category_of: dict[int, str]) -> list[tuple[int, str]]:
    """[(first code point, category)] for each run of equal categories over 0..10FFFF."""
    runs: list[tuple[int, str]] = []
    for c in range(0x110000):
        gc = category_of[c]
        if not runs or runs[-1][1] != gc:
            runs.append((c, gc))
    return runs


def unicode_version(category_of: dict[int, str]) -> str:
    known = [version for version, c, _ in LANDMARKS if category_of[c] != "Cn"]
    if not known or known != [v for v, _, _ in LANDMARKS[: len(known)]]:
        raise SystemExit(f"landmarks out of order: tiktoken knows {known}; check LANDMARKS")
    if len(known) == len(LANDMARKS):
        raise SystemExit(f"tiktoken knows every landmark up to {known[-1]}: add one for the next Unicode version")
    return known[-1]


def render(version: str, tiktoken_version: str, runs, white_space, folds) -> str:
    lines = [
        f'"""Unicode {version} character data, as tiktoken {tiktoken_version}\'s regex engine classifies it.',
        "",
        "GENERATED by scripts/make_unicode_tables.py (which reads it off tiktoken itself); do not edit.",
        "tokenizer/unicode_classes.py turns it into the character classes of the pre-tokenisation regex.",
        '"""',
        "",
        f'UNICODE_VERSION = "{version}"',
        f'SOURCE = "tiktoken {tiktoken_version}"',
        "",
        "# General_Category as runs: each line 'FIRST GC' covers FIRST up to the next line's FIRST - 1;",
        "# the last run ends at 10FFFF.",
        'GENERAL_CATEGORY_RUNS = """',
    ]
    lines += [f"{first:04X} {gc}" for first, gc in runs]
    lines += ['"""', "", "# \\s: White_Space, as (first, last) ranges.", "WHITE_SPACE = ("]
    lines += [f"    (0x{lo:04X}, 0x{hi:04X})," for lo, hi in white_space]
    lines += [")", "", "# (?i) matching: every code point that matches each ASCII letter case-insensitively.",
              "CASE_FOLDS = {"]
    lines += [f'    "{letter}": "{_escaped(members)}",' for letter, members in folds.items()]
    lines += ["}", ""]
    return "\n".join(lines)


def _escaped(members) -> str:
    """The characters as the body of a Python string literal, non-ASCII ones as \\uXXXX escapes."""
    return "".join(chr(c) if 0x20 < c < 0x7F and chr(c) not in "\\\"" else f"\\U{c:08x}" if c > 0xFFFF
                   else f"\\u{c:04x}" for c in sorted(members))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    args = parser.parse_args(argv)
    import tiktoken  # a dev dependency: this script is not part of the installed package

    category_of: dict[int, str] = {c: "Cs" for c in SURROGATES}
    for gc in GENERAL_CATEGORIES:
        for c in probe(tiktoken, rf"\p{{{gc}}}"):
            if c in category_of:
                raise SystemExit(f"U+{c:04X} is both {category_of[c]} and {gc} to tiktoken: the probe is broken")
            category_of[c] = gc
    missing = [c for c in CODE_POINTS if c not in category_of]
    if missing:
        raise SystemExit(f"{len(missing)} code points in no General_Category, e.g. U+{missing[0]:04X}")
    white_space = probe(tiktoken, r"\s")
    if probe(tiktoken, r"\d") != {c for c, gc in category_of.items() if gc == "Nd"}:
        raise SystemExit(r"tiktoken's \d is not \p{Nd}: unicode_classes.py assumes it is")
    folds = {letter: probe(tiktoken, f"(?i:{letter})") for letter in "abcdefghijklmnopqrstuvwxyz"}
    version = unicode_version(category_of)

    _report(version, category_of, white_space)
    text = render(version, tiktoken.__version__, category_runs(category_of), to_ranges(white_space), folds)
    if args.check:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: rerun scripts/make_unicode_tables.py", file=sys.stderr)
            return 1
        print(f"{OUT} is up to date")
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


def _report(version: str, category_of: dict[int, str], white_space: set[int]) -> None:
    import regex

    print(f"tiktoken follows Unicode {version}")
    python_differs = [c for c in CODE_POINTS if unicodedata.category(chr(c)) != category_of[c]]
    print(f"Python's unicodedata (Unicode {unicodedata.unidata_version}) differs on {len(python_differs)} code points")
    letter = regex.compile(r"\p{L}").match
    regex_differs = [c for c in CODE_POINTS if bool(letter(chr(c))) != category_of[c].startswith("L")]
    print(f"the regex module {regex.__version__} disagrees on \\p{{L}} for {len(regex_differs)} code points")
    print(f"{len(white_space)} White_Space code points")


if __name__ == "__main__":
    sys.exit(main())
