"""contract/manifest.py: manifests read as a schema (errors name the file and the key), their own
checksum, and an up-to-date check that notices damaged outputs at a bounded cost."""

from __future__ import annotations

import json
import os

import pytest

from contract import manifest as mf
from contract.manifest import EachValue, ManifestError, MayOmit, check_schema

SCHEMA = {"name": str, "count": int, "ratio": float, "tags": [str], "eot": (int, None), "note": MayOmit(str),
          "splits": EachValue({"tokens": int, "shards": [{"path": str, "bytes": int}]})}
GOOD = {"name": "x", "count": 3, "ratio": 1, "tags": ["a"], "eot": None,
        "splits": {"train": {"tokens": 5, "shards": [{"path": "a.npy", "bytes": 10}]}}}


def test_a_valid_value_passes_and_extra_keys_are_allowed():
    check_schema({**GOOD, "later_fact": [1, 2]}, SCHEMA, file="m.json")
    check_schema({**GOOD, "note": "n", "eot": 7}, SCHEMA, file="m.json")


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("count"), r"m\.json: key 'count' is missing$"),
    (lambda m: m.update(count="3"), r"m\.json: key 'count' must be an integer, got string \"3\""),
    (lambda m: m.update(count=True), r"key 'count' must be an integer, got boolean true"),
    (lambda m: m.update(ratio="1"), r"key 'ratio' must be a number"),
    (lambda m: m.update(tags="a"), r"key 'tags' must be a list, got string"),
    (lambda m: m.update(tags=["a", 2]), r"key 'tags\[1\]' must be a string, got integer 2"),
    (lambda m: m.update(eot="x"), r"key 'eot' must be an integer or null"),
    (lambda m: m.update(note=5), r"key 'note' must be a string"),
    (lambda m: m["splits"]["train"]["shards"][0].pop("bytes"), r"key 'splits\.train\.shards\[0\]\.bytes' is missing"),
    (lambda m: m["splits"].update(val=[]), r"key 'splits\.val' must be an object, got list"),
])
def test_every_problem_names_the_file_and_the_dotted_key(change, message):
    bad = json.loads(json.dumps(GOOD))
    change(bad)
    with pytest.raises(ManifestError, match=message):
        check_schema(bad, SCHEMA, file="m.json")


def test_the_top_level_must_be_an_object():
    with pytest.raises(ManifestError, match=r"m\.json: the top level must be an object, got list"):
        check_schema([1], SCHEMA, file="m.json")


def _stage(tmp_path, files: dict[str, bytes], config=None):
    out = tmp_path / "shards"
    out.mkdir()
    for name, content in files.items():
        (out / name).write_bytes(content)
    manifest = {"stage": "shards", "config": config or {"k": 1}, "inputs": {"i": "x"},
                "outputs": [mf.output_entry(out / name, out) for name in files]}
    mf.write_manifest(out, manifest)
    return out


def test_reading_checks_the_schema_and_names_the_remedy(tmp_path):
    out = _stage(tmp_path, {"a.bin": b"abc"})
    assert mf.read_manifest(out)["outputs"][0]["bytes"] == 3
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["outputs"][0]["sha256"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"shards/manifest\.json: key 'outputs\[0\]\.sha256' is missing; "
                                            r"`make shards` rebuilds it"):
        mf.read_manifest(out)
    (out / "manifest.json").write_text("{torn")
    with pytest.raises(ManifestError, match=r"manifest\.json: not valid JSON"):
        mf.read_manifest(out)
    (out / "manifest.json").unlink()
    assert mf.read_manifest(out) is None   # absent: the stage has not finished, not an error


def test_an_edited_value_breaks_the_manifests_own_checksum(tmp_path):
    out = _stage(tmp_path, {"a.bin": b"abc"})
    text = (out / "manifest.json").read_text()
    assert mf.CHECKSUM_KEY in json.loads(text)
    edited = text.replace('"bytes": 3', '"bytes": 4')   # same size, still valid JSON and the right type
    assert edited != text and len(edited) == len(text)
    (out / "manifest.json").write_text(edited)
    with pytest.raises(ManifestError, match=r"does not match its manifest_sha256 \(edited or damaged"):
        mf.read_manifest(out)
    verdict = mf.is_up_to_date(out, {"k": 1}, {"i": "x"})
    assert not verdict and verdict.damaged and "manifest_sha256" in verdict.reason
    legacy = json.loads(text)
    del legacy[mf.CHECKSUM_KEY]   # written before manifests carried one: accepted as it is
    (out / "manifest.json").write_text(json.dumps(legacy))
    assert mf.is_up_to_date(out, {"k": 1}, {"i": "x"})


