"""Loading a tokenizer does only the work that every text needs, and the cheaper ways of doing the
rest give exactly what the plain definitions give (tokenizer/pattern.py, unicode_classes.py,
core.py, formats.py).

Left for first need: which characters the installed `regex` module classifies differently from
tiktoken ("disputed": a pass of `regex` over every code point), on the first text that is not
ASCII, and their stand-ins, on the first text that holds one. Which characters are disputed
depends on the installed `regex`, so some are declared disputed here as well (as in
test_unicode_parity.py: flagging a character costs speed, never exactness).
"""

from __future__ import annotations

import base64
import bisect
import json
import random
import sys
import threading
import time

import pytest

from tokenizer import Tokenizer, TokenizerFileError
from tokenizer import pattern as pattern_module
from tokenizer import unicode_classes as uc
from tokenizer.openai_encodings import ENCODINGS
from tokenizer.pattern import GPT2_PATTERN, compile_pattern, piece_splitter

PATTERNS = {"gpt2": GPT2_PATTERN, **{name: ENCODINGS[name].pattern for name in ("cl100k_base", "o200k_base")}}
# Declared disputed: é (a letter), 一 (a letter), U+3000 (a space), U+0660 (a digit), U+00D7 (a symbol).
FLAGGED = ((0xD7, 0xD7), (0xE9, 0xE9), (0x660, 0x660), (0x3000, 0x3000), (0x4E00, 0x4E00))
DISPUTED_TEXTS = ["café \u4e00x", "a\u3000\u3000b 1\u06602 x\u00d7y", "it's é's", "\u00e9\u00e9 ", "\u0558x 😀\u0660"]


@pytest.fixture(scope="module")
def gpt2_file(gpt2_files, tmp_path_factory):
    return Tokenizer.from_gpt2_files(*gpt2_files).save(tmp_path_factory.mktemp("tok") / "gpt2.ljt.json")


@pytest.fixture
def recorded(monkeypatch) -> list[str]:
    """Records each computation of the disputed characters and of their stand-ins (and flags FLAGGED)."""
    calls: list[str] = []
    real_disputed, real_stand_ins = pattern_module.disputed_ranges, pattern_module.stand_ins

    def disputed_ranges(keys):
        calls.append("disputed_ranges")
        return uc._merge(real_disputed(keys) + FLAGGED)

    def stand_ins(keys, disputed):
        calls.append("stand_ins")
        return real_stand_ins(keys, disputed)

    monkeypatch.setattr(pattern_module, "disputed_ranges", disputed_ranges)
    monkeypatch.setattr(pattern_module, "stand_ins", stand_ins)
    return calls


# ------------------------------------------------------------------------------ what a load does
def test_disputed_characters_wait_for_a_text_that_needs_them(gpt2_file, tiktoken_gpt2, recorded):
    tok = Tokenizer.load(gpt2_file)
    assert recorded == []
    for text in ("Plain ASCII, it's 42 words.\n\n", "naïve Zürich — “quoted”", *DISPUTED_TEXTS):
        assert tok.encode(text) == tiktoken_gpt2.encode(text), text
        if text.isascii():
            assert recorded == []  # ASCII text never needs them
        elif text.startswith("naïve"):
            assert recorded == ["disputed_ranges"]  # which ones are disputed, but no stand-ins yet
    assert recorded == ["disputed_ranges", "stand_ins"]  # each once, whatever came after


