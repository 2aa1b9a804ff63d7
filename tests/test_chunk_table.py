"""The chunk table (tokenizer/chunk_table.py): batches of texts looked up and learned in numpy.

Held to tiktoken on random and real text, cold and warm, under tiny limits; and its two pieces of
regex knowledge -- where GPT-2's pattern starts a piece in an ASCII chunk, which bytes of UTF-8 are
whitespace -- checked on their own against the regex and the character table they stand for.
"""

from __future__ import annotations

import itertools
import random
import threading

import numpy as np
import pytest

from tokenizer import Tokenizer, core
from tokenizer import chunk_table as ct
from tokenizer.pattern import GPT2_PATTERN, REGEX_WHITESPACE, piece_splitter

# Small pieces of text that meet every rule: contractions (and near misses), each kind of
# whitespace (ASCII, two- and three-byte UTF-8, and U+001C, which is not whitespace to the regex),
# digits, symbols, a NUL byte, non-ASCII letters and marks, emoji, a lone surrogate.
ALPHABET = ["'", "s", "t", "l", "v", "e", "r", "d", "m", "a", "Z", "0", "9", " ", "  ", "   ", "\n", "\n\n",
            "\t", "\r", "\x0b", "\x0c", "\x1c", ".", ",", "(", "_", "\x00", "'s", "'ll", " 're", "'ve", "''",
            "foo", "bar", " the", "123", "\xa0", "\u2000", "\u3000", "\x85", "\u1680", "\u205f", "\u2028",
            "\u200b", "é", "Å", "…", "😀", " 世界", "\u0300", "\ud800", "x" * 30]


def random_texts(rng: random.Random, n: int, scale: int) -> list[str]:
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40 * scale))) for _ in range(n)]


@pytest.fixture(scope="module")
def ranks_and_specials(gpt2_files):
    gpt2 = Tokenizer.from_gpt2_files(*gpt2_files)
    return dict(gpt2.mergeable_ranks), gpt2.special_tokens


@pytest.mark.parametrize("seed", range(3))
def test_random_batches_equal_tiktoken_cold_and_warm(seed, ranks_and_specials, tiktoken_gpt2, monkeypatch):
    """Tiny entry limits (the table empties itself between batches), tiny batches (texts cut into
    batches of one), and texts of every size, each batch encoded twice: learned, then looked up."""
    rng = random.Random(seed)
    for _ in range(60):
        monkeypatch.setattr(core, "TABLE_BATCH_CHARS", rng.choice([1, 50, 1 << 20]))
        tok = Tokenizer(*ranks_and_specials, cache_size=rng.choice([3, 60, 500_000]))
        texts = random_texts(rng, rng.randint(1, 10), rng.choice([1, 5, 40]))
        want = [tiktoken_gpt2.encode_ordinary(t) for t in texts]
        for _ in range(2):
            assert [a.tolist() for a in tok.encode_to_arrays(texts, disallowed_special=())] == want
            # Emptied when full, at the start of a batch: at most one batch's chunks over the limit.
            assert len(tok._chunk_table) <= tok._chunk_table.max_entries + sum(map(len, texts))


def test_real_text_equals_tiktoken_and_fills_the_table(ranks_and_specials, corpus_texts, tiktoken_gpt2):
    tok = Tokenizer(*ranks_and_specials)
    texts = corpus_texts[:800]
    want = [tiktoken_gpt2.encode_ordinary(t) for t in texts]
    assert [a.tolist() for a in tok.encode_to_arrays(texts)] == want
    table = tok._chunk_table
    kept = len(table)
    assert kept > 1000
    assert [a.tolist() for a in tok.encode_to_arrays(texts)] == want
    assert len(table) == kept  # the second pass found every short chunk: nothing new to keep


def test_the_table_is_emptied_when_full(ranks_and_specials, corpus_texts, tiktoken_gpt2, monkeypatch):
    monkeypatch.setattr(core, "TABLE_BATCH_CHARS", 2000)
    tok = Tokenizer(*ranks_and_specials, cache_size=200)
    sizes = []
    for text in corpus_texts[:300]:
        assert tok.encode_to_arrays([text])[0].tolist() == tiktoken_gpt2.encode_ordinary(text)
        sizes.append(len(tok._chunk_table))
        assert sizes[-1] < 200 + len(text)  # at most the limit plus one batch's new chunks
    assert any(later < earlier for earlier, later in itertools.pairwise(sizes))  # it was emptied


def held_by(table: ct.ChunkTable, strings: list[str]) -> np.ndarray:
    """Which of `strings` (each at most a key long) the table holds."""
    lengths = np.array([len(s.encode("utf-8")) for s in strings])
    words = ct._key_words("".join(strings).encode("utf-8"), np.cumsum(lengths) - lengths, lengths)
    return table._find(words, lengths) != 0


def test_chunks_longer_than_a_key_are_learned_from_their_pieces_and_kept_by_the_dict(
        ranks_and_specials, tiktoken_gpt2, monkeypatch):
    tok = Tokenizer(*ranks_and_specials)
    link = " [#2367](https://github.com/nodejs/node/pull/2367)."  # long, ASCII, every piece short
    assert len(link) > ct.MAX_KEY_BYTES
    texts = [link, f"see{link} and{link}", "fine"]
    assert [a.tolist() for a in tok.encode_to_arrays(texts)] == [tiktoken_gpt2.encode(t) for t in texts]
    assert link in tok._cache  # the dict keeps the long chunk, the table its pieces
    assert held_by(tok._chunk_table, tok._split_pieces(link)).all()

    def learns_nothing(new):
        raise AssertionError(f"learned again: {new}")
    monkeypatch.setattr(tok._cache, "learn_pieces", learns_nothing)
    monkeypatch.setattr(tok._cache, "remember", learns_nothing)  # the long chunk is found in the dict
    assert [a.tolist() for a in tok.encode_to_arrays(texts)] == [tiktoken_gpt2.encode(t) for t in texts]