def test_up_to_date_notices_a_same_size_corruption_of_a_small_output(tmp_path):
    out = _stage(tmp_path, {"tok.json": b"x" * 1000})
    assert mf.is_up_to_date(out, {"k": 1}, {"i": "x"})
    st = (out / "tok.json").stat()
    (out / "tok.json").write_bytes(b"y" + b"x" * 999)
    os.utime(out / "tok.json", ns=(st.st_atime_ns, st.st_mtime_ns))   # even with its old mtime back
    verdict = mf.is_up_to_date(out, {"k": 1}, {"i": "x"})
    assert not verdict and verdict.damaged
    assert "tok.json: sha256 differs from the manifest" in verdict.reason
    assert not mf.is_up_to_date(out, {"k": 2}, {"i": "x"}).damaged   # a changed setting is not damage


def test_big_outputs_are_hashed_only_when_their_stat_changed(tmp_path, monkeypatch):
    monkeypatch.setattr(mf, "FULL_HASH_BYTES", 100)   # so that these files count as big
    out = _stage(tmp_path, {"a.npy": b"a" * 1000, "b.npy": b"b" * 1000, "small": b"s" * 10})
    hashed = []
    real = mf.sha256_file
    monkeypatch.setattr(mf, "sha256_file", lambda p, *a: hashed.append(os.path.basename(p)) or real(p, *a))

    assert mf.is_up_to_date(out, {"k": 1}, {"i": "x"})
    assert hashed == ["small"]   # write_manifest recorded the big files' stamps: nothing to hash again
    assert (tmp_path / ".shards.verified.json").is_file() and not list(out.glob(".*"))   # beside, not inside

    hashed.clear()
    (out / "b.npy").write_bytes(b"c" * 1000)   # a write changes ctime, which nothing can set back
    verdict = mf.is_up_to_date(out, {"k": 1}, {"i": "x"})
    assert hashed == ["b.npy", "small"] and verdict.damaged and "b.npy: sha256 differs" in verdict.reason

    (out / "b.npy").write_bytes(b"b" * 1000)   # put back: hashed once more, confirmed, trusted again
    hashed.clear()
    assert mf.is_up_to_date(out, {"k": 1}, {"i": "x"}) and hashed == ["b.npy", "small"]
    hashed.clear()
    assert mf.is_up_to_date(out, {"k": 1}, {"i": "x"}) and hashed == ["small"]

    with mf.full_verification():   # VERIFY=1: no stamp is trusted
        hashed.clear()
        assert mf.is_up_to_date(out, {"k": 1}, {"i": "x"}) and sorted(hashed) == ["a.npy", "b.npy", "small"]


def test_what_the_stamps_cannot_see_and_full_verification_can(tmp_path, monkeypatch):
    """A change that bypasses the file system (bit rot) keeps the stamp: only hashing finds it."""
    monkeypatch.setattr(mf, "FULL_HASH_BYTES", 100)
    out = _stage(tmp_path, {"a.npy": b"a" * 1000})
    (out / "a.npy").write_bytes(b"z" + b"a" * 999)
    stamps = json.loads((tmp_path / ".shards.verified.json").read_text())
    stamps["files"]["a.npy"][1:] = mf._stamp((out / "a.npy").stat())   # as if the disk had flipped the byte
    (tmp_path / ".shards.verified.json").write_text(json.dumps(stamps))
    assert mf.is_up_to_date(out, {"k": 1}, {"i": "x"})   # the documented blind spot of the default check
    with mf.full_verification():
        assert mf.is_up_to_date(out, {"k": 1}, {"i": "x"}).damaged


def test_leftovers_are_every_tmp_file_and_directory(tmp_path):
    (tmp_path / "hf.tmp").mkdir()
    (tmp_path / "hf.tmp" / "tokenizer.json.tmp").write_text("x")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "tokenizer.json.tmp").write_text("x")
    (tmp_path / "a.npy.tmp").write_text("x")
    (tmp_path / "keep.json").write_text("x")
    mf.remove_leftovers(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["hf", "keep.json"]