def test_first_use_from_many_threads_splits_exactly(recorded, monkeypatch):
    """Threads that all meet their first disputed character at once may each compute what the
    splitter lacks; none may see it half made (every split is the exact spelling's). Computing is
    slowed down, so that the others run while one computes."""
    for name in ("disputed_ranges", "stand_ins"):
        monkeypatch.setattr(pattern_module, name, _slowed(getattr(pattern_module, name)))
    exact = compile_pattern(GPT2_PATTERN).findall
    rng = random.Random(3)
    texts = [rng.choice(DISPUTED_TEXTS) + rng.choice(["", " ", "'s", "héllo", "x"]) for _ in range(200)]
    expected = [exact(text) for text in texts]
    for _ in range(5):
        split = piece_splitter(GPT2_PATTERN)
        start, results = threading.Barrier(8), {}

        def work(i: int, split=split, start=start, results=results) -> None:
            start.wait()
            results[i] = [split(text) for text in texts]

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as possible
        try:
            threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            sys.setswitchinterval(interval)
        assert len(results) == 8 and all(result == expected for result in results.values())
    assert recorded.count("disputed_ranges") >= 5 and recorded.count("stand_ins") >= 5


def _slowed(func):
    def slowed(*args):
        time.sleep(0.005)
        return func(*args)

    return slowed


# --------------------------------------------------------------- cheaper, and the same as before
def test_all_code_points():
    everything = uc._all_code_points()
    assert everything == "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


def _plain_disputed(key: tuple, everything: str) -> uc.Ranges:
    """The definition: pinned class XOR what `regex` matches with the class spelled as one set."""
    return uc._symmetric_difference(uc.pinned_ranges(key), uc._regex_ranges(uc.regex_spelling(key), everything))


def test_disputed_ranges_are_the_definition():
    """A group of categories is scanned as one property (\\p{L}, not [\\p{Ll}\\p{Lm}...], ~8x
    faster): the installed `regex` must agree that the two are the same class."""
    everything = uc._all_code_points()
    keys = {("gc", members) for members in uc._NAMED_GROUPS.values()}
    keys |= {("gc", frozenset({"Lu", "Ll", "Lt", "Nd"})), ("gc", frozenset({"Nd", "Nl", "Zs", "Lo"}))}
    keys |= {key for pattern in PATTERNS.values() for key in uc.rewrite(pattern).keys}
    assert uc.regex_spelling_parts(("gc", frozenset({"Lu", "Ll", "Lt", "Lm", "Lo"}))) == (r"\p{L}",)
    for key in keys:
        assert uc._disputed_within(key, everything) == _plain_disputed(key, everything), key
    ascii_only = everything[:0x80]
    assert not any(uc._disputed_within(key, ascii_only) for key in keys)


def test_a_disputed_ascii_character_is_noticed(monkeypatch):
    """ascii_is_disputed (which decides whether ASCII text may skip every check) looks at the 128
    ASCII characters only: it must see one that the tables and `regex` disagree on."""
    numbers = frozenset({("gc", frozenset({"Nd", "Nl", "No"}))})
    assert not uc.ascii_is_disputed.__wrapped__(numbers)
    real = uc.pinned_ranges
    monkeypatch.setattr(uc, "pinned_ranges", lambda key: uc._merge(real(key) + ((0x21, 0x21),)))  # "!" a number
    assert uc.ascii_is_disputed.__wrapped__(numbers)


def _plain_stand_ins(keys: frozenset, disputed: uc.Ranges) -> dict[int, str] | None:
    """The definition, character by character (what stand_ins computed before it cut ranges)."""
    classes = [uc.pinned_ranges(key) for key in sorted(keys, key=repr)]

    def contains(ranges, c):
        i = bisect.bisect_right(ranges, (c, uc.MAX_CODE_POINT + 1)) - 1
        return i >= 0 and ranges[i][0] <= c <= ranges[i][1]

    def signature(c):
        return tuple(contains(ranges, c) for ranges in classes)

    needed = {signature(c) for lo, hi in disputed for c in range(lo, hi + 1)}
    starts, _ = uc._category_runs()
    candidates = set(starts) | {s - 1 for s in starts[1:]} | {uc.MAX_CODE_POINT}
    candidates |= {c for key in keys if key[0] != "gc" for lo, hi in uc.pinned_ranges(key) for c in range(lo, hi + 1)}
    chosen = {}
    for c in sorted(candidates):
        if c >= 0x80 and not 0xD800 <= c <= 0xDFFF and not contains(disputed, c):
            chosen.setdefault(signature(c), c)
    if not needed <= chosen.keys():
        return None
    return {c: chr(chosen[signature(c)]) for lo, hi in disputed for c in range(lo, hi + 1)}


