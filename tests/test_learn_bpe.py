"""BPE training (tokenizer/learn_bpe.py): merges identical to HF tokenizers' BpeTrainer, exact against the
readable reference trainer (tokenizer/reference_bpe.py), parallel pre-tokenisation equal to in-process, and
clear errors."""

from __future__ import annotations

import json
import random

import pytest

from tokenizer.byte_order import BYTE_ORDER, BYTE_TO_ID, unicode_str_to_bytes
from tokenizer.learn_bpe import BPETrainResult, train_bpe, train_bpe_from_counts
from tokenizer.pretokenize import count_pretokens
from tokenizer.reference_bpe import train_merges


# ----------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------
def hf_train(texts: list[str], vocab_size: int, special_tokens: list[str] | None = None):
    """HF tokenizers' BpeTrainer set up as GPT-2-style byte-level BPE (ByteLevel pre-tokenizer, the full
    byte alphabet, no minimum frequency); merges and vocab as bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=0,
        special_tokens=special_tokens or [],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = []
    for merge in model["merges"]:  # ["a", "b"] in recent versions, "a b" in older ones
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        merges.append((unicode_str_to_bytes(left), unicode_str_to_bytes(right)))
    vocab = {unicode_str_to_bytes(token): i for token, i in model["vocab"].items()}
    return merges, vocab


def ours_as_bytes(result: BPETrainResult):
    merges = [(result.vocab[a], result.vocab[b]) for a, b in result.merges]
    return merges, {token: i for i, token in enumerate(result.vocab)}


# ----------------------------------------------------------------------------------------------
# A second corpus: synthetic, deterministic, offline, and built to stress the corner cases
# ----------------------------------------------------------------------------------------------
def stress_corpus(n_docs: int = 300, seed: int = 1234) -> list[str]:
    """Multilingual, CJK, emoji, digit-heavy text with runs of repeated characters in varying
    contexts (" aaaa", "baaa", "aaab", "0000000"): repeated symbols are where left-to-right merging
    and parity could make the same string reachable by two different pairs."""
    rng = random.Random(seed)
    cjk = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年"
    scripts = ["привет", "мир", "γειά", "σου", "مرحبا", "नमस्ते", "안녕하세요", "こんにちは", "ありがとう"]
    scripts += ["ça", "où", "naïve", "Straße"]
    emoji = ["😀", "🚀", "👍🏽", "🇫🇷", "❤️", "👩‍👩‍👧", "🎉"]
    syllables = ["ab", "abc", "bc", "ca", "cab", "xa", "xab", "a", "aa", "b"]
    docs = []
    for _ in range(n_docs):
        parts = []
        for _ in range(rng.randint(30, 90)):
            r = rng.random()
            if r < 0.22:
                parts.append(" " * rng.randint(0, 1) + "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
            elif r < 0.34:
                ch = rng.choice("ab0.!-=ー")
                parts.append(rng.choice(["", " ", "b", "x"]) + ch * rng.randint(2, 9) + rng.choice(["", "b", "c", " "]))
            elif r < 0.50:
                parts.append("".join(rng.choice(cjk) for _ in range(rng.randint(1, 6))))
            elif r < 0.62:
                parts.append(" " + rng.choice(scripts))
            elif r < 0.76:
                parts.append(" " + str(rng.randint(0, 10 ** rng.randint(1, 9))))
            elif r < 0.86:
                parts.append("".join(rng.choice(emoji) for _ in range(rng.randint(1, 3))))
            else:
                parts.append(rng.choice([" ", "  ", "\n", "\n\n", "\t", ", ", ". ", "'s", "'ll", " \u00a0", "   "]))
        docs.append("".join(parts))
    return docs


@pytest.fixture(scope="module")
def docs_slice(corpus_texts) -> list[str]:
    return corpus_texts[:800]  # ~0.4 MB of the embedded corpus keeps the HF comparisons quick


@pytest.fixture(scope="module")
def stress_texts() -> list[str]:
    return stress_corpus()


# ----------------------------------------------------------------------------------------------
# Identical to HF
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vocab_size", [300, 1000])
@pytest.mark.parametrize("corpus", ["docs_slice", "stress_texts"])
def test_merges_identical_to_hf(corpus, vocab_size, request):
    texts = request.getfixturevalue(corpus)
    hf_merges, hf_vocab = hf_train(texts, vocab_size)
    result = train_bpe(texts, vocab_size, progress=False)
    merges, vocab = ours_as_bytes(result)
    assert len(result.vocab) == vocab_size  # the corpora are big enough not to run out of pairs
    assert merges == hf_merges
    assert vocab == hf_vocab  # same ids too: 0..255 GPT-2 byte order, then creation order
    assert [bytes([BYTE_ORDER[i]]) for i in range(256)] == result.vocab[:256]
    # In this configuration every merge is a new token (train.py explains why); HF agrees.
    assert len(hf_merges) == len(hf_vocab) - 256 == len(result.merges)


def test_duplicate_producing_merge_matches_hf(docs_slice):
    """HF's BpeTrainer with tokens in the vocabulary before training (special_tokens) learns merges
    whose result already exists: it appends the merge, reuses the id and does not grow the
    vocabulary. leading_tokens reproduces that configuration exactly."""
    texts = docs_slice[:300]
    specials = ["the", "Ġof", "ing", "Ġ(", "er"]
    hf_merges, hf_vocab = hf_train(texts, 700, special_tokens=specials)
    leading = [unicode_str_to_bytes(s) for s in specials]
    result = train_bpe_from_counts(count_pretokens(texts, workers=1), 700, leading_tokens=leading)
    merges, vocab = ours_as_bytes(result)
    duplicates = [m for m in merges if m[0] + m[1] in set(leading)]
    assert len(duplicates) == len(specials)  # each special string was produced by a merge...
    assert len(result.merges) == len(result.vocab) - 256 - len(specials) + len(duplicates)  # ...without a new id
    assert merges == hf_merges and vocab == hf_vocab


# ----------------------------------------------------------------------------------------------
# Exact BPE, independent of HF
# ----------------------------------------------------------------------------------------------
def test_matches_reference_trainer_on_adversarial_word_tables():
    """Random small word tables over tiny alphabets (long runs, overlaps, ties everywhere), trained
    until the pairs run out: the same vocabulary and merges as reference_bpe.train_merges, the
    recount-everything textbook trainer (which also never reuses an id: a duplicate merge would show)."""
    for seed in range(60):
        rng = random.Random(seed)
        alphabet = rng.choice([b"a", b"ab", b"abc", b"a b0"])
        counts: dict[bytes, int] = {}
        for _ in range(rng.randint(1, 12)):
            word = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
            counts[word] = counts.get(word, 0) + rng.randint(1, 5)
        vocab_size = 256 + rng.randint(0, 40)
        result = train_bpe_from_counts(counts, vocab_size)
        assert (result.vocab, result.merges) == train_merges(counts, vocab_size), (seed, counts)
        assert len(result.merges) == len(result.vocab) - 256


def test_tie_rule_smallest_pair_ids_win():
    # "ab" and "cd" both occur 3 times: the pair with the smaller (left_id, right_id) goes first.
    result = train_bpe_from_counts({b"ab": 3, b"cd": 3, b"xy": 1}, 258)
    assert [(result.vocab[a], result.vocab[b]) for a, b in result.merges] == [(b"a", b"b"), (b"c", b"d")]
    # GPT-2 byte order, not raw byte order: "!" (id 0) sorts before the space (id 220).
    result = train_bpe_from_counts({b"  ": 2, b"!!": 2}, 257)
    assert result.vocab[256] == b"!!"


def test_vocab_size_256_learns_nothing_and_small_corpus_stops_early():
    result = train_bpe(["hello world"], 256, progress=False)
    assert result.merges == [] and result.vocab == [bytes([BYTE_ORDER[i]]) for i in range(256)]
    result = train_bpe(["abab"], 1000, progress=False)  # pairs run out long before 1000
    assert [result.vocab[i] for i in range(256, len(result.vocab))] == [b"ab", b"abab"]


# ----------------------------------------------------------------------------------------------
# Pre-tokenisation: streaming, parallel, capped, surrogates
# ----------------------------------------------------------------------------------------------
def test_parallel_counting_equals_in_process(stress_texts):
    serial = count_pretokens(stress_texts, workers=1)
    parallel = count_pretokens(iter(stress_texts), workers=2, chunk_chars=4096)  # many chunks, a generator
    assert parallel == serial
    assert sum(serial.values()) > 10_000


def test_documents_are_streamed_not_collected():
    """The iterable is read lazily: a bad document stops the run before later ones are even read."""
    pulled = []

    def documents():
        for i in range(1000):
            pulled.append(i)
            yield None if i == 5 else "some text " * 10

    with pytest.raises(TypeError, match=r"texts\[5\]"):
        count_pretokens(documents(), workers=2, chunk_chars=64)
    assert max(pulled) == 5


def test_max_chars_per_doc_truncates_each_document(stress_texts):
    capped = train_bpe(stress_texts, 400, max_chars_per_doc=50, workers=1, progress=False)
    truncated = train_bpe([t[:50] for t in stress_texts], 400, workers=1, progress=False)
    assert capped == truncated
    assert capped != train_bpe(stress_texts, 400, workers=1, progress=False)


def test_lone_surrogates_train_like_replacement_character():
    a = count_pretokens(["x\ud800y \udfff\udfff"], workers=1)
    b = count_pretokens(["x\ufffdy \ufffd\ufffd"], workers=1)
    assert a == b


def test_words_are_counted_per_document_never_across():
    counts = count_pretokens(["ab", "cd"], workers=1)
    assert counts == {b"ab": 1, b"cd": 1}


def test_progress_bar_runs(capsys):
    result = train_bpe(["the cat sat on the mat"] * 3, 260, progress=True, workers=1)
    assert len(result.vocab) == 260


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"vocab_size": 255}, ValueError, "at least 256"),
        ({"vocab_size": 300.0}, TypeError, "vocab_size must be an int"),
        ({"vocab_size": 300, "workers": 0}, ValueError, "workers"),
        ({"vocab_size": 300, "max_chars_per_doc": 0}, ValueError, "max_chars_per_doc"),
        ({"vocab_size": 300, "pattern": "(unclosed"}, ValueError, "invalid pre-tokenisation pattern"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        train_bpe(["some text"], progress=False, **kwargs)


def test_bad_documents_name_the_index():
    with pytest.raises(TypeError, match=r"texts\[2\] is a bytes"):
        train_bpe(["ok", "fine", b"raw bytes"], 300, progress=False, workers=1)
    with pytest.raises(TypeError, match=r"texts\[1\] is a NoneType"):
        train_bpe(iter(["ok", None]), 300, progress=False, workers=2)
    with pytest.raises(TypeError, match="not a single str"):
        train_bpe("a whole corpus passed as one string", 300, progress=False)
    with pytest.raises(TypeError, match="iterable of str"):
        train_bpe(42, 300, progress=False)


def test_bad_word_counts_and_leading_tokens():
    with pytest.raises(ValueError, match="positive ints"):
        train_bpe_from_counts({b"ab": 0}, 300)
    with pytest.raises(ValueError, match="positive ints"):
        train_bpe_from_counts({"ab": 1}, 300)
    with pytest.raises(ValueError, match="leading_tokens"):
        train_bpe_from_counts({b"ab": 1}, 300, leading_tokens=[b"a"])
    with pytest.raises(ValueError, match="at least 258"):
        train_bpe_from_counts({b"ab": 1}, 257, leading_tokens=[b"ab", b"cd"])


def test_byte_order_translation_is_gpt2():
    # the translate table used for words maps raw bytes to GPT-2 ids
    result = train_bpe_from_counts({b"  ": 5}, 257)
    assert result.merges == [(BYTE_TO_ID[32], BYTE_TO_ID[32])] and result.vocab[256] == b"  "
