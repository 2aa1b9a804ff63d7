"""The shard directory's contract from the reader's side: manifest, checksums, and the tokenizer that
gives the ids their meaning (one function each, used by the stage, training, sampling and inspect)."""

import json

import numpy as np
import pytest

from contract.shard_format import ShardFormatError, ShardReader, damaged_files, shard_files
from harness.synthetic_shards import write_shards
from tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(["the cat sat on the mat; the dog sat on the log"] * 30, vocab_size=280)


def _shards(tmp_path, tok, fingerprint=None, tokenizer_path="../tok.ljt.json"):
    tok.save(tmp_path / "tok.ljt.json")
    docs = [np.array(tok.encode(t)) for t in ("the cat sat", "on the mat", "the dog sat on the log")]
    return write_shards(tmp_path / "shards", {"train": docs, "val": docs[:1]}, vocab_size=tok.n_vocab,
                        eot_id=tok.eot_id, tokenizer_fingerprint=fingerprint or tok.fingerprint,
                        tokenizer_path=tokenizer_path, shard_tokens=8)


def test_the_shards_open_with_their_own_tokenizer(tmp_path, tok):
    reader = ShardReader(_shards(tmp_path, tok))
    loaded = reader.load_tokenizer()
    assert loaded.fingerprint == tok.fingerprint == reader.tokenizer_fingerprint
    assert [loaded.decode(d[1:].tolist()) for _, d in reader.iter_documents("train")] == [
        "the cat sat", "on the mat", "the dog sat on the log"]


def test_another_tokenizer_is_refused(tmp_path, tok):
    reader = ShardReader(_shards(tmp_path, tok, fingerprint="0" * 64))
    with pytest.raises(ShardFormatError, match=r"tok\.ljt\.json has fingerprint .* the same ids would mean different"):
        reader.load_tokenizer(required=False)  # a wrong tokenizer is never "optional"


def test_a_missing_tokenizer_is_an_error_only_when_required(tmp_path, tok):
    reader = ShardReader(_shards(tmp_path, tok, tokenizer_path="../nowhere.ljt.json"))
    assert reader.load_tokenizer(required=False) is None
    with pytest.raises(ShardFormatError, match=r"nowhere\.ljt\.json\) is missing"):
        reader.load_tokenizer(required=True)


def test_the_manifest_lists_every_file_with_its_checksum(tmp_path, tok):
    out = _shards(tmp_path, tok)
    manifest = json.loads((out / "manifest.json").read_text())
    entries = [e for split in manifest["splits"].values() for e in split["shards"]]
    listed = sorted(o["path"] for o in manifest["outputs"])
    assert listed == sorted(rel for e in entries for rel, _, _ in shard_files(e))
    assert listed == sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
    assert all("resume" not in e for e in entries)  # writer bookkeeping stays out of the manifest


def test_a_flipped_byte_of_the_same_size_is_found(tmp_path, tok):
    out = _shards(tmp_path, tok)
    reader = ShardReader(out)
    entry = reader.shards("train")[0]
    assert damaged_files(out, entry) == []
    data = bytearray((out / entry["index"]).read_bytes())
    data[-1] ^= 0xFF
    (out / entry["index"]).write_bytes(bytes(data))
    assert damaged_files(out, entry) == [entry["index"]]
    with pytest.raises(ShardFormatError, match=r"train_000000\.index\.arrow: sha256 .*corrupt shard"):
        ShardReader(out, verify=True)
