"""Every code point is classified exactly as tiktoken classifies it (tokenizer/unicode_classes.py).

The main tests run all 1,112,064 code points (surrogates have no UTF-8 form) through tiktoken and
through our pre-tokeniser, in several contexts, for GPT-2's, cl100k_base's and o200k_base's
patterns, and compare where the two cut the text into pieces.

Reading tiktoken's pieces. tiktoken does not return its pieces, only token ids, and BPE can hide
a difference: if no merge joins "a" and "X", then "aX" as one piece and "a", "X" as two give the
same ids. So the comparison uses a vocabulary built to make every piece boundary visible. The
texts consist of non-ASCII test characters separated by short ASCII strings S (a few kinds of S);
the vocabulary holds the 256 bytes and:
  - every substring of each S;
  - each non-empty suffix of S followed by each UTF-8 lead byte, and each continuation byte
    followed by each non-empty prefix of S;
  - continuation byte + S + lead byte (with S empty: continuation byte + lead byte).
Within any piece, BPE with this vocabulary can always merge an ASCII run with the last byte of
the character before it and the first byte of the character after it (all those concatenations
are tokens), and nothing else merges: a character's inner bytes never join each other. So every
piece ends as tokens whose boundaries all fall *inside* characters, whatever order BPE merges in,
and the token boundaries that fall *between* characters are exactly the piece boundaries. ASCII
test characters (which would break "inner bytes") are compared separately, with a vocabulary of
every substring of their texts, where each piece becomes one token.

Our side is the splitter the encoder itself uses (for GPT-2's pattern: the chunk splitter, then
the piece splitter on each chunk), fed the text in segments of a few thousand code points, so
that segments with characters that the installed `regex` module classifies differently take the
stand-in route and the others the plain one, as documents would (tokenizer/pattern.py).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import random
import sys

import numpy as np
import pytest
import regex
import tiktoken

from tokenizer import Tokenizer, unicode_data
from tokenizer import core as tokenizer_core
from tokenizer import pattern as pattern_module
from tokenizer.openai_encodings import ENCODINGS, packaged_rank_file
from tokenizer.pattern import (
    GPT2_PATTERN,
    REGEX_WHITESPACE,
    DisputedSearch,
    chunk_splitter,
    compile_pattern,
    piece_splitter,
)
from tokenizer.unicode_classes import UNICODE_VERSION, category_ranges, disputed_ranges, rewrite
from tokenizer.unicode_classes import _merge as merge_ranges

NON_ASCII = [chr(c) for c in range(0x80, sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
ASCII = [chr(c) for c in range(128)]
# The ASCII strings between test characters. Each character is tested twice, once in code point
# order (next to its neighbours in the code chart: runs of one class, class changes at block
# edges) and once in a shuffled order (next to anything), and each time between two of these:
# nothing, an apostrophe (contractions and their (?i) letters: "'" c "x"), "'l" and "'r" (c as the
# second letter of 'll, 're), a space, a letter, a digit, a newline.
SEPARATORS = ("", "'", " ", "a", "", "x'", "1", "\n", "'l", "A", "'r", "")
SEGMENT = 4096  # code points per text handed to both sides


def openai_definition(name: str) -> dict:
    """tiktoken's own definition of an OpenAI encoding (pattern, special tokens), built offline: the
    download is replaced by the packaged file, whose sha256 must be the one tiktoken expects."""
    from tiktoken_ext import openai_public

    def load_packaged(url: str, expected_hash: str) -> dict[bytes, int]:
        raw = gzip.decompress(packaged_rank_file(name).read_bytes())
        assert hashlib.sha256(raw).hexdigest() == expected_hash, f"the packaged {name} is not OpenAI's file"
        return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in raw.splitlines())}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(openai_public, "load_tiktoken_bpe", load_packaged)
        return getattr(openai_public, name)()


@pytest.fixture(scope="module")
def definitions() -> dict[str, dict]:
    return {name: openai_definition(name) for name in ("cl100k_base", "o200k_base")}


@pytest.fixture(scope="module")
def patterns(definitions) -> dict[str, str]:
    from tiktoken_ext import openai_public

    return {"gpt2": openai_public.r50k_pat_str, **{name: d["pat_str"] for name, d in definitions.items()}}


def test_our_copies_of_openai_definitions_are_tiktoken_s(definitions, patterns):
    assert patterns["gpt2"] == GPT2_PATTERN == ENCODINGS["r50k_base"].pattern
    for name, d in definitions.items():
        assert ENCODINGS[name].pattern == d["pat_str"]
        assert dict(ENCODINGS[name].special_tokens) == d["special_tokens"]
        assert ENCODINGS[name].n_ranks == len(d["mergeable_ranks"])


# ------------------------------------------------------------------------------ piece boundaries
def boundary_vocabulary(separators) -> dict[bytes, int]:
    """The vocabulary of the module docstring, for test characters separated by `separators`."""
    lead = [bytes([b]) for b in range(0xC2, 0xF5)]
    continuation = [bytes([b]) for b in range(0x80, 0xC0)]
    tokens = {bytes([b]) for b in range(256)}
    for sep in (s.encode() for s in separators):
        tokens |= {sep[i:j] for i in range(len(sep)) for j in range(i + 2, len(sep) + 1)}
        for k in range(len(sep)):
            tokens |= {sep[k:] + b for b in lead} | {b + sep[: k + 1] for b in continuation}
        tokens |= {c + sep + b for c in continuation for b in lead}
    return {token: rank for rank, token in enumerate(sorted(tokens, key=lambda t: (len(t), t)))}


def tiktoken_piece_ends(enc, token_lengths: np.ndarray, text: str) -> np.ndarray:
    """Character offsets where tiktoken's pieces end: its token boundaries that fall between characters."""
    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    ends = np.cumsum(token_lengths[np.asarray(enc.encode_ordinary(text), dtype=np.int64)])
    starts_a_character = np.append((data & 0xC0) != 0x80, True)
    characters_before = np.concatenate(([0], np.cumsum(starts_a_character[:-1])))
    return characters_before[ends[starts_a_character[ends]]]


