"""Encoding exactness: our pure-Python encoder against tiktoken on GPT-2's vocabulary.

Differential tests are the proof that the caches and the chunk fast path are exact: any text
where they changed the answer would show up as a mismatch with tiktoken.
"""

from __future__ import annotations

import sys

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenizer import Tokenizer, bpe
from tokenizer.pattern import GPT2_CHUNK_PATTERN, GPT2_PATTERN, REGEX_WHITESPACE, chunk_splitter
from tokenizer.reference_bpe import merge_piece

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tok(gpt2_files) -> Tokenizer:
    return Tokenizer.from_gpt2_files(*gpt2_files)


def same_as_tiktoken(tok, enc, text: str) -> None:
    ours = tok.encode_ordinary(text)
    assert ours == enc.encode_ordinary(text), repr(text)
    assert tok.encode(text, disallowed_special=()) == ours


# ------------------------------------------------------------------------------ reference vectors
@pytest.mark.parametrize(
    "text, ids",
    [
        ("hello world", [31373, 995]),
        ("0", [15]),
        ("000", [830]),
        ("000000", [10535]),
        ("000000000", [10535, 830]),  # merge order, not longest match
        ("!", [0]),
        (" ", [220]),
    ],
)
def test_reference_vectors(tok, text, ids):
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text


def test_reference_specials(tok):
    assert tok.encode("hello <|endoftext|>", allowed_special={"<|endoftext|>"}) == [31373, 220, 50256]
    assert tok.encode("hello <|endoftext|>", allowed_special="all") == [31373, 220, 50256]
    assert tok.encode("<|endoftext|>", disallowed_special=()) == [27, 91, 437, 1659, 5239, 91, 29]
    assert tok.encode_ordinary("<|endoftext|>") == [27, 91, 437, 1659, 5239, 91, 29]
    assert tok.eot_id == 50256 == tok.n_vocab - 1
    assert tok.special_tokens == {"<|endoftext|>": 50256}
    assert tok.decode([50256]) == "<|endoftext|>"


def test_disallowed_special_raises_with_advice(tok, tiktoken_gpt2):
    for text in ["<|endoftext|>", "some text <|endoftext|> more"]:
        with pytest.raises(ValueError) as ours:
            tok.encode(text)
        assert str(ours.value).startswith("Encountered text corresponding to disallowed special token")
        assert "allowed_special" in str(ours.value) and "disallowed_special=()" in str(ours.value)
        with pytest.raises(ValueError):
            tiktoken_gpt2.encode(text)
    # Explicitly disallowing a token that is also allowed still raises (tiktoken checks disallowed first).
    with pytest.raises(ValueError, match="disallowed special token"):
        tok.encode("<|endoftext|>", allowed_special="all", disallowed_special={"<|endoftext|>"})


@pytest.mark.parametrize("text", ["a<|endoftext|>b", "<|endoftext|><|endoftext|>", "x <|endoftext|>\n\n y",
                                  "<|endoftext", "  <|endoftext|>  ", ""])
def test_specials_like_tiktoken(tok, tiktoken_gpt2, text):
    for kwargs in [dict(allowed_special="all"), dict(disallowed_special=()),
                   dict(allowed_special={"<|endoftext|>"})]:
        assert tok.encode(text, **kwargs) == tiktoken_gpt2.encode(text, **kwargs)


def test_specials_with_several_tokens():
    ranks = {bytes([b]): i for i, b in enumerate(range(256))}
    tok = Tokenizer(ranks, {"<|a|>": 256, "<|b|>": 257})
    assert tok.encode("x<|a|>y<|b|>", allowed_special={"<|a|>"}, disallowed_special=()) == [
        ord("x"), 256, ord("y"), *b"<|b|>"]
    with pytest.raises(ValueError, match="'<\\|b\\|>'"):
        tok.encode("x<|a|>y<|b|>", allowed_special={"<|a|>"})
    assert tok.eot_id is None and tok.n_vocab == 258


