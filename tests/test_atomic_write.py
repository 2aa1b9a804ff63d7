"""The one helper every file goes through: whole or not at all, with the usual file mode."""

import os
import stat

import numpy as np
import pytest

from tokenizer import Tokenizer
from tokenizer.atomic_write import atomic_open, atomic_path, temporary_path, write_json_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic(path, {"v": 1})
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(path, "wb") as f:
            f.write(b"half of a new fi")
            raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(tmp_path / "b.png") as tmp:
            tmp.write_bytes(b"x")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_the_temporary_name_is_the_one_stages_clean_up(tmp_path):
    assert temporary_path(tmp_path / "train_000001.npy") == tmp_path / "train_000001.npy.tmp"


def test_json_is_sorted_indented_and_ends_with_a_newline(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"b": 1, "a": "é"})
    assert (tmp_path / "m.json").read_text(encoding="utf-8") == '{\n  "a": "é",\n  "b": 1\n}\n'


def test_tokenizer_files_and_hf_export_are_readable_by_others(tmp_path, umask_022):
    """mkstemp would make them 0600: a tokenizer shared on a cluster must be 0644, like the shards."""
    tok = Tokenizer.train(["hello world, hello tokens"] * 20, vocab_size=270)
    written = [tok.save(tmp_path / "tokenizer.ljt.json"), tok.save_tiktoken(tmp_path / "tokenizer.tiktoken")]
    tok.save_hf(tmp_path / "hf")
    written += sorted((tmp_path / "hf").iterdir())
    torch = pytest.importorskip("torch")
    from model import GPT, GPTConfig
    from model.hf import export_hf
    from train.checkpoint import save_checkpoint

    model = GPT(GPTConfig.from_preset("tiny", vocab_size=tok.n_vocab, block_size=16))
    export_hf(model, tmp_path / "export")
    written += sorted((tmp_path / "export").iterdir())
    written.append(save_checkpoint(tmp_path / "ckpt.pt", {"step": 0, "model": model.state_dict()}))
    np.save(tmp_path / "reference.npy", np.zeros(3))  # what a plain open() gives under this umask
    assert torch is not None
    assert {p.name: mode(p) for p in written} == {p.name: mode(tmp_path / "reference.npy") for p in written}
    assert mode(tmp_path / "reference.npy") == 0o644