def encoder_splitter(pattern: str):
    """Text -> pieces, composed the way Tokenizer composes it (core.py, bpe.ChunkCache)."""
    pieces = piece_splitter(pattern)
    chunks = chunk_splitter(pattern)
    if chunks is None:
        return pieces
    return lambda text: [piece for chunk in chunks(text) for piece in pieces(chunk)]


def first_difference(text: str, ours: np.ndarray, theirs: np.ndarray) -> str:
    n = min(len(ours), len(theirs))
    i = int(np.argmax(ours[:n] != theirs[:n])) if (ours[:n] != theirs[:n]).any() else n
    at = int(min(ours[i] if i < len(ours) else len(text), theirs[i] if i < len(theirs) else len(text)))
    window = text[max(0, at - 8): at + 8]
    return f"pieces differ near {window!r} ({' '.join(f'U+{ord(ch):04X}' for ch in window)})"


def compare_non_ascii(pattern: str, texts: list[str], split=None) -> None:
    """Assert that `split` (default: the encoder's) cuts each text where tiktoken does."""
    vocabulary = boundary_vocabulary(("", *SEPARATORS))
    enc = tiktoken.Encoding("boundaries", pat_str=pattern, mergeable_ranks=vocabulary, special_tokens={})
    token_lengths = np.array([len(t) for t, _ in sorted(vocabulary.items(), key=lambda kv: kv[1])], np.int64)
    split = split or encoder_splitter(pattern)
    for text in texts:
        ours = np.cumsum(np.fromiter(map(len, split(text)), np.int64))
        theirs = tiktoken_piece_ends(enc, token_lengths, text)
        assert np.array_equal(ours, theirs), first_difference(text, ours, theirs)


def with_separators(characters: list[str], offset: int) -> list[str]:
    """Texts of SEGMENT characters each, the i-th character followed by separator i + offset."""
    n = len(SEPARATORS)
    return ["".join(c + SEPARATORS[(start + i + offset) % n] for i, c in enumerate(characters[start: start + SEGMENT]))
            for start in range(0, len(characters), SEGMENT)]


PATTERN_NAMES = ("gpt2", "cl100k_base", "o200k_base")


@pytest.fixture(scope="module")
def every_code_point() -> list[str]:
    shuffled = NON_ASCII[:]
    random.Random(1).shuffle(shuffled)
    return with_separators(NON_ASCII, 0) + with_separators(shuffled, 5)