# ----------------------------------------------------------------------------------- the corpus
def test_corpus_equals_tiktoken(tok, tiktoken_gpt2, corpus_texts):
    tok.clear_cache()
    expected = [tiktoken_gpt2.encode_ordinary(t) for t in corpus_texts]
    assert [tok.encode_ordinary(t) for t in corpus_texts] == expected  # cold caches
    assert [tok.encode_ordinary(t) for t in corpus_texts] == expected  # warm caches
    joined = "".join(corpus_texts[:300])
    assert tok.encode(joined) == tiktoken_gpt2.encode(joined)


def test_corpus_decode_round_trip(tok, corpus_texts):
    for text in corpus_texts[:500]:
        assert tok.decode(tok.encode(text)) == text


# ------------------------------------------------------------------------------------ random text
WHITESPACE = REGEX_WHITESPACE + "\x1c\x1d\x1e\x1f\u200b\ufeff"
PROBES = "aZ éß0 9'sdtmlvre.,;!?-_()[]{}\"$€ß中文字日本語한국어😀👍🏽\u0301\u200d"


# st.characters() never yields surrogates, so mix them in explicitly (lone and paired).
ANY_CHAR = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))


@SETTINGS
@given(st.lists(ANY_CHAR, max_size=60).map("".join))
def test_arbitrary_unicode_including_surrogates(tok, tiktoken_gpt2, text):
    same_as_tiktoken(tok, tiktoken_gpt2, text)
    assert tok.encode(text, allowed_special="all") == tiktoken_gpt2.encode(text, allowed_special="all")


@SETTINGS
@given(st.text(max_size=60))
def test_arbitrary_valid_unicode_round_trips(tok, tiktoken_gpt2, text):
    same_as_tiktoken(tok, tiktoken_gpt2, text)
    assert tok.decode(tok.encode_ordinary(text)) == text


@SETTINGS
@given(st.text(alphabet=st.sampled_from(WHITESPACE + "ab1.'"), max_size=40))
def test_whitespace_runs(tok, tiktoken_gpt2, text):
    same_as_tiktoken(tok, tiktoken_gpt2, text)


@SETTINGS
@given(st.lists(st.sampled_from(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'", " '", "don", "I",
                                 " ", "  ", "\n", "123", "4567890", " 12", "3.14", "x", "!!", "中文", "😀",
                                 "👍🏽", "日本語", " 漢字", "\t", "\r\n", "e\u0301", "\u00a0", "\u3000", "—"]),
                max_size=25).map("".join))
def test_contractions_digits_cjk_emoji(tok, tiktoken_gpt2, text):
    same_as_tiktoken(tok, tiktoken_gpt2, text)
    assert tok.decode(tok.encode_ordinary(text)) == text


@SETTINGS
@given(st.text(alphabet=st.sampled_from(PROBES + WHITESPACE), max_size=80))
def test_mixed_probes_round_trip(tok, tiktoken_gpt2, text):
    same_as_tiktoken(tok, tiktoken_gpt2, text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode_bytes(tok.encode(text)) == text.encode("utf-8")


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\ud83d\ude00", "x \ud83d\ude00 y", "\udc00\ud800",
                                  "ok \ud800 ok <|endoftext|>"])
def test_surrogates_like_tiktoken(tok, tiktoken_gpt2, text):
    # tiktoken joins a surrogate pair into its character and turns a lone surrogate into U+FFFD.
    same_as_tiktoken(tok, tiktoken_gpt2, text)
    assert tok.encode(text, allowed_special="all") == tiktoken_gpt2.encode(text, allowed_special="all")


@pytest.mark.parametrize("text", ["a" * 100_000, " " * 100_000, "ab" * 30_000, "\n" * 5000 + "x", "1" * 3001,
                                  "😀" * 2000, " " * 99 + "a", "é" * 150])
def test_long_pieces(tok, tiktoken_gpt2, text):
    same_as_tiktoken(tok, tiktoken_gpt2, text)


