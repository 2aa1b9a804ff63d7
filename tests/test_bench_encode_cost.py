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


def test_measure_reports_every_step_and_restores_the_tokenizer(gpt2, tiktoken_gpt2, corpus_texts):
    texts = corpus_texts[:40]
    real = gpt2._cache
    note, table = encode_cost.measure("sample", texts, gpt2, tiktoken_gpt2, repeats=1)
    assert gpt2._cache is real
    assert [gpt2.encode_ordinary(t) for t in texts] == [tiktoken_gpt2.encode_ordinary(t) for t in texts]
    assert "sample: 40 documents" in note
    lines = table.splitlines()[2:]
    assert [line.split(" | ")[0].lstrip("| ") for line in lines] == [
        "chunks only", "+ splitting new chunks into pieces", "+ looking pieces up, learning whole-token ones, joining",
        "the real pass: + merging new pieces that are not tokens",
        "making the list of ints (memoryview.tolist, any pass)", "tiktoken encode_ordinary (Rust), per document"]
    assert " | 100% | " in lines[3]  # the real pass is the whole of itself