@pytest.mark.parametrize("name", PATTERN_NAMES)
def test_every_code_point(patterns, every_code_point, name):
    compare_non_ascii(patterns[name], every_code_point)


@pytest.mark.parametrize("name", PATTERN_NAMES)
def test_every_ascii_character_in_contexts(patterns, name):
    texts = [c + "".join(sep + c for sep in SEPARATORS) for c in ASCII] + ["".join(ASCII), "".join(ASCII[::-1])]
    tokens = {t[i:j].encode() for t in texts for i in range(len(t)) for j in range(i + 1, len(t) + 1)}
    tokens |= {bytes([b]) for b in range(256)}
    vocabulary = {token: rank for rank, token in enumerate(sorted(tokens, key=lambda t: (len(t), t)))}
    enc = tiktoken.Encoding("every substring", pat_str=patterns[name], mergeable_ranks=vocabulary, special_tokens={})
    split = encoder_splitter(patterns[name])
    for text in texts:  # every substring is a token, so each of tiktoken's pieces is one token
        assert [enc.decode_single_token_bytes(t) for t in enc.encode_ordinary(text)] == \
            [p.encode() for p in split(text)], repr(text)


def test_the_boundary_vocabulary_sees_a_difference():
    """The method itself: a splitter whose tables call U+05C9 a letter, as Unicode 17.0's do (tiktoken's
    16.0 tables leave it unassigned), is caught, although no merge of a real vocabulary may show it."""
    newer = GPT2_PATTERN.replace(r"\p{L}++", r"[\p{L}\u05c9]++").replace(r"\p{L}\p{N}]", r"\p{L}\u05c9\p{N}]")
    texts = ["".join(c + sep for c in ("\u05c9", "\u00e9", "\u4e00") for sep in SEPARATORS)]
    with pytest.raises(AssertionError, match="pieces differ"):
        compare_non_ascii(GPT2_PATTERN, texts, split=regex.compile(newer).findall)
    compare_non_ascii(GPT2_PATTERN, texts)


# ------------------------------------------------------------------ OpenAI's real vocabularies
@pytest.fixture(scope="module")
def vocabularies(definitions, gpt2_files, tiktoken_gpt2):
    """name -> (our Tokenizer from the .tiktoken file, tiktoken's Encoding from its own definition)."""
    pairs = {"gpt2": (Tokenizer.from_gpt2_files(*gpt2_files), tiktoken_gpt2)}
    for name, d in definitions.items():
        pairs[name] = (Tokenizer.from_tiktoken(packaged_rank_file(name)), tiktoken.Encoding(**d))
    return pairs


def test_reported_examples(vocabularies):
    ours, theirs = vocabularies["o200k_base"]
    assert ours.encode("\u05c9'x") == theirs.encode("\u05c9'x") == [147, 231, 6, 87]
    for name, (ours, theirs) in vocabularies.items():
        for text in ("\u0558", "a\u058b", " \u05c9'x", "\u088f's", "\u0c5c1", "x\ua7ce'S", "don'\u017ft", "'K'\u212a"):
            assert ours.encode(text) == theirs.encode(text), (name, text)


@pytest.mark.parametrize("name", PATTERN_NAMES)
def test_real_vocabularies_on_characters_the_versions_disagree_on(vocabularies, patterns, name):
    """Ids, end to end (caches and all), with each model's real ranks, on every character that the
    installed `regex` module classifies differently from tiktoken plus a sample of all others."""
    ours, theirs = vocabularies[name]
    disputed = disputed_characters(patterns[name])
    sample = NON_ASCII[::211] + ["\u0295", "\u017f", "\u212a", "\u0130", "\u0131", "\u1e9e"]
    for text in with_separators(disputed + sample, 0) + with_separators(disputed + sample, 1):
        assert ours.encode_ordinary(text) == theirs.encode_ordinary(text)


# ------------------------------------------------------------------------------ the machinery
def test_tables_are_tiktoken_s_unicode_version():
    assert UNICODE_VERSION == unicode_data.UNICODE_VERSION == "16.0.0"
    letters = category_ranges(frozenset({"Lu", "Ll", "Lt", "Lm", "Lo"}))
    is_letter = lambda c: any(lo <= c <= hi for lo, hi in letters)  # noqa: E731
    assert is_letter(0x105C0) and not is_letter(0x10940)  # Todhri (16.0) yes, Sidetic (17.0) no
    assert "".join(chr(c) for lo, hi in unicode_data.WHITE_SPACE for c in range(lo, hi + 1)) == REGEX_WHITESPACE
    assert unicode_data.CASE_FOLDS["s"] == "Ss\u017f" and unicode_data.CASE_FOLDS["k"] == "Kk\u212a"