def test_long_chunks_with_a_piece_longer_than_a_key_or_not_ascii_go_to_the_dict(ranks_and_specials,
                                                                                tiktoken_gpt2):
    tok = Tokenizer(*ranks_and_specials)
    # Pieces of 30 bytes: two that share their first 24 bytes and length must not be taken for one.
    same_start = [" x." + "a" * 29 + "b.", " x." + "a" * 30 + "."]
    indented = "\n" + " " * 40 + "return"  # 40 bytes of whitespace: one piece
    not_ascii = " \u201csupercalifragilistic\u201d-and-more"
    texts = [*same_start, indented * 3, not_ascii, "".join(same_start) + indented]
    for _ in range(2):
        assert [a.tolist() for a in tok.encode_to_arrays(texts)] == [tiktoken_gpt2.encode(t) for t in texts]
        assert all(chunk in tok._cache for chunk in [*same_start, not_ascii])


def test_a_lone_surrogate_is_repaired_as_tiktoken_does(ranks_and_specials, tiktoken_gpt2):
    tok = Tokenizer(*ranks_and_specials)
    texts = ["fine", "broken \ud800 text", "\udc00", "also fine"]
    assert [a.tolist() for a in tok.encode_to_arrays(texts)] == [tiktoken_gpt2.encode(t) for t in texts]


def test_a_batch_meanwhile_takes_the_dict_path(ranks_and_specials, corpus_texts, tiktoken_gpt2):
    """While one thread's batch holds the table, another thread's batch does not wait for it."""
    tok = Tokenizer(*ranks_and_specials)
    tok.encode_to_arrays(["make the table"])
    table = tok._chunk_table
    kept = len(table)
    texts = corpus_texts[:40]
    with table.lock:
        result = []
        other = threading.Thread(target=lambda: result.append(tok.encode_to_arrays(texts)))
        other.start()
        other.join(timeout=60)
        assert not other.is_alive()
    assert [a.tolist() for a in result[0]] == [tiktoken_gpt2.encode(t) for t in texts]
    assert len(table) == kept  # nothing was added to a table that another batch holds


@pytest.mark.parametrize("length", range(1, 6))
def test_pieces_of_every_short_ascii_chunk(length):
    """_pieces against the regex itself, on every chunk of up to 5 characters over an alphabet that
    meets every rule (classes, spaces before a run, whitespace runs, contractions and near misses)."""
    split = piece_splitter(GPT2_PATTERN)
    alphabet = " \na1.'sle"
    chunks = []
    for chars in itertools.product(alphabet, repeat=length):
        text = "".join(chars)
        stripped = text.lstrip(" \n")
        if " " in stripped or "\n" in stripped:
            continue  # not a chunk: whitespace only leads
        chunks.append(text)
    blob = "".join(chunks).encode("ascii")
    starts = np.cumsum([0] + [len(c) for c in chunks[:-1]])
    got = ct._pieces(np.frombuffer(blob, dtype=np.uint8), starts).tolist()
    want = [at + cut for at, chunk in zip(starts.tolist(), chunks)
            for cut in itertools.accumulate([0] + [len(p) for p in split(chunk)[:-1]])]
    if got != want:  # name the first chunk cut differently
        for at, chunk in zip(starts.tolist(), chunks):
            mine = [c - at for c in got if at <= c < at + len(chunk)]
            assert mine == list(itertools.accumulate([0] + [len(p) for p in split(chunk)[:-1]])), (chunk, split(chunk))


def test_whitespace_bytes_are_those_of_the_regex_whitespace():
    """Every whitespace character, every byte of it, and no byte of anything else: lookalikes that
    share bytes with whitespace (U+200B zero width space, "Å" ending in 0x85, U+2010) included."""
    rng = random.Random(0)
    others = ["a", "Å", "\u200b", "\u2010", "\u2030", "\u3001", "\u1681", "é", "😀", "\x1c", "\x85x"]
    chars = list(REGEX_WHITESPACE) + others
    text = "".join(rng.choice(chars) for _ in range(5000))
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    want = np.concatenate([np.full(len(c.encode("utf-8")), c in REGEX_WHITESPACE) for c in text])
    assert (ct._whitespace(data, is_ascii=False) == want).all()


def test_keys_tell_a_nul_byte_from_the_end_of_a_chunk(ranks_and_specials, tiktoken_gpt2):
    tok = Tokenizer(*ranks_and_specials)
    texts = ["a", "a\x00", "a\x00\x00", "\x00a"]
    for _ in range(2):
        assert [a.tolist() for a in tok.encode_to_arrays(texts)] == [tiktoken_gpt2.encode(t) for t in texts]


def test_ids_over_65535_take_uint32(ranks_and_specials, tiktoken_gpt2):
    """A vocabulary with an id past 65,535 packs ids as uint32, in the table as in the dict."""
    ranks, specials = ranks_and_specials
    tok = Tokenizer(ranks, {**specials, "<|big|>": 70_000})
    texts = ["hello world, it's 2026!", "  indented\n\ttext", "é and 😀 too"]
    for _ in range(2):
        arrays = tok.encode_to_arrays(texts)
        assert {a.typecode for a in arrays} == {"I"}
        assert [a.tolist() for a in arrays] == [tiktoken_gpt2.encode(t) for t in texts]
    assert tok._chunk_table.dtype == np.uint32
