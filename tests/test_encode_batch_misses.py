"""New text, merged in batches: merge_batch.py and the put-off path of bpe.PieceCache.packed_many.

The merges of many new pieces run together in numpy, and a batch of texts waits for them behind
bytearray buffers; these tests hold both to the reference loop (reference_bpe.merge_piece) and to
tiktoken, and check the cache's two limits (entries and bytes) while it learns in batches.
"""

from __future__ import annotations

import random
import sys
import threading

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer import Tokenizer, bpe, merge_batch
from tokenizer.pattern import GPT2_PATTERN
from tokenizer.reference_bpe import merge_piece


@pytest.fixture(autouse=True)
def without_chunk_table(monkeypatch):
    """The tokenizers made here batch through packed_many, as a batch does with a pattern that has no
    chunks (cl100k's, o200k's) or while another thread's batch holds the chunk table: with GPT-2's
    pattern, encode_to_arrays otherwise takes the chunk table (tests/test_chunk_table.py)."""
    made = Tokenizer.__init__

    def without_table(self, *args, **kwargs):
        made(self, *args, **kwargs)
        self._chunk_table_size = None

    monkeypatch.setattr(Tokenizer, "__init__", without_table)


@pytest.fixture(scope="module")
def gpt2(gpt2_files) -> Tokenizer:
    return Tokenizer.from_gpt2_files(*gpt2_files)


@pytest.fixture(scope="module")
def table(gpt2) -> merge_batch.PairTable:
    return merge_batch.PairTable(dict(gpt2.mergeable_ranks))


def merged_by_batch(pieces: list[bytes], table: merge_batch.PairTable, ranks: dict[bytes, int]) -> list[list[int]]:
    """merge_batch's ids, cut back into one list per piece."""
    def finish(ids):
        return [ranks[p] for p in merge_piece(b"".join(table.token_bytes[i] for i in ids), ranks)]

    ids, counts = merge_batch.merge_batch(pieces, table, finish)
    flat, out, start = ids.tolist(), [], 0
    for n in counts.tolist():
        out.append(flat[start : start + n])
        start += n
    return out