# ----------------------------------------------------------------------------- algorithm pieces
@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab \n"), min_size=100, max_size=300))
def test_heap_merge_equals_reference_loop(text):
    ranks = {bytes([b]): b for b in range(256)}
    for i, tok_bytes in enumerate([b"aa", b"ab", b"ba", b"aaa", b"  ", b"bab", b"aab", b"abab", b"aaaa", b"\n "]):
        ranks[tok_bytes] = 256 + i
    piece = text.encode()
    heap = bpe._bpe_parts_heap(piece, ranks, bpe.NO_RANK)
    reference = merge_piece(piece, ranks)
    assert heap == reference and b"".join(heap) == piece


def test_short_pieces_match_reference_loop(tok, corpus_texts):
    ranks = dict(tok.mergeable_ranks)
    words = regex.findall(GPT2_PATTERN, corpus_texts[7])[:300]
    for word in words:
        piece = word.encode()
        assert bpe.bpe_parts(piece, ranks) == merge_piece(piece, ranks)


def test_whitespace_class_is_regex_whitespace():
    # The fast path's chunk regex (stdlib re) must agree with `regex`'s \s on every code point.
    is_space = regex.compile(r"\s").fullmatch
    expected = "".join(chr(c) for c in range(sys.maxunicode + 1) if is_space(chr(c)))
    assert expected == REGEX_WHITESPACE


@SETTINGS
@given(st.text(alphabet=st.sampled_from(PROBES + WHITESPACE), max_size=100))
def test_chunks_never_cross_pieces(text):
    """Pre-tokenising chunk by chunk gives exactly the pieces of the whole text (pattern.py's proof)."""
    split = chunk_splitter(GPT2_PATTERN)
    chunks = split(text)
    assert "".join(chunks) == text
    findall = regex.compile(GPT2_PATTERN).findall
    assert [p for c in chunks for p in findall(c)] == findall(text)


@SETTINGS
@given(st.text(alphabet=st.sampled_from(PROBES + WHITESPACE), max_size=100))
def test_every_piece_is_its_own_only_piece(text):
    """What lets one cache hold chunks and pieces alike (bpe.ChunkCache, pattern.py)."""
    findall = regex.compile(GPT2_PATTERN).findall
    for piece in findall(text):
        assert findall(piece) == [piece]


ASCII_PROBES = "aZs'dmtlver0 9\t\n\r\x0b\x0c\x1c\x1f.-\x00\x7f"


def test_ascii_pattern_equals_gpt2_pattern_on_short_strings():
    import itertools
    import re

    from tokenizer.pattern import GPT2_ASCII_PATTERN

    ours, theirs = re.compile(GPT2_ASCII_PATTERN).findall, regex.compile(GPT2_PATTERN).findall
    strings = ["".join(p) for n in (1, 2) for p in itertools.product(map(chr, range(128)), repeat=n)]
    strings += ["".join(p) for n in (3, 4) for p in itertools.product(ASCII_PROBES, repeat=n)]
    assert [s for s in strings if ours(s) != theirs(s)] == []


@SETTINGS
@given(st.text(alphabet=st.sampled_from(ASCII_PROBES + "'sllvere  "), max_size=60)
       | st.text(alphabet=st.characters(max_codepoint=127), max_size=60))
def test_ascii_pattern_equals_gpt2_pattern(text):
    from tokenizer.pattern import piece_splitter

    assert piece_splitter(GPT2_PATTERN)(text) == regex.compile(GPT2_PATTERN).findall(text)


def test_no_fast_path_for_other_patterns():
    assert chunk_splitter(r"\S+|\s+") is None
    assert regex.compile(GPT2_CHUNK_PATTERN)  # and the chunk pattern itself compiles in both engines


# A cl100k-style regex: glues newlines to punctuation, so pattern.py's chunk proof does not apply.
CL100K_LIKE_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)