def test_general_categories_cover_every_code_point_once():
    ranges = sorted(r for gc in ("Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps",
                                 "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs",
                                 "Co", "Cn") for r in category_ranges(frozenset({gc})))
    assert ranges[0][0] == 0 and ranges[-1][1] == 0x10FFFF
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))


@pytest.mark.parametrize("pattern, native, exact_has", [
    (r"\s++$|\s", r"\s++\Z|\s", r"[\u0009-\u000d\u0020"),
    (r"(?m:a$)b$", r"(?m:a$)b\Z", None),
    (r"[^\s\p{L}]", r"[^\s\p{L}]", r"[^\u0009-\u000d\u0020"),
    (r"[]\P{^N}x]", r"[]\P{^N}x]", r"[]x\u0030-\u0039"),
    (r"\pL|\p{Letter}|\p{gc=L}", r"\pL|\p{Letter}|\p{gc=L}", r"[\u0041-\u005a"),
    (r"(?i:'s|x\x41)(?P<name>s)(?P=name)s", r"(?i:'s|x\x41)(?P<name>s)(?P=name)s",
     r"(?i:'(?-i:[\u0053\u0073\u017f])|(?-i:[\u0058\u0078])\x41)(?P<name>s)(?P=name)s"),
    (r"\p{Greek}\w\z", r"\p{Greek}\w\Z", r"\p{Greek}\w\Z"),
])
def test_rewrite(pattern, native, exact_has):
    spelled = rewrite(pattern)
    assert spelled.native == native
    assert (exact_has or native) in spelled.exact
    regex.compile(spelled.exact)


def test_end_of_text_means_what_it_means_to_tiktoken():
    # Python's $ also matches before a final "\n"; Rust's (tiktoken's) only at the very end.
    pattern = r"a$|(?s:.+)"
    enc = tiktoken.Encoding("t", pat_str=pattern, mergeable_ranks={bytes([b]): b for b in range(256)} | {b"a\n": 256},
                            special_tokens={})
    assert enc.encode_ordinary("a\n") == [256]  # one piece
    assert piece_splitter(pattern)("a\n") == ["a\n"]


def test_disputed_search():
    search = DisputedSearch(((0x0558, 0x0558), (0xA7CE, 0xA7CF), (0x10940, 0x10959)))
    assert search("ab\u0558") and search("\ua7cf") and search("x \U00010941 y")
    assert not search("") and not search("héllo 😀 wörld \U00010939 \U0001095a \U0010ffff")
    assert search("😀😀 \U00010959")


def test_fingerprint_names_the_unicode_version(monkeypatch, gpt2_files):
    tok = Tokenizer.from_gpt2_files(*gpt2_files)
    assert tok.fingerprint.startswith("0b8528659fbcee9f")  # the fingerprint GPT-2 has always had
    monkeypatch.setattr(tokenizer_core, "UNICODE_VERSION", "17.0.0")
    assert Tokenizer.from_gpt2_files(*gpt2_files).fingerprint != tok.fingerprint


# ------------------------------------------------------------------------ .tiktoken files, both ways
def test_from_tiktoken_recognises_openai_files(tmp_path):
    packaged = packaged_rank_file("cl100k_base")
    plain = tmp_path / "renamed.tiktoken"
    plain.write_bytes(gzip.decompress(packaged.read_bytes()))
    for path in (packaged, plain):
        tok = Tokenizer.from_tiktoken(path)
        assert (tok.name, tok.pattern, tok.special_tokens) == \
            ("cl100k_base", ENCODINGS["cl100k_base"].pattern, dict(ENCODINGS["cl100k_base"].special_tokens))
        assert tok.encode("hello world<|endoftext|>", allowed_special="all") == [15339, 1917, 100257]
    other = tmp_path / "mine.tiktoken.gz"
    other.write_bytes(gzip.compress(b"".join(b"%s %d\n" % (base64.b64encode(bytes([b])), b) for b in range(256))))
    tok = Tokenizer.from_tiktoken(other)
    assert (tok.name, tok.pattern, tok.special_tokens) == ("mine", GPT2_PATTERN, {"<|endoftext|>": 256})
    assert Tokenizer.from_tiktoken(other, pattern=r"\S+|\s+", name="x").pattern == r"\S+|\s+"


