"""The readable tokenizer (tokenizer/reference_bpe.py) is the specification; the fast one must agree with it.

Pinned here on real text (the embedded python-docs corpus): training (reference_bpe.train_merges vs
learn_bpe's heap and incremental counts), encoding (reference_bpe.merge_piece and ReferenceTokenizer vs
bpe.py's loops, caches and core.Tokenizer), decoding, special tokens, and the verbose mode. The adversarial
word tables of tests/test_learn_bpe.py and the heap tests of tests/test_tokenizer_encode.py use the same
reference functions.
"""

from __future__ import annotations

import pytest

from tokenizer import Tokenizer, bpe
from tokenizer.reference_bpe import EOT, ReferenceTokenizer, merge, merge_piece, train_merges

VOCAB = 357  # 256 bytes + 100 merges + <|endoftext|>: a second of reference training


@pytest.fixture(scope="module")
def training_texts(corpus_texts) -> list[str]:
    """176 documents spread over the corpus (help topics and docstrings alike), ~80K characters."""
    return corpus_texts[::25]


@pytest.fixture(scope="module")
def trained(training_texts) -> tuple[ReferenceTokenizer, Tokenizer]:
    reference = ReferenceTokenizer.train(training_texts, VOCAB)
    fast = Tokenizer.train(training_texts, VOCAB, workers=1, progress=False)
    return reference, fast


def test_training_on_real_text_gives_the_fast_trainers_vocabulary(trained):
    reference, fast = trained
    assert len(reference.ranks) == VOCAB - 1
    assert reference.ranks == dict(fast.mergeable_ranks)  # every token, with its id
    assert reference.special_tokens == fast.special_tokens == {EOT: VOCAB - 1}


def test_encoding_real_text_gives_the_fast_tokenizers_ids(trained, corpus_texts):
    reference, fast = trained
    for text in corpus_texts[1:3000:150]:  # 20 documents the tokenizer was not trained on
        ids = reference.encode_ordinary(text)
        assert ids == fast.encode_ordinary(text)
        assert reference.decode(ids) == text == fast.decode(ids)


def test_gpt2_vocabulary_gives_tiktokens_ids(gpt2_files, corpus_texts, tiktoken_gpt2):
    """GPT-2's 50,000 merges, as shipped, through the reference loop: r50k_base's ids on real text. A fresh
    tokenizer meets thousands of new pieces in the long text, which bpe.py merges one by one (a single text
    never puts merges off; merge_batch.py is held to the reference in tests/test_encode_batch_misses.py)."""
    fast = Tokenizer.from_gpt2_files(*gpt2_files)
    reference = ReferenceTokenizer(fast.mergeable_ranks, fast.special_tokens)
    assert reference.encode("hello world") == [31373, 995]
    assert reference.encode("000000000") == [10535, 830]  # merge order, not longest match
    long_topics, docstrings = "\n".join(corpus_texts[5:15]), "\n".join(corpus_texts[2000:2040])
    assert len(reference.split(long_topics)) > 4000
    for text in (long_topics, docstrings):
        ids = reference.encode_ordinary(text)
        assert ids == fast.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


def test_merge_piece_is_the_fast_merge_loop_on_real_pieces(gpt2_files, corpus_texts):
    """bpe.bpe_parts (the short-piece loop, and the heap from 100 bytes on) against the reference loop."""
    fast = Tokenizer.from_gpt2_files(*gpt2_files)
    ranks = dict(fast.mergeable_ranks)
    reference = ReferenceTokenizer(ranks)
    pieces = {p.encode() for p in reference.split(corpus_texts[7] + corpus_texts[300])}
    pieces |= {b" " * 150, b"-" * 120, "é".encode() * 60}  # >= bpe.HEAP_THRESHOLD bytes: the heap path
    assert max(map(len, pieces)) >= bpe.HEAP_THRESHOLD
    for piece in pieces:
        assert bpe.bpe_parts(piece, ranks) == merge_piece(piece, ranks), piece


def test_special_tokens_follow_tiktoken(trained):
    reference, fast = trained
    text = f"one{EOT}two"
    assert reference.encode(text, allowed_special="all") == fast.encode(text, allowed_special="all")
    assert reference.encode(text, allowed_special={EOT}).count(fast.eot_id) == 1
    with pytest.raises(ValueError, match="disallowed special token"):
        reference.encode(text)
    assert reference.encode_ordinary(text) == fast.encode_ordinary(text)  # its characters, not the token
    assert reference.decode(reference.encode(text, allowed_special="all")) == text


def test_verbose_prints_every_merge(capsys):
    vocab, merges = train_merges({b"hug": 10, b"pug": 5, b"pun": 12, b"bun": 4, b"hugs": 5}, 256 + 3, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert [vocab[256 + i] for i in range(3)] == [b"ug", b"un", b"hug"]  # minbpe's (and HF's) classic example
    assert len(lines) == len(merges) == 3
    assert lines[0].startswith("merge 1/3: ") and "-> 256 b'ug' (20 occurrences)" in lines[0]


def test_training_stops_when_no_pair_is_left():
    vocab, merges = train_merges({b"abab": 1}, 1000)
    assert vocab[256:] == [b"ab", b"abab"] and len(merges) == 2


def test_merge_replaces_left_to_right_without_overlap():
    assert merge((1, 1, 1), (1, 1), 9) == (9, 1)
    assert merge((1, 2, 1, 2), (1, 2), 9) == (9, 9)