def test_other_pattern_encodes_without_fast_path(tok):
    pattern = CL100K_LIKE_PATTERN
    import tiktoken

    other = Tokenizer(dict(tok.mergeable_ranks), tok.special_tokens, pattern)
    enc = tiktoken.Encoding("other", pat_str=pattern, mergeable_ranks=dict(tok.mergeable_ranks),
                            special_tokens=tok.special_tokens)
    text = "Hello, World!!\n\n  12345 it'S done.\r\n\tx"
    assert other.encode(text) == enc.encode(text)


def test_small_cache_stays_bounded_and_exact(gpt2_files, tiktoken_gpt2, corpus_texts):
    small = Tokenizer(*_gpt2_parts(gpt2_files), cache_size=50)
    for text in corpus_texts[:40]:
        assert small.encode(text) == tiktoken_gpt2.encode(text)
    assert len(small._cache) <= 2 * 50  # emptied when full (a miss may add a chunk and its pieces)


def _gpt2_parts(gpt2_files):
    t = Tokenizer.from_gpt2_files(*gpt2_files)
    return dict(t.mergeable_ranks), t.special_tokens, t.pattern, t.merges, "gpt2"


def test_derived_merges_equal_gpt2_merges(tok, gpt2_files):
    from tokenizer.bpe import derive_merges

    assert derive_merges(dict(tok.mergeable_ranks)) == tok.merges


def test_encode_single_piece(tok):
    assert tok.encode_single_piece(b"hello") == [31373]
    assert tok.decode(tok.encode_single_piece(b" world")) == " world"


def test_encode_to_array_is_encode_packed(tok, tiktoken_gpt2, corpus_texts):
    from array import array

    text = "x<|endoftext|>y " + corpus_texts[0]
    ids = tok.encode_to_array(text, allowed_special="all")
    assert isinstance(ids, array) and ids.typecode == "H"  # GPT-2's 50,257 ids fit in uint16
    assert ids.tolist() == tiktoken_gpt2.encode(text, allowed_special="all")
    assert tok.encode_to_array(text, disallowed_special=()).tolist() == tok.encode_ordinary(text)
    assert tok.encode_to_array("").tolist() == []
    assert tok.encode_to_array("\ud800 lone").tolist() == tiktoken_gpt2.encode("\ud800 lone")
    with pytest.raises(ValueError, match="disallowed special token"):
        tok.encode_to_array(text)
    with pytest.raises(TypeError, match="encode_to_array"):
        tok.encode_to_array(b"bytes")
    # A vocabulary with ids over 65535 packs them as uint32, in the cache and in the result.
    big_ids = Tokenizer({bytes([b]): b for b in range(256)}, {"<|big|>": 70_000})
    wide = big_ids.encode_to_array("ab<|big|>", allowed_special="all")
    assert wide.typecode == "I" and wide.tolist() == [97, 98, 70_000]
    assert big_ids.encode("ab<|big|>", allowed_special="all") == [97, 98, 70_000]


# --------------------------------------------------------------------------------------- batch
def test_encode_batch_in_order(tok, tiktoken_gpt2, corpus_texts):
    texts = corpus_texts[:200] + ["", "<|endoftext|> x"]
    expected = [tiktoken_gpt2.encode(t, allowed_special="all") for t in texts]
    from tokenizer.parallel import encode_batch

    assert encode_batch(tok, texts, workers=2, allowed_special="all", min_parallel_chars=0) == expected
    assert tok.encode_batch(texts, workers=1, allowed_special="all") == expected
    assert tok.encode_batch(texts[:3]) == [tok.encode(t) for t in texts[:3]]
    with pytest.raises(ValueError, match="disallowed special token"):
        encode_batch(tok, texts, workers=2, min_parallel_chars=0)


