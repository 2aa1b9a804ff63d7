"""make shards and the shard format: round trip, fixed sizes, splits, byte identity for any worker
count, kill -9 at several points then resume to the same bytes, reader checks, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pipeline_helpers import file_bytes, write_parquet, write_recipe

from contract import manifest as mf
from contract.raw import iter_raw_documents
from contract.recipe import load_recipe
from contract.shard_format import ShardFormatError, ShardReader, ShardWriter, dtype_for_vocab
from pipelines import data, learn_tokenizer, shards
from tokenizer import Tokenizer

REPO = Path(__file__).resolve().parent.parent
SHARDS = {"format": "npy", "shard_tokens": 4000, "val_documents": 40, "workers": 1}


def quiet(*_args, **_kwargs):
    pass


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Raw documents (first 800 python-docs documents in 8 files) and a small tokenizer, built once."""
    root = tmp_path_factory.mktemp("shards_project")
    recipe_path = write_recipe(root, name="tiny",
                               data={"source": "python-docs", "max_documents": 800, "rows_per_file": 100},
                               tokenizer={"vocab_size": 512, "max_characters": 200_000, "heldout_documents": 20})
    recipe = load_recipe(recipe_path)
    data.run(recipe, progress_bar=False, log=quiet)
    learn_tokenizer.run(recipe, progress_bar=False, log=quiet)
    return root


def recipe_with(project: Path, name: str, **shard_cfg):
    """A recipe that shares the project's raw/ and tokenizer/ but writes its own shards/."""
    import shutil

    art = project / "artifacts"
    if not (art / name).exists():
        (art / name).mkdir()
        for stage in ("raw", "tokenizer"):
            shutil.copytree(art / "tiny" / stage, art / name / stage)
    path = write_recipe(project, name=name,
                        data={"source": "python-docs", "max_documents": 800, "rows_per_file": 100},
                        tokenizer={"vocab_size": 512, "max_characters": 200_000, "heldout_documents": 20},
                        shards={**SHARDS, **shard_cfg})
    return path


def outputs(shard_dir: Path) -> dict:
    """Every shard file's bytes, and the manifest's bytes less its recipe name (tests use several names)
    and the checksum that covers the name."""
    files = file_bytes(shard_dir)
    manifest = json.loads(files.pop("manifest.json"))
    manifest.pop("recipe")
    manifest.pop(mf.CHECKSUM_KEY)
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files


def build(path, **kw):
    return shards.run(load_recipe(path), progress_bar=False, log=quiet, **kw)


@pytest.fixture(scope="module")
def reference(project):
    path = recipe_with(project, "ref")
    build(path)
    return load_recipe(path).stage_dir("shards")


def test_round_trip_every_document(project, reference):
    raw = dict(iter_raw_documents(project / "artifacts" / "tiny" / "raw"))
    reader = ShardReader(reference, verify=True)
    tok = Tokenizer.load(reader.tokenizer_path)
    assert reader.tokenizer_fingerprint == tok.fingerprint and reader.vocab_size == tok.n_vocab == 512
    assert reader.dtype == np.uint16 and reader.eot_id == tok.eot_id
    seen = {}
    for split in ("train", "val"):
        docs = list(reader.iter_documents(split))
        assert len(docs) == reader.num_documents(split)
        for doc_id, tokens in docs:
            assert tokens[0] == tok.eot_id and tok.eot_id not in tokens[1:]   # eot only at document starts
            assert tok.decode(tokens[1:].tolist()) == raw[doc_id]
            seen[doc_id] = split
    assert set(seen) == set(raw)
    assert sum(1 for s in seen.values() if s == "val") == 40
    # the val documents are exactly the 40 smallest id hashes: independent of order and worker count
    assert {d for d, s in seen.items() if s == "val"} == set(sorted(raw, key=lambda d: (shards.id_hash(d), d))[:40])