@pytest.mark.parametrize("name", list(PATTERNS))
def test_stand_ins_are_the_definition(name):
    keys = uc.rewrite(PATTERNS[name]).keys
    # Ranges across class boundaries: letters of all cases, modifier letters, × and ÷, digits and
    # punctuation, spaces and format characters.
    declared = ((0xC0, 0x17E), (0x180, 0x2FF), (0x660, 0x66F), (0x2000, 0x200F))
    disputed = uc._merge(uc.disputed_ranges(keys) + declared)
    table = uc.stand_ins(keys, disputed)
    assert table is not None and len(set(table.values())) >= 4
    assert table == _plain_stand_ins(keys, disputed)
    # With the long s disputed too, a pattern with (?i)s has no stand-in for it (nothing else is a
    # lowercase letter that (?i)s matches), and the answer is None.
    long_s = uc._merge(disputed + ((0x17F, 0x17F),))
    assert (uc.stand_ins(keys, long_s) is None) == (("fold", "s") in keys)
    assert uc.stand_ins(keys, long_s) == _plain_stand_ins(keys, long_s)


# ------------------------------------------------------------------------ validation is unchanged
def _load_edited(path, tmp_path, edit) -> str:
    doc = json.loads(path.read_text(encoding="utf-8"))
    edit(doc)
    edited = tmp_path / "edited.ljt.json"
    edited.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(TokenizerFileError) as err:
        Tokenizer.load(edited)
    return str(err.value).removeprefix(f"{edited}: invalid tokenizer file: ")


def _error(call) -> str:
    with pytest.raises((TypeError, ValueError)) as err:
        call()
    return str(err.value)


@pytest.mark.parametrize("bad", ["not base64!", "QQ", "é", 5, None, ["QQ=="]])
def test_a_bad_token_keeps_its_error(gpt2_file, tmp_path, bad):
    message = _load_edited(gpt2_file, tmp_path, lambda doc: doc["tokens"].__setitem__(300, bad))
    assert message == _error(lambda: base64.b64decode(bad, validate=True))


def test_bad_merges_keep_their_errors(gpt2_file, tmp_path):
    tokens = [base64.b64decode(t) for t in json.loads(gpt2_file.read_text(encoding="utf-8"))["tokens"]]
    left, right = tokens[50000], tokens[50001]
    assert left + right not in tokens
    edit = lambda doc: doc["merges"].__setitem__(7, [50000, 50001])  # noqa: E731
    assert _load_edited(gpt2_file, tmp_path, edit) == \
        f"merges[7] = {(left, right)!r}: both parts and their concatenation must be tokens"
    edit = lambda doc: doc["merges"].__setitem__(7, [0, 1, 2])  # noqa: E731
    assert _load_edited(gpt2_file, tmp_path, edit) == "too many values to unpack (expected 2)"

    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 256}
    good = (b"a", b"b")
    for merges, error in [
        ([good, (b"a", "b")], "merges[1] must be a pair of bytes, not (b'a', 'b')"),
        ([good, good, (b"a",)], "merges[2] must be a pair of bytes, not (b'a',)"),
        ([good, 7], "merges[1] must be a pair of bytes, not 7"),
        ([(b"b", b"a"), (b"a", "b")], "merges[0] = (b'b', b'a'): both parts and their concatenation must be tokens"),
        ([(bytearray(b"a"), b"b")], "merges[0] must be a pair of bytes, not (bytearray(b'a'), b'b')"),
    ]:
        assert _error(lambda merges=merges: Tokenizer(ranks, merges=merges)) == error
    assert Tokenizer(ranks, merges=iter([[b"a", b"b"]])).merges == [good]  # any iterable of pairs, made tuples
