"""bench/encode_cost.py takes a cold pass apart by cutting the chunk cache's miss path short: the cuts
must be where its doc says they are, and measuring must leave the tokenizer as it was."""

from __future__ import annotations

import pytest

from bench import encode_cost
from tokenizer import Tokenizer
from tokenizer.bpe import ChunkCache


@pytest.fixture()
def gpt2(gpt2_files):
    return Tokenizer.from_gpt2_files(*gpt2_files)


def _encode_with(tok, cache_class, texts):
    real = tok._cache
    tok._cache = cache_class(real.ranks, real.typecode, real.split_pieces)
    try:
        return [tok.encode_ordinary(t) for t in texts]
    finally:
        tok._cache = real


def test_each_variant_stops_after_its_step(gpt2, tiktoken_gpt2):
    (_, chunks_only), (_, plus_splitting), (_, plus_pieces) = encode_cost._variants(ChunkCache, gpt2._cache.ranks)
    placeholder = int.from_bytes(encode_cost.PLACEHOLDER, "little")
    # " the cat" is two new chunks, each one piece and a whole token: every step but merging is needed.
    tokens_only = [" the cat sat", "on the mat."]
    assert _encode_with(gpt2, plus_pieces, tokens_only) == [tiktoken_gpt2.encode_ordinary(t) for t in tokens_only]
    # The first two variants give one placeholder per chunk, whatever the chunk holds.
    assert _encode_with(gpt2, chunks_only, ["a b, c"]) == [[placeholder] * 3]
    assert _encode_with(gpt2, plus_splitting, ["a b, c"]) == [[placeholder] * 3]
    # A piece that needs merging gets the placeholder in "+ pieces" (its merges are the next step).
    assert tiktoken_gpt2.encode_ordinary(" unmaintainability") != [placeholder]
    assert _encode_with(gpt2, plus_pieces, [" unmaintainability"]) == [[placeholder]]


def test_measure_reports_every_step(corpus_texts):
    texts = corpus_texts[:40]
    runs = []

    def run(kind, xs):  # in this process: the fresh-process runner is checked below
        runs.append(kind)
        return encode_cost.one_pass(kind, xs)

    note, table = encode_cost.measure("sample", texts, repeats=1, run=run)
    assert runs == [encode_cost.TIKTOKEN, *encode_cost.STEPS, encode_cost.TOLIST]
    assert "sample: 40 documents" in note
    lines = table.splitlines()[2:]
    assert [line.split(" | ")[0].lstrip("| ") for line in lines] == [*encode_cost.STEPS, encode_cost.TOLIST,
                                                                     encode_cost.TIKTOKEN]
    assert " | 100% | " in lines[3]  # the real pass is the whole of itself


def test_a_pass_in_a_fresh_process(tmp_path, corpus_texts):
    import pickle

    texts_file = tmp_path / "texts.pickle"
    texts_file.write_bytes(pickle.dumps(corpus_texts[:20]))
    assert encode_cost.in_fresh_process(encode_cost.STEPS[-1], texts_file) > 0
    with pytest.raises(ValueError, match="unknown kind"):
        encode_cost.one_pass("no such step", corpus_texts[:1])