def test_fixed_shard_size_and_manifest(reference):
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["dtype"] == "uint16" and manifest["vocab_size"] == 512
    assert (reference / manifest["tokenizer"]["path"]).resolve().name == "tokenizer.ljt.json"
    reader = ShardReader(reference)
    for split in reader.splits:
        entries = reader.shards(split)
        sizes = [len(a) for a in reader.token_arrays(split)]
        assert sizes == [e["tokens"] for e in entries]
        assert all(s == 4000 for s in sizes[:-1]) and 0 < sizes[-1] <= 4000
        assert manifest["splits"][split]["tokens"] == sum(sizes)
        assert all(len(e["sha256"]) == 64 for e in entries)
    assert len(reader.shards("train")) > 20   # documents really are cut across shard boundaries


def test_npy_shards_load_like_build_nanogpt(reference):
    arr = np.load(reference / "train_000000.npy", mmap_mode="r")
    assert arr.dtype == np.uint16 and arr.shape == (4000,)
    reader = ShardReader(reference)
    mapped = reader.token_arrays("train")[0]
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable   # zero copy, read-only


@pytest.mark.parametrize("fmt", ["npy", "arrow"])
def test_byte_identical_for_any_worker_count(project, reference, fmt):
    one = recipe_with(project, f"w1_{fmt}", format=fmt)
    two = recipe_with(project, f"w2_{fmt}", format=fmt, workers=2)
    build(one)
    build(two)
    a, b = outputs(load_recipe(one).stage_dir("shards")), outputs(load_recipe(two).stage_dir("shards"))
    assert a == b and len(a) > 20
    if fmt == "npy":
        assert a == outputs(reference)


def test_arrow_format_readers(project):
    path = recipe_with(project, "w1_arrow", format="arrow")
    build(path)
    out = load_recipe(path).stage_dir("shards")
    reader = ShardReader(out, verify=True)
    npy = ShardReader(load_recipe(recipe_with(project, "ref")).stage_dir("shards"))
    for split in ("train", "val"):   # same token stream as the npy format
        assert np.array_equal(np.concatenate(reader.token_arrays(split)), np.concatenate(npy.token_arrays(split)))
        assert [d for d, _ in reader.iter_documents(split)] == [d for d, _ in npy.iter_documents(split)]
    import datasets

    ds = datasets.Dataset.from_file(str(out / "train_000001.arrow"))
    assert ds.column_names == ["input_ids", "id"]
    assert sum(len(x) for x in ds["input_ids"]) == 4000
    table = pa.ipc.open_stream(out / "train_000000.arrow").read_all()
    assert table.schema.field("input_ids").type == pa.list_(pa.uint16())
    arr = reader.token_arrays("train")[0]
    assert not arr.flags.owndata   # a view into the memory-mapped file


def _progress_shards(out: Path) -> int:
    """Shards recorded in the journal so far (its complete lines after the header)."""
    try:
        return max(0, (out / shards.PROGRESS).read_bytes().count(b"\n") - 1)
    except OSError:
        return 0


def _run_and_kill(recipe: Path, after_shards: int) -> int:
    """Start the stage in a subprocess, SIGKILL it once `after_shards` shards are recorded."""
    out = load_recipe(recipe).stage_dir("shards")
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.shards", "--config", str(recipe), "--no-progress"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while proc.poll() is None and _progress_shards(out) < after_shards and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    rc = proc.wait()
    assert rc == -signal.SIGKILL, f"the stage finished before it could be killed: {proc.stderr.read()!r}"
    return _progress_shards(out)