def reference_ids(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    return [ranks[p] for p in merge_piece(piece, ranks)]


# ------------------------------------------------------------------------------- merge_batch
@pytest.mark.parametrize("python_tail", [0, merge_batch.PYTHON_TAIL, 10**9])
def test_merge_batch_equals_reference_loop_on_real_pieces(gpt2, table, corpus_texts, monkeypatch, python_tail):
    """Every new piece of real text, merged in lock step: numpy to the end (tail 0), the usual
    hand-over to Python for the last pieces, and Python from the very start."""
    monkeypatch.setattr(merge_batch, "PYTHON_TAIL", python_tail)
    ranks = dict(gpt2.mergeable_ranks)
    split = regex.compile(GPT2_PATTERN).findall
    pieces = list(dict.fromkeys(p.encode() for text in corpus_texts[:400] for p in split(text)))
    pieces = [p for p in pieces if p not in ranks and len(p) < bpe.HEAP_THRESHOLD]
    assert len(pieces) > 1000 and max(map(len, pieces)) > 40
    assert merged_by_batch(pieces, table, ranks) == [reference_ids(p, ranks) for p in pieces]


TOY_TOKENS = [b"aa", b"ab", b"ba", b"aaa", b"  ", b"bab", b"aab", b"abab", b"aaaa", b"\n ", b"ba ", b"a\n"]


def toy_ranks() -> dict[bytes, int]:
    ranks = {bytes([b]): b for b in range(256)}
    for i, token in enumerate(TOY_TOKENS):
        ranks[token] = 256 + i
    return ranks


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab \n", min_size=1, max_size=40), min_size=1, max_size=30))
def test_merge_batch_ties_and_overlaps(texts):
    """Runs like "aaaa" (overlapping pairs, ties broken leftmost) and tokens made in several ways."""
    ranks = toy_ranks()
    pieces = [t.encode() for t in texts]
    assert merged_by_batch(pieces, merge_batch.PairTable(ranks), ranks) == [reference_ids(p, ranks) for p in pieces]


def test_pair_table_answers_like_the_rank_dict(gpt2, table):
    ranks = dict(gpt2.mergeable_ranks)
    token_bytes = table.token_bytes
    rng = random.Random(0)
    pairs = [(rng.randrange(len(ranks)), rng.randrange(len(ranks))) for _ in range(20_000)]
    pairs += [(ranks[t[:cut]], ranks[t[cut:]]) for t in list(ranks)[::7] for cut in range(1, len(t))
              if t[:cut] in ranks and t[cut:] in ranks]
    import numpy as np

    left, right = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    expected = [ranks.get(token_bytes[a] + token_bytes[b], table.no_merge) for a, b in pairs]
    assert table.merge_ranks(left, right).tolist() == expected


def test_pair_table_resolves_collisions(gpt2, monkeypatch):
    """Every key hashed to one of 3 slots: the probing alone finds them (and finds absent keys absent)."""
    import numpy as np

    ranks = toy_ranks()
    monkeypatch.setattr(merge_batch.PairTable, "_slots", lambda self, keys: (np.asarray(keys) % 3).astype(np.int64))
    table = merge_batch.PairTable(ranks)
    pieces = [t.encode() for t in ["aaaa ab", "abab\n b", "ba ba", "b", "aab\n a"]]
    assert merged_by_batch(pieces, table, ranks) == [reference_ids(p, ranks) for p in pieces]
    ids = sorted(ranks.values())
    left, right = np.repeat(ids, len(ids)), np.tile(ids, len(ids))
    token_bytes = table.token_bytes
    expected = [ranks.get(token_bytes[a] + token_bytes[b], table.no_merge) for a, b in zip(left, right)]
    assert table.merge_ranks(left, right).tolist() == expected


def test_merge_batch_rejects_an_oversized_batch(table):
    with pytest.raises(ValueError, match="bytes in one batch"):
        merge_batch.merge_batch([b"x" * merge_batch.MAX_BATCH_BYTES], table, lambda ids: ids)


def test_batches_are_cut_under_the_byte_limit(gpt2, corpus_texts, monkeypatch):
    """A batch over MAX_BATCH_BYTES goes to merge_batch in several calls, same ids."""
    calls = []
    real = merge_batch.merge_batch

    def counted(pieces, *args):
        calls.append(sum(map(len, pieces)))
        return real(pieces, *args)

    monkeypatch.setattr(merge_batch, "MAX_BATCH_BYTES", 2000)
    monkeypatch.setattr(merge_batch, "merge_batch", counted)
    tok = Tokenizer(dict(gpt2.mergeable_ranks), gpt2.special_tokens)
    texts = corpus_texts[:300]
    assert [a.tolist() for a in tok.encode_to_arrays(texts)] == [gpt2.encode(t) for t in texts]
    assert len(calls) > 3 and max(calls) < 2000


# ------------------------------------------------------------------------ the put-off path
def test_encode_to_arrays_equals_tiktoken_from_cold_caches(gpt2, corpus_texts, tiktoken_gpt2, monkeypatch):
    batches = []
    real = merge_batch.merge_batch
    monkeypatch.setattr(merge_batch, "merge_batch", lambda pieces, *a: batches.append(len(pieces)) or real(pieces, *a))
    tok = Tokenizer(dict(gpt2.mergeable_ranks), gpt2.special_tokens)
    texts = corpus_texts[:1500]
    arrays = tok.encode_to_arrays(texts)
    assert [a.tolist() for a in arrays] == [tiktoken_gpt2.encode_ordinary(t) for t in texts]
    assert batches and sum(batches) > 3000  # the new pieces were merged in numpy, together
    assert all(type(ids) is bytes for ids in tok._cache.values())  # no buffer ever reaches the cache
    assert [a.tolist() for a in tok.encode_to_arrays(texts)] == [a.tolist() for a in arrays]  # warm: the same


EDGE_TEXTS = ["", " ", "   ", "\n\n", "word", "Zyxwvutsrq", " Zyxwvutsrq,", "Zyxwvutsrq.\n\n  Zyxwvutsrq",
              "  leading and trailing  ", "\ud800 lone surrogate Qwertyuiopasd", "\ud83d\ude00 pair Mnbvcxzlkj",
              "tab\tnew\nline\r\nqqqqzzzzyyyy", "12345678901234567890 1234567890", "'s 're don't won't"]


def test_put_off_pieces_shared_by_chunks_and_texts(gpt2, tiktoken_gpt2):
    """One new word in many chunks and texts (first chunk, middle, last, alone): one buffer for it,
    filled once, read by every text that waits for it."""
    tok = Tokenizer(dict(gpt2.mergeable_ranks), gpt2.special_tokens)
    words = [f"Qzx{chr(97 + i)}vbnmlk" for i in range(150)]  # 150 new words: the numpy path
    texts = EDGE_TEXTS + [f"{w} ({w}), {w}.{w}\n{w}" for w in words] + EDGE_TEXTS
    arrays = tok.encode_to_arrays(texts, disallowed_special=())
    assert [a.tolist() for a in arrays] == [tiktoken_gpt2.encode_ordinary(t) for t in texts]
    assert all(type(ids) is bytes for ids in tok._cache.values())


def test_only_batches_put_off_their_merges(gpt2, corpus_texts, tiktoken_gpt2, monkeypatch):
    calls = []
    real = bpe.PieceCache._merge_put_off
    monkeypatch.setattr(bpe.PieceCache, "_merge_put_off", lambda self, p: calls.append(len(p.pieces)) or real(self, p))
    tok = Tokenizer(dict(gpt2.mergeable_ranks), gpt2.special_tokens)
    long_text = "\n".join(corpus_texts[:60])
    assert tok.encode_ordinary(long_text) == tiktoken_gpt2.encode_ordinary(long_text)
    assert calls == []  # one text, however long, merges on the spot
    tok.clear_cache()
    assert [a.tolist() for a in tok.encode_to_arrays([long_text])] == [tiktoken_gpt2.encode_ordinary(long_text)]
    assert calls and calls[0] >= bpe.MIN_BATCH


def test_big_ids_take_uint32_through_the_numpy_path():
    ranks = toy_ranks()
    tok = Tokenizer(ranks, {"<|big|>": 70_000})
    texts = [f"{'ab' * (i % 7 + 2)} {'a' * (i % 9 + 3)}\n b{'ba ' * (i % 5)}" for i in range(400)]
    arrays = tok.encode_to_arrays(texts)
    assert {a.typecode for a in arrays} == {"I"}
    expected = [[ranks[p] for piece in regex.findall(GPT2_PATTERN, t) for p in merge_piece(piece.encode(), ranks)]
                for t in texts]
    assert [a.tolist() for a in arrays] == expected


def test_encode_to_arrays_arguments(gpt2, tiktoken_gpt2):
    tok = Tokenizer(dict(gpt2.mergeable_ranks), gpt2.special_tokens)
    assert tok.encode_to_arrays([]) == []
    with pytest.raises(TypeError, match="encode_to_arrays"):
        tok.encode_to_arrays("one text")
    with pytest.raises(TypeError, match="encode_to_arrays"):
        tok.encode_to_arrays(["fine", b"bytes"])
    with pytest.raises(ValueError, match="disallowed special token"):
        tok.encode_to_arrays(["fine", "x <|endoftext|>"])
    texts = ["a <|endoftext|> b", "plain", ""]
    assert [a.tolist() for a in tok.encode_to_arrays(texts, allowed_special="all")] == [
        tiktoken_gpt2.encode(t, allowed_special="all") for t in texts]
    assert [a.tolist() for a in tok.encode_to_arrays(texts, disallowed_special=())] == [
        tiktoken_gpt2.encode_ordinary(t) for t in texts]


def test_only_the_thread_that_puts_off_gets_buffers(gpt2, corpus_texts, tiktoken_gpt2, monkeypatch):
    """Thread A stops inside packed_many, after its lookups and before its merges (its buffers are
    still empty, the cache's class still switched). Meanwhile this thread encodes new text, short,
    long and batched: it merges on the spot, adds nothing to A's put-off work, and A ends exact."""
    tok = Tokenizer(dict(gpt2.mergeable_ranks), gpt2.special_tokens)
    inside, go = threading.Event(), threading.Event()
    real = bpe.PieceCache._merge_put_off
    seen: list[int] = []

    def paused(self, put_off):
        seen.append(len(put_off.pieces))
        inside.set()
        assert go.wait(30)
        seen.append(len(put_off.pieces))
        return real(self, put_off)

    monkeypatch.setattr(bpe.PieceCache, "_merge_put_off", paused)
    texts_a = corpus_texts[:300]
    result_a: list = []
    thread = threading.Thread(target=lambda: result_a.append(tok.encode_to_arrays(texts_a)))
    thread.start()
    try:
        assert inside.wait(30)
        assert isinstance(tok._cache, bpe._PutsOff) and seen[0] > 0
        mine = corpus_texts[300:500]
        assert [a.tolist() for a in tok.encode_to_arrays(mine)] == [tiktoken_gpt2.encode(t) for t in mine]
        long_text = "\n".join(corpus_texts[500:560])
        assert tok.encode_ordinary(long_text) == tiktoken_gpt2.encode_ordinary(long_text)
        short = corpus_texts[560:600]
        assert [tok.encode(t) for t in short] == [tiktoken_gpt2.encode(t) for t in short]
    finally:
        go.set()
        thread.join()
    assert seen[1] == seen[0]  # nothing of this thread's was put off into A's call
    assert [a.tolist() for a in result_a[0]] == [tiktoken_gpt2.encode(t) for t in texts_a]
    assert type(tok._cache) is bpe.ChunkCache and tok._cache._put_off is None
    assert all(type(ids) is bytes for ids in tok._cache.values())


def test_threads_sharing_a_tokenizer(gpt2, corpus_texts, tiktoken_gpt2):
    tok = Tokenizer(dict(gpt2.mergeable_ranks), gpt2.special_tokens)
    parts = [corpus_texts[i : i + 300] for i in range(0, 1200, 300)]
    expected = [[tiktoken_gpt2.encode(t) for t in part] for part in parts]
    results: dict[int, list] = {}

    def work(i: int) -> None:
        results[i] = [[a.tolist() for a in tok.encode_to_arrays(parts[i][j : j + 50])] for j in range(0, 300, 50)]

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, inside the lookups and the merges
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(parts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert [[ids for chunk in results[i] for ids in chunk] for i in range(len(parts))] == expected


# ---------------------------------------------------------------------------- cache limits
def test_tiny_entry_limit_evicts_and_stays_exact(gpt2, corpus_texts, tiktoken_gpt2, monkeypatch):
    cleared = []
    real_clear = bpe.PieceCache.clear
    monkeypatch.setattr(bpe.PieceCache, "clear", lambda self: cleared.append(len(self)) or real_clear(self))
    tok = Tokenizer(dict(gpt2.mergeable_ranks), gpt2.special_tokens, cache_size=40)
    bound = 2 * 40  # emptied when full, before a miss: a miss may then add a chunk and its pieces
    for start in range(0, 600, 100):
        texts = corpus_texts[start : start + 100]
        assert [a.tolist() for a in tok.encode_to_arrays(texts)] == [tiktoken_gpt2.encode(t) for t in texts]
        assert len(tok._cache) <= bound
    for text in corpus_texts[600:650]:
        assert tok.encode(text) == tiktoken_gpt2.encode(text)
        assert len(tok._cache) <= bound
    assert len(cleared) > 20  # emptied again and again


def test_byte_limit_holds_for_long_distinct_pieces(gpt2, tiktoken_gpt2):
    """Few entries, but long ones: the entry limit alone would let them grow the process."""
    limit = 200_000
    tok = Tokenizer(dict(gpt2.mergeable_ranks), gpt2.special_tokens, cache_bytes=limit)
    rng = random.Random(1)
    seen_bytes = []
    for _ in range(8):
        texts = [" ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randrange(60, 400)))
                          for _ in range(20)) for _ in range(10)]
        arrays = tok.encode_to_arrays(texts)
        assert [a.tolist() for a in arrays[:2]] == [tiktoken_gpt2.encode(t) for t in texts[:2]]
        for text in texts[:3]:
            assert tok.encode(text) == tiktoken_gpt2.encode(text)
        seen_bytes.append(tok._cache.nbytes)
        assert tok._cache.nbytes <= limit
        # the count is an upper bound of what the long keys and their values really take (ASCII keys)
        real = sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in tok._cache.items() if len(k) > bpe.SHORT_KEY_CHARS)
        assert real <= tok._cache.nbytes
    assert max(seen_bytes) > limit // 2  # the limit, not the entry count, is what kept it down
    assert len(tok._cache) < 2000


def test_keys_over_the_length_limit_are_never_cached(gpt2, tiktoken_gpt2):
    tok = Tokenizer(dict(gpt2.mergeable_ranks), gpt2.special_tokens)
    long_word = "z" * (bpe.MAX_CACHED_CHARS + 1)
    for text in [long_word, f"a {long_word} b", "x" * 100_000]:
        assert tok.encode(text) == tiktoken_gpt2.encode(text)
        assert tok.encode_to_arrays([text, text])[1].tolist() == tiktoken_gpt2.encode(text)
    assert max(map(len, tok._cache)) <= bpe.MAX_CACHED_CHARS
    assert " b" in tok._cache