def test_to_tiktoken(vocabularies, monkeypatch):
    ours, theirs = vocabularies["o200k_base"]
    enc = ours.to_tiktoken()
    text = "Héllo wörld! \u05c9'x 123456 <|endoftext|> 😀"
    assert enc.encode(text, allowed_special="all") == theirs.encode(text, allowed_special="all")
    assert (enc.name, enc.n_vocab) == ("o200k_base", 200019)
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    with pytest.raises(ImportError, match="needs the tiktoken package"):
        ours.to_tiktoken()


def disputed_characters(pattern: str) -> list[str]:
    """The characters that the installed `regex` module classifies differently from tiktoken for
    this pattern (empty when its Unicode version is tiktoken's)."""
    return [chr(c) for lo, hi in disputed_ranges(rewrite(pattern).keys) for c in range(lo, hi + 1)]


@pytest.mark.parametrize("name", PATTERN_NAMES)
def test_exact_spelling_on_characters_the_versions_disagree_on(patterns, name):
    """compile_pattern's spelling (explicit classes everywhere) is tiktoken's too; the splitter
    falls back to it for patterns the stand-in route cannot serve."""
    texts = with_separators(disputed_characters(patterns[name]) + NON_ASCII[::997], 3)
    compare_non_ascii(patterns[name], texts, split=compile_pattern(patterns[name]).findall)


@pytest.fixture
def exact_compiles(monkeypatch) -> list[str]:
    """Records every compile of an exact spelling (only those are thousands of characters long)."""
    calls: list[str] = []
    real_compile = regex.compile

    def counting_compile(pattern, *args, **kwargs):
        if len(pattern) > 5000:
            calls.append(pattern)
        return real_compile(pattern, *args, **kwargs)

    monkeypatch.setattr(regex, "compile", counting_compile)
    return calls


def test_routes_of_the_splitter(patterns, exact_compiles, monkeypatch):
    """Ordinary text takes the native pattern; text with a disputed character the stand-ins; only a
    pattern that stand-ins cannot serve (here: a non-ASCII literal, which a stand-in could collide
    with) compiles the slow exact spelling. Which characters are disputed depends on the installed
    `regex` module, so more are declared disputed here: flagging a character costs speed, never
    exactness, so every route must still split like tiktoken."""
    split = piece_splitter(patterns["o200k_base"])
    assert split("Grüße, мир! 日本語 😀 x'S") == ["Grüße", ",", " мир", "!", " 日本語", " 😀", " x'S"]
    assert split("\u05c9'x") == ["\u05c9'", "x"]
    assert exact_compiles == []
    flagged = ((0xE9, 0xE9), (0x3000, 0x3000), (0x4E00, 0x4E00), (0x1F600, 0x1F600), (0x10940, 0x10959))
    monkeypatch.setattr(pattern_module, "disputed_ranges", lambda keys: merge_ranges(disputed_ranges(keys) + flagged))
    texts = with_separators(["\u00e9", "\u3000", "\u4e00", "\U0001f600", "\U00010940", "\u05c9"] + NON_ASCII[::4099], 0)
    for name in PATTERN_NAMES:
        compare_non_ascii(patterns[name], texts)
    # A pattern whose matches leave gaps: pieces are cut at the matches' places, not lengths.
    assert piece_splitter(r"\p{L}+")("ab \U00010940x é") == ["ab", "x", "é"]
    assert exact_compiles == []
    compare_non_ascii(GPT2_PATTERN + "|é", texts)
    assert len(exact_compiles) == 1


def test_the_table_generator_probes_like_the_tables(monkeypatch):
    """scripts/make_unicode_tables.py's probe, on two classes (the whole run takes about a minute)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_unicode_tables", "scripts/make_unicode_tables.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    titlecase = {c for lo, hi in category_ranges(frozenset({"Lt"})) for c in range(lo, hi + 1)}
    assert generator.probe(tiktoken, r"\p{Lt}") == titlecase
    assert generator.probe(tiktoken, "(?i:s)") == {ord(c) for c in unicode_data.CASE_FOLDS["s"]}