@pytest.mark.parametrize("fmt, workers, kill_points", [("npy", 2, (1, 12, 40)), ("arrow", 1, (3, 30))])
def test_kill9_then_resume_gives_the_same_bytes(project, reference, fmt, workers, kill_points):
    path = recipe_with(project, f"kill_{fmt}", format=fmt, workers=workers, shard_tokens=2000)
    out = load_recipe(path).stage_dir("shards")
    done = 0
    for k in kill_points:
        done_now = _run_and_kill(path, k)
        assert done_now >= done   # finished shards survive a kill and are not redone
        done = done_now
        assert not (out / "manifest.json").exists()   # nothing looks complete
    logs = []
    shards.run(load_recipe(path), progress_bar=False, log=logs.append)
    assert any("resuming after" in line for line in logs)
    fresh = recipe_with(project, f"fresh_{fmt}", format=fmt, workers=1, shard_tokens=2000)
    build(fresh)
    assert outputs(out) == outputs(load_recipe(fresh).stage_dir("shards"))
    assert not list(out.glob("*.tmp"))


def test_up_to_date_and_staleness(project):
    path = recipe_with(project, "stale")
    build(path)
    logs = []
    build(path, workers=2)   # the worker count is not part of the output: still up to date
    out = load_recipe(path).stage_dir("shards")
    (out / shards.OLD_PROGRESS).write_text("{}")          # as an earlier version left it
    (out / "train_000009.npy.tmp").write_bytes(b"torn")   # as left by a kill
    shards.run(load_recipe(path), progress_bar=False, log=logs.append)
    assert "up to date" in logs[-1]
    assert not (out / shards.OLD_PROGRESS).exists() and not list(out.glob("*.tmp"))
    path = recipe_with(project, "stale", shard_tokens=3000)   # a changed key reruns the stage
    manifest = build(path)
    assert manifest["shard_tokens"] == 3000
    assert not list(load_recipe(path).stage_dir("shards").glob("*_000000.index.arrow.tmp"))


def test_val_fraction_split(project):
    path = recipe_with(project, "frac", val_documents=0, val_fraction=0.1)
    manifest = build(path)
    n_val = manifest["splits"]["val"]["documents"]
    assert 40 <= n_val <= 120   # ~10% of 780 train-able documents by hash
    reader = ShardReader(load_recipe(path).stage_dir("shards"))
    for doc_id, _ in reader.iter_documents("val"):
        assert shards.id_hash(doc_id) < 0.1 * 2**64
    path = recipe_with(project, "noval", val_documents=0, val_fraction=0.0)
    assert list(build(path)["splits"]) == ["train"]
    path = recipe_with(project, "allval", val_documents=800)
    with pytest.raises(shards.ShardsStageError, match=r"val_documents = 800 leaves none of the 800 raw documents"):
        build(path)


def test_reader_refuses_other_tokenizer_and_bad_files(project, reference, tmp_path):
    import shutil

    fp = ShardReader(reference).tokenizer_fingerprint
    ShardReader(reference, expect_fingerprint=fp)
    with pytest.raises(ShardFormatError, match=r"encoded with tokenizer .* Rebuild the shards"):
        ShardReader(reference, expect_fingerprint="f" * 64)
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    victim = copy / "train_000003.npy"
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF    # same size, different content: only the checksum can tell
    victim.write_bytes(bytes(raw))
    ShardReader(copy)   # opens: sizes match
    with pytest.raises(ShardFormatError, match=r"train_000003\.npy: sha256 .*corrupt shard"):
        ShardReader(copy, verify=True)
    victim.write_bytes(bytes(raw[:-10]))
    with pytest.raises(ShardFormatError, match=r"train_000003\.npy: \d+ bytes, manifest says"):
        ShardReader(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ShardFormatError, match=r"manifest\.json not found"):
        ShardReader(copy)
    with pytest.raises(ShardFormatError, match=r"no split 'test'"):
        ShardReader(reference).shards("test")


