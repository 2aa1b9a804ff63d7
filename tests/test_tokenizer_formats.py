"""Tokenizer files: our format, .tiktoken and HF tokenizer.json round-trip exactly, and bad files
fail loudly with the file's name.

Three tokenizers: GPT-2's own vocabulary, one trained here (Tokenizer.train), and one with a
non-GPT-2 regex (exercises HF's Split pre-tokenizer and the no-fast-path encoder)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenizer import Tokenizer, TokenizerFileError
from tokenizer.formats import read_gpt2_files

CL100K_LIKE_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)


@pytest.fixture(scope="module")
def gpt2_tok(gpt2_files):
    return Tokenizer.from_gpt2_files(*gpt2_files)


@pytest.fixture(scope="module")
def trained_tok(corpus_texts):
    return Tokenizer.train(corpus_texts[:300], vocab_size=700, progress=False, workers=1, name="small")


@pytest.fixture(scope="module")
def regex_tok(gpt2_tok):
    # GPT-2's first 1500 ranks form a valid smaller vocabulary: a token's parts always rank lower.
    ranks = {t: r for t, r in gpt2_tok.mergeable_ranks.items() if r < 1500}
    return Tokenizer(ranks, {"<|endoftext|>": 1500, "<|pad|>": 1501}, CL100K_LIKE_PATTERN, name="cl-like")


@pytest.fixture(scope="module", params=["gpt2", "trained", "regex"])
def any_tok(request):
    return request.getfixturevalue({"gpt2": "gpt2_tok", "trained": "trained_tok", "regex": "regex_tok"}[request.param])


@pytest.fixture(scope="module")
def samples(corpus_texts):
    return corpus_texts[300:420] + [
        "hello <|endoftext|> world", "<|endoftext|>", "  spaces   and\ttabs\n\n\n", "numbers 1234567 3.14159",
        "it's they're we'VE", "中文 日本語 😀👍🏽", "a" * 500, "",
    ]


def assert_same_encoding(a: Tokenizer, b: Tokenizer, texts):
    for text in texts:
        assert a.encode(text, allowed_special="all") == b.encode(text, allowed_special="all"), text[:80]


# ------------------------------------------------------------------------------ our own format
def test_save_load_round_trip(any_tok, samples, tmp_path):
    path = any_tok.save(tmp_path / "tokenizer.ljt.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == "llm-journey-tokenizer" and doc["version"] == 1
    assert doc["fingerprint"] == any_tok.fingerprint and doc["pattern"] == any_tok.pattern
    loaded = Tokenizer.load(path)
    assert loaded.fingerprint == any_tok.fingerprint
    assert (loaded.name, loaded.pattern, loaded.special_tokens, loaded.merges, loaded.n_vocab, loaded.eot_id) == (
        any_tok.name, any_tok.pattern, any_tok.special_tokens, any_tok.merges, any_tok.n_vocab, any_tok.eot_id)
    assert_same_encoding(loaded, any_tok, samples)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.ljt.json"]  # no temporary left behind


def test_trained_tokenizer_layout(trained_tok):
    assert trained_tok.n_vocab == 700
    assert trained_tok.eot_id == 699 and trained_tok.special_tokens == {"<|endoftext|>": 699}
    assert trained_tok.decode_single_token_bytes(0) == b"!" and trained_tok.decode_single_token_bytes(220) == b" "


def _tamper(path: Path, edit) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    edit(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")


@pytest.mark.parametrize("edit", [
    lambda d: d["tokens"].__setitem__(300, base64.b64encode(b"XYZ").decode()),   # a token changed
    lambda d: d["special_tokens"].__setitem__("<|endoftext|>", 5000),           # a special id changed
    lambda d: d.__setitem__("pattern", r"\S+|\s+"),                             # the regex changed
])
def test_tampered_file_names_the_file(trained_tok, tmp_path, edit):
    path = trained_tok.save(tmp_path / "tok.ljt.json")
    _tamper(path, edit)
    # Either the content no longer hashes to the stored fingerprint, or it is not even a consistent
    # vocabulary any more (a changed token breaks the merge that built it). Both name the file.
    with pytest.raises(TokenizerFileError, match="fingerprint mismatch|invalid tokenizer file") as err:
        Tokenizer.load(path)
    assert str(err.value).startswith(str(path))


def test_truncated_and_malformed_files(trained_tok, tmp_path):
    path = trained_tok.save(tmp_path / "tok.ljt.json")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TokenizerFileError, match="truncated") as err:
        Tokenizer.load(path)
    assert str(path) in str(err.value)

    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(TokenizerFileError, match=f"{path}.*format"):
        Tokenizer.load(path)
    path.write_text(json.dumps({"format": "llm-journey-tokenizer", "version": 99}))
    with pytest.raises(TokenizerFileError, match="version 99"):
        Tokenizer.load(path)
    path.write_text(json.dumps({"format": "llm-journey-tokenizer", "version": 1, "tokens": []}))
    with pytest.raises(TokenizerFileError, match="missing field"):
        Tokenizer.load(path)
    with pytest.raises(TokenizerFileError, match="nope.json"):
        Tokenizer.load(tmp_path / "nope.json")


def test_save_is_atomic(trained_tok, gpt2_tok, tmp_path, monkeypatch):
    path = trained_tok.save(tmp_path / "tok.ljt.json")
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr("tokenizer.atomic_write.os.replace", crash)
    with pytest.raises(OSError, match="simulated"):
        gpt2_tok.save(path)
    with pytest.raises(OSError, match="simulated"):
        gpt2_tok.save_tiktoken(tmp_path / "new.tiktoken")
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.ljt.json"]  # and no temporaries


# ------------------------------------------------------------------------------- fingerprint
def test_fingerprint_follows_documented_recipe(any_tok):
    h = hashlib.sha256()
    h.update(f"ljt-fingerprint-v1\npattern {any_tok.pattern}\n".encode())
    for token, rank in sorted(any_tok.mergeable_ranks.items(), key=lambda kv: kv[1]):
        h.update(base64.b64encode(token) + f" {rank}\n".encode())
    for name, ident in sorted(any_tok.special_tokens.items(), key=lambda kv: kv[1]):
        h.update(b"special " + base64.b64encode(name.encode()) + f" {ident}\n".encode())
    assert any_tok.fingerprint == h.hexdigest()


def test_fingerprint_tracks_what_changes_encoding(trained_tok):
    ranks = dict(trained_tok.mergeable_ranks)
    same = Tokenizer(ranks, trained_tok.special_tokens, trained_tok.pattern, None, name="other name")
    assert same.fingerprint == trained_tok.fingerprint  # name and merges do not change any encoding
    assert Tokenizer(ranks, {"<|endoftext|>": 700}).fingerprint != trained_tok.fingerprint
    assert Tokenizer(ranks, trained_tok.special_tokens, r"\S+|\s+").fingerprint != trained_tok.fingerprint


# ------------------------------------------------------------------------------------ tiktoken
def test_tiktoken_file_round_trip(any_tok, samples, tmp_path):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    path = any_tok.save_tiktoken(tmp_path / "tok.tiktoken")
    enc = tiktoken.Encoding("t", pat_str=any_tok.pattern, mergeable_ranks=load_tiktoken_bpe(str(path)),
                            special_tokens=any_tok.special_tokens)
    for text in samples:
        assert enc.encode(text, allowed_special="all") == any_tok.encode(text, allowed_special="all"), text[:80]
    back = Tokenizer.from_tiktoken(path, special_tokens=any_tok.special_tokens, pattern=any_tok.pattern)
    assert back.fingerprint == any_tok.fingerprint
    assert back.merges == any_tok.merges  # recovered from the ranks alone


def test_bad_tiktoken_file(tmp_path):
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(b"IQ== 0\nIg== 1\nIw")
    with pytest.raises(TokenizerFileError, match=r"bad.tiktoken:3"):
        Tokenizer.from_tiktoken(path)
    path.write_bytes(b"IQ== 0\nIg== 2\n")
    with pytest.raises(TokenizerFileError, match="without gaps"):
        Tokenizer.from_tiktoken(path)


# ----------------------------------------------------------------------------- HF tokenizers
def test_hf_tokenizer_json_round_trip(any_tok, samples, tmp_path):
    import tokenizers

    any_tok.save_hf(tmp_path / "hf")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    assert hf.get_vocab_size() == any_tok.n_vocab
    for text in samples:
        ids = any_tok.encode(text, allowed_special="all")
        assert hf.encode(text).ids == ids, text[:80]
        assert hf.decode(ids, skip_special_tokens=False) == text
    config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|endoftext|>" and config["llm_journey_fingerprint"] == any_tok.fingerprint


def test_transformers_loads_the_directory(trained_tok, tmp_path):
    from transformers import PreTrainedTokenizerFast

    trained_tok.save_hf(tmp_path / "hf")
    fast = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "hf"))
    assert fast.eos_token_id == trained_tok.eot_id
    text = "Return the value of x.<|endoftext|>"
    assert fast(text)["input_ids"] == trained_tok.encode(text, allowed_special="all")


# ------------------------------------------------------------------------------ GPT-2's files
def test_gpt2_files_are_cross_checked(gpt2_files, tmp_path):
    encoder_json, vocab_bpe = gpt2_files
    lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
    bad_bpe = tmp_path / "vocab.bpe"
    bad_bpe.write_text("\n".join(lines[:5] + ["only-one-part"] + lines[6:]), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=r"vocab.bpe:6"):
        read_gpt2_files(encoder_json, bad_bpe)
    bad_bpe.write_text("\n".join([lines[0], lines[2], lines[1]] + lines[3:]), encoding="utf-8")  # swapped merges
    with pytest.raises(TokenizerFileError, match="merge #0"):
        read_gpt2_files(encoder_json, bad_bpe)
    bad_json = tmp_path / "encoder.json"
    bad_json.write_text(encoder_json.read_text(encoding="utf-8")[:1000], encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="encoder.json"):
        Tokenizer.from_gpt2_files(bad_json, vocab_bpe)


@pytest.fixture(scope="module")
def hf_pair(gpt2_tok, regex_tok, tmp_path_factory):
    import tokenizers

    out = []
    for tok in (gpt2_tok, regex_tok):
        directory = tok.save_hf(tmp_path_factory.mktemp("hf"))
        out.append((tok, tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))))
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40))
def test_hf_matches_on_arbitrary_text(hf_pair, text):
    # HF always treats added (special) tokens as special: compare with allowed_special="all".
    for tok, hf in hf_pair:
        assert hf.encode(text).ids == tok.encode(text, allowed_special="all")
