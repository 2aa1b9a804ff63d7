"""A stage is up to date only when its outputs are intact: a same-size corrupted shard, tokenizer or
manifest value makes the stage that produced it repair it, and every message that suggests a
command suggests one that does repair it (the tests follow the advice and check the result)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from stage_helpers import REPO, copy_project, original_project, python_m, shard_bytes, stage_dir

from contract import manifest as mf
from contract.shard_format import ShardFormatError, ShardReader
from pipelines import learn_tokenizer, shards


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return original_project(tmp_path_factory)


@pytest.fixture
def project(original, tmp_path):
    return copy_project(original, tmp_path)


def flip_byte_in_place(path, offset: int = -1) -> None:
    """Corrupt one byte, keeping the size and the modification time (what a careless tool, or a
    disk, could do): only a checksum can tell."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def inodes(directory) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in directory.iterdir()}


def test_a_corrupted_shard_is_re_encoded_from_there_on(project, original, tmp_path, capsys):
    out = stage_dir(tmp_path, "shards")
    before = inodes(out)
    flip_byte_in_place(out / "train_000010.npy")
    assert shards.main(["--config", str(project), "--no-progress"]) == 0
    log = capsys.readouterr().out
    assert "train_000010.npy: sha256 differs from the manifest" in log and "is up to date" not in log
    assert "resuming after" in log
    assert shard_bytes(tmp_path) == shard_bytes(original)   # repaired to the very same bytes
    after = inodes(out)
    kept = [n for n in before if n.startswith(("val_", "train_00000")) and before[n] == after[n]]
    assert len(kept) == len([n for n in before if n.startswith(("val_", "train_00000"))])   # not rewritten
    assert after["train_000010.npy"] != before["train_000010.npy"]
    assert shards.main(["--config", str(project), "--no-progress"]) == 0
    assert "is up to date" in capsys.readouterr().out


def test_an_edited_manifest_value_is_noticed_by_readers_and_repaired_by_the_stage(project, original, tmp_path,
                                                                                  capsys):
    out = stage_dir(tmp_path, "shards")
    text = (out / "manifest.json").read_text()
    edited = re.sub(r'"eot_id": (\d+)', lambda m: f'"eot_id": {int(m.group(1)) - 1}', text, count=1)
    assert edited != text and len(edited) == len(text)   # still valid, same size, right type
    (out / "manifest.json").write_text(edited)
    with pytest.raises(ShardFormatError, match=r"manifest_sha256 .*; `make shards` rebuilds it"):
        ShardReader(out)
    # the advice: `make shards` (its stage) notices the edit and rewrites the manifest from its journal
    assert shards.main(["--config", str(project), "--no-progress"]) == 0
    assert "does not match its manifest_sha256" in capsys.readouterr().out
    assert shard_bytes(tmp_path) == shard_bytes(original)
    ShardReader(out, verify=True)


def test_a_corrupted_tokenizer_is_retrained_and_the_shards_stay_valid(project, original, tmp_path, capsys):
    tok = stage_dir(tmp_path, "tokenizer") / "tokenizer.ljt.json"
    flip_byte_in_place(tok, offset=len(tok.read_bytes()) // 2)
    with pytest.raises(ShardFormatError, match=r"tokenizer\.ljt\.json.*; `make shards` rebuilds whichever"):
        ShardReader(stage_dir(tmp_path, "shards")).load_tokenizer()
    assert learn_tokenizer.main(["--config", str(project), "--no-progress"]) == 0
    assert "tokenizer.ljt.json: sha256 differs from the manifest" in capsys.readouterr().out
    assert tok.read_bytes() == (stage_dir(original, "tokenizer") / "tokenizer.ljt.json").read_bytes()
    assert shards.main(["--config", str(project), "--no-progress"]) == 0
    assert "is up to date" in capsys.readouterr().out   # same merges, same fingerprint: shards still valid
    ShardReader(stage_dir(tmp_path, "shards")).load_tokenizer()


def test_big_shards_cost_a_stat_and_verify_finds_what_a_stat_cannot(project, original, tmp_path, capsys,
                                                                    monkeypatch):
    """With every shard counted as big, an untouched directory is checked without hashing a shard; a
    written shard is found by its stat; a change no stat shows is found by --verify (VERIFY=1)."""
    monkeypatch.setattr(mf, "FULL_HASH_BYTES", 1000)   # the shards (~40 KB) are "big", indexes small
    out = stage_dir(tmp_path, "shards")
    assert shards.main(["--config", str(project), "--no-progress", "--force"]) == 0   # records the stamps
    hashed = []
    real = mf.sha256_file
    monkeypatch.setattr(mf, "sha256_file", lambda p, *a: hashed.append(os.path.basename(p)) or real(p, *a))
    assert shards.main(["--config", str(project), "--no-progress"]) == 0
    assert "is up to date" in capsys.readouterr().out and not [n for n in hashed if n.endswith(".npy")]

    data = bytearray((out / "train_000003.npy").read_bytes())
    data[-1] ^= 0xFF
    (out / "train_000003.npy").write_bytes(bytes(data))
    stamps_file = out.parent / ".shards.verified.json"
    stamps = json.loads(stamps_file.read_text())
    stamps["files"]["train_000003.npy"][1:] = mf._stamp((out / "train_000003.npy").stat())   # "bit rot"
    stamps_file.write_text(json.dumps(stamps))
    assert shards.main(["--config", str(project), "--no-progress"]) == 0
    assert "is up to date" in capsys.readouterr().out   # the documented blind spot
    with pytest.raises(ShardFormatError, match=r"train_000003\.npy: sha256 .*`make shards VERIFY=1` re-encodes"):
        ShardReader(out, verify=True)
    assert shards.main(["--config", str(project), "--no-progress", "--verify"]) == 0   # the advice
    assert "train_000003.npy: sha256 differs" in capsys.readouterr().out
    assert shard_bytes(tmp_path) == shard_bytes(original)


def test_make_follows_inspects_advice(project, original, tmp_path):
    """The real commands: inspect finds the damage and names a make command; that command repairs it."""
    shard_dir = stage_dir(tmp_path, "shards")
    flip_byte_in_place(shard_dir / "val_000001.npy")
    result = python_m("pipelines.inspect", str(shard_dir), "--docs", "0", "--top", "0")
    assert result.returncode == 1 and "MISMATCH in val_000001.npy" in result.stdout
    advice = re.search(r"`(make shards[^`]*)`", result.stdout).group(1)
    venv = REPO / ".venv"
    make = subprocess.run([*advice.split(), f"CONFIG={project}", f"VENV={venv}", "-o", f"{venv}/.installed"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert make.returncode == 0, make.stderr
    assert "val_000001.npy: sha256 differs" in make.stdout
    result = python_m("pipelines.inspect", str(shard_dir), "--docs", "0", "--top", "0")
    assert result.returncode == 0 and "all sha256 match the manifest" in result.stdout
    assert shard_bytes(tmp_path) == shard_bytes(original)