def test_writer_cuts_documents_and_uses_uint32_for_big_vocabularies(tmp_path):
    assert dtype_for_vocab(65536) == np.uint16 and dtype_for_vocab(65537) == np.uint32
    entries = []
    w = ShardWriter(tmp_path, "train", "arrow", 5, np.uint32, eot_id=70000, on_shard=entries.append)
    docs = {"a": [70000, 1, 2, 3], "b": [70000, 66000, 5, 6, 7, 8, 9], "c": [70000]}
    for i, (doc_id, toks) in enumerate(docs.items()):
        w.add(doc_id, np.array(toks, np.uint32), [0, i])
    w.close()
    assert [e["tokens"] for e in entries] == [5, 5, 2]
    assert entries[0]["resume"] == {"position": [0, 1], "offset": 1}   # shard 1 starts inside document b
    assert entries[-1]["resume"] is None
    table = pa.ipc.open_stream(tmp_path / "train_000001.arrow").read_all()
    assert table.schema.field("input_ids").type == pa.list_(pa.uint32())
    assert table.column("id").to_pylist() == ["b"]   # the middle of b: no leading eot
    assert table.column("input_ids").to_pylist() == [[66000, 5, 6, 7, 8]]


def test_encoding_window_bounds_memory(monkeypatch):
    """At most 2*workers+2 tasks are in flight, however many tasks there are: memory does not grow.
    The first task is encoded here, before the pool exists (its workers then start warm)."""
    encoded_here = []
    monkeypatch.setattr(shards, "encode_task", lambda task, split: encoded_here.append(task) or task)

    class FakePool:
        def __init__(self):
            self.in_flight = self.peak = 0

        def apply_async(self, fn, args):
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            pool = self

            class Result:
                def get(self):
                    pool.in_flight -= 1
                    return args[0]

            return Result()

    pool = FakePool()
    tasks = [(0, i) for i in range(1000)]

    def pool_of():
        assert encoded_here == [(0, 0)]  # made after the first task, which was encoded here
        return pool

    results = shards._ordered_results(pool_of, tasks, 0, "train", workers=3)
    assert [t for t, _ in results] == list(range(1000))  # in order
    assert encoded_here == [(0, 0)] and pool.peak == 8
    assert list(shards._ordered_results(pool_of, tasks, 1000, "train", workers=3)) == []  # nothing left


def test_empty_documents_are_skipped_and_counted_and_big_document(tmp_path):
    rows = [{"text": "hello world", "id": "a"}, {"text": "  \n ", "id": "b"},
            {"text": "x" * 10 + " big" * 12_500_000, "id": "big"}, {"text": "", "id": "c"}]
    write_parquet(tmp_path / "in.parquet", rows, row_group_size=2)
    path = write_recipe(tmp_path, data={"source": "local", "paths": [str(tmp_path / "in.parquet")], "id_field": "id"},
                        tokenizer={"vocab_size": 300, "max_characters": 10_000, "heldout_documents": 0},
                        shards={"shard_tokens": 1_000_000, "workers": 1})
    recipe = load_recipe(path)
    data.run(recipe, progress_bar=False, log=quiet)
    learn_tokenizer.run(recipe, progress_bar=False, log=quiet)
    raw_dir = recipe.stage_dir("raw")
    # raw files written by something else may hold empty texts: the shards stage counts them too
    write_parquet(raw_dir / "part-00000.parquet", rows, row_group_size=2)
    manifest = json.loads((raw_dir / "manifest.json").read_text())
    manifest["outputs"][0] = mf.output_entry(raw_dir / "part-00000.parquet", raw_dir)
    mf.write_manifest(raw_dir, manifest)   # a valid manifest for the new file (its checksum included)
    result = shards.run(recipe, progress_bar=False, log=quiet)
    train = result["splits"]["train"]
    assert train["documents"] == 2 and train["skipped_empty"] == 2
    reader = ShardReader(recipe.stage_dir("shards"))
    docs = dict(reader.iter_documents("train"))
    assert set(docs) == {"a", "big"} and len(docs["big"]) > 12_500_000   # a 50 MB document, cut across shards
    tok = Tokenizer.load(reader.tokenizer_path)
    assert tok.decode(docs["big"][1:200].tolist()).startswith("x" * 10 + " big big")