def test_encode_batch_forked_children(tok, corpus_texts, monkeypatch):
    # 3 workers = this process and 2 forked children claiming jobs from one shared counter.
    from tokenizer import parallel

    texts = corpus_texts[:300]
    expected = [tok.encode(t) for t in texts]
    assert parallel.encode_batch(tok, texts, workers=3, min_parallel_chars=0) == expected
    # The caller unpacks the children's jobs in the middle of its own jobs, too.
    monkeypatch.setattr(parallel, "DRAIN_EVERY_CHARS", 1000)
    assert parallel.encode_batch(tok, texts, workers=2, min_parallel_chars=0) == expected
    # Ids over 65535 travel as uint32 instead of uint16.
    big_ids = Tokenizer({bytes([b]): b for b in range(256)}, {"<|big|>": 70_000})
    many = ["ab<|big|>c", "x" * 50, "<|big|>", ""] * 40
    assert (parallel.encode_batch(big_ids, many, 2, allowed_special="all", min_parallel_chars=0)
            == [big_ids.encode(t, allowed_special="all") for t in many])
    # An error in whichever process encodes the failing text reaches the caller, and the
    # earliest failing job wins, as if encoded in order.
    bad_first = ["<|endoftext|> first"] + texts + ["<|endoftext|> last"]
    with pytest.raises(ValueError, match="disallowed special token"):
        parallel.encode_batch(tok, bad_first, workers=2, min_parallel_chars=0)
    with pytest.raises(ValueError, match="disallowed special token"):
        parallel.encode_batch(tok, texts + ["<|endoftext|>"], workers=2, min_parallel_chars=0)
    # The children are gone and the next batch works.
    assert parallel.encode_batch(tok, texts, workers=2, min_parallel_chars=0) == expected


def test_encode_batch_huge_batches_go_in_segments(tok, corpus_texts, monkeypatch):
    # The shared buffer is sized per forked round; a batch over MAX_SEGMENT_CHARS runs as several
    # rounds whose results are concatenated in order.
    from tokenizer import parallel

    texts = corpus_texts[:300]
    expected = [tok.encode(t) for t in texts]
    monkeypatch.setattr(parallel, "MAX_SEGMENT_CHARS", sum(map(len, texts)) // 3)
    segments = parallel._segments(texts, parallel.MAX_SEGMENT_CHARS)
    assert len(segments) >= 3 and segments[0][0] == 0 and segments[-1][1] == len(texts)
    assert all(b == c for (_, b), (c, _) in zip(segments, segments[1:]))
    assert parallel.encode_batch(tok, texts, workers=2, min_parallel_chars=0) == expected


def test_encode_batch_bad_input(tok):
    with pytest.raises(TypeError, match="texts"):
        tok.encode_batch("one string")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tok.encode_batch(["a", 2])
    with pytest.raises(ValueError, match="workers"):
        tok.encode_batch(["a"], workers=0)


# ------------------------------------------------------------------------------------ bad input
def test_bad_types(tok):
    with pytest.raises(TypeError, match="'text'"):
        tok.encode(123)
    with pytest.raises(TypeError, match="'text'"):
        tok.encode_ordinary(b"bytes")
    with pytest.raises(TypeError, match="allowed_special"):
        tok.encode("x", allowed_special="<|endoftext|>")
    with pytest.raises(TypeError, match="ids"):
        tok.decode("hello")
    with pytest.raises(TypeError, match="must be int"):
        tok.decode([1, "2"])


def test_unknown_id_in_decode(tok):
    with pytest.raises(ValueError, match="unknown token id 50257"):
        tok.decode([31373, 50257])
    with pytest.raises(ValueError, match="unknown token id -1"):
        tok.decode_bytes([-1])


def test_decode_invalid_utf8(tok):
    ids = tok.encode("😀")
    assert len(ids) > 1
    assert tok.decode(ids[:1]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        tok.decode(ids[:1], errors="strict")


def test_bad_vocabularies():
    byte_ranks = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match="single-byte"):
        Tokenizer({bytes([b]): b for b in range(200)})
    with pytest.raises(ValueError, match="0..N-1"):
        Tokenizer({**byte_ranks, b"ab": 300})
    with pytest.raises(TypeError, match="bytes to int"):
        Tokenizer({**byte_ranks, "ab": 256})
    with pytest.raises(ValueError, match="collides"):
        Tokenizer(byte_ranks, {"<|endoftext|>": 3})
    with pytest.raises(ValueError, match="share an id"):
        Tokenizer(byte_ranks, {"<|a|>": 256, "<|b|>": 256})
    with pytest.raises(ValueError, match="merges\\[0\\]"):
        Tokenizer(byte_ranks, merges=[(b"a", b"b")])
    with pytest.raises(ValueError, match="invalid pre-tokenisation pattern"):
        Tokenizer(byte_ranks, pattern="(unclosed")


def test_train_rejects_bad_arguments():
    # Checked before the trainer runs, so these need no corpus.
    with pytest.raises(ValueError, match="too small.*at least 257"):
        Tokenizer.train(["hello"], vocab_size=256)
    with pytest.raises(TypeError, match="vocab_size"):
        Tokenizer.train(["hello"], vocab_size="4096")
    with pytest.raises(TypeError, match="special_tokens"):
        Tokenizer.train(["hello"], vocab_size=300, special_tokens="<|endoftext|>")


def test_pickle_round_trip(tok):
    import pickle

    clone = pickle.loads(pickle.dumps(tok))
    assert clone.fingerprint == tok.fingerprint and clone.encode("hello world") == [31373, 995]


def test_split_guided_covers_everything_in_order():
    from tokenizer.parallel import SMALLEST_JOB_SHARE, split_guided

    texts = ["x" * n for n in [5, 1, 1, 30, 2, 2, 2, 9, 0, 4]]
    for n_workers in [1, 2, 3, 8, 20]:
        ranges = split_guided(texts, n_workers)
        assert ranges[0][0] == 0 and ranges[-1][1] == len(texts)
        assert all(a < b for a, b in ranges) and all(r[1] == s[0] for r, s in zip(ranges, ranges[1:]))
    assert split_guided([], 4) == []
    # Equal texts: jobs shrink (a share of what is left) down to the smallest size, then stay there.
    sizes = [b - a for a, b in split_guided(["x"] * 10_000, 2)]
    assert sizes[:3] == [2500, 1875, 1406] and sizes[-2] == 10_000 // SMALLEST_JOB_SHARE
    assert all(x >= y for x, y in zip(sizes, sizes[1:])) and sum(sizes) == 10_000


def test_encode_batch_with_spawn(monkeypatch):
    # Where fork is unavailable (macOS default, Windows) the tokenizer travels pickled.
    from tokenizer import parallel

    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"ab": 256, b"abab": 257})
    tok = Tokenizer(ranks, {"<|endoftext|>": 258})
    monkeypatch.setattr(parallel.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    texts = ["abab ab", "ba<|endoftext|>", "", "abc"] * 3
    expected = [tok.encode(t, allowed_special="all") for t in texts]
    assert parallel.encode_batch(tok, texts, 2, allowed_special="all", min_parallel_chars=0) == expected


@SETTINGS
@given(st.lists(st.sampled_from(["<|endoftext|>", "<|endoftext", "|>", "<|", " ", "\n\n", "word", " x", "1",
                                 "'s", "中", "\ud800"]), max_size=20).map("".join))
def test_specials_inside_random_text(tok, tiktoken_gpt2, text):
    assert tok.encode(text, allowed_special="all") == tiktoken_gpt2.encode(text, allowed_special="all")
    assert tok.encode(text, disallowed_special=()) == tiktoken_gpt2.encode(text, disallowed_special=())


def test_decode_accepts_numpy_ids(tok):
    import numpy as np

    ids = tok.encode("hello world")
    assert tok.decode(np.array(ids, dtype=np.uint16)) == "hello world"
    assert tok.decode(np.array(ids, dtype=np.int64)) == "hello world"
