"""The data stages on a real Ray cluster: a head node and a second node on loopback (two raylets, one CPU
each), reached through RAY_ADDRESS as a user would; nothing of Ray is mocked.

What is checked, every time against the local executor on the same recipe, byte for byte (sha256):
- `make data`, `make tokenizer`, `make shards` with EXECUTOR=ray write the local executor's files, with
  tasks running on both nodes; a directory made by one executor is up to date for the other; a shard
  damaged afterwards is repaired on Ray from the journal;
- `make data` for a hub dataset (a directory laid out like a hub repository, read through the same
  `datasets` streaming code path, since tests have no network) and for local files: one task per input
  file, duplicates across files, empty documents and files, limits that stop in the middle of a file;
- a worker process killed (SIGKILL, by PID) in the middle of a task of each stage: Ray runs the task
  again, the output is unchanged;
- the driver killed with kill -9 in the middle of `make shards`: what it finished stays, and a rerun
  resumes from it (no range encoded again, no journaled shard written again) to the same bytes, on
  Ray and with the local executor (they share the journal); in the middle of `make data`: the rerun
  fetches only the input files not yet staged;
- a bad input found by a task is the local executor's one `error:` line, status 2.
The cluster is started once for the module and stopped by killing exactly its own processes. Ray comes
with the project's `ray` extra, which `make setup` installs: without it these tests fail, they do not skip.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_helpers import write_jsonl, write_parquet, write_recipe

from contract.recipe import load_recipe
from harness.ray_cluster import LocalRayCluster, TaskWatcher
from pipelines import data, learn_tokenizer, shards
from pipelines.executors import ray_data, ray_shards, ray_tokenizer

REPO = Path(__file__).resolve().parent.parent
NAME = "mini"
SECTIONS = {
    "data": {"source": "python-docs", "max_documents": 900, "rows_per_file": 400},
    "tokenizer": {"vocab_size": 420, "max_characters": 300_000, "max_chars_per_doc": 4000, "heldout_documents": 20},
    "shards": {"shard_tokens": 12_000, "val_documents": 40, "workers": 1},
}
STAGES = (data, learn_tokenizer, shards)
TASKS = ("fetch_unit", "write_part", "count_slice", "encode_range", "write_shard")


def quiet(*_args, **_kwargs):
    pass


def recipe_in(root: Path, **shards_cfg) -> Path:
    return write_recipe(root, name=NAME, **{**SECTIONS, "shards": {**SECTIONS["shards"], **shards_cfg}})


def run_stages(recipe: Path, executor: str, stages=STAGES) -> None:
    for stage in stages:
        assert stage.main(["--config", str(recipe), "--no-progress", "--executor", executor]) == 0


def digests(directory: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under a stage directory, by relative path: equal dicts, the same bytes."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name not in skip}


# report.json holds the training time (and the tokenizer manifest its sha256): they differ between any
# two runs, whichever the executor; the tokenizer itself, in its three formats, must not.
TOKENIZER_TIMINGS = ("report.json", "manifest.json")


def outputs(root: Path) -> dict[str, dict[str, str]]:
    art = root / "artifacts" / NAME
    return {"raw": digests(art / "raw"), "tokenizer": digests(art / "tokenizer", TOKENIZER_TIMINGS),
            "shards": digests(art / "shards")}


@pytest.fixture(scope="module")
def cluster():
    started = LocalRayCluster(nodes=2, cpus=1).start()
    try:
        yield started
    finally:
        started.stop()
    assert started.processes() == []


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    return cluster


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> Path:
    """The tiny project made by the local executor: what every Ray run must reproduce."""
    root = tmp_path_factory.mktemp("local")
    run_stages(recipe_in(root), "local")
    return root


def test_stages_on_two_nodes_write_the_local_bytes(on_cluster, local_reference, tmp_path):
    assert len(on_cluster.raylets()) == 2
    recipe = recipe_in(tmp_path)
    with TaskWatcher(on_cluster, TASKS) as watcher:
        run_stages(recipe, "ray")
    assert outputs(tmp_path) == outputs(local_reference)
    shard_dir = tmp_path / "artifacts" / NAME / "shards"
    assert (shard_dir / shards.PROGRESS).is_file() and not (shard_dir / ray_shards.SPILL_DIR).exists()
    assert not (tmp_path / "artifacts" / NAME / "raw" / ray_data.STAGING_DIR).exists()
    # the work went round the cluster: tasks ran on both nodes
    assert len(set().union(*watcher.seen.values())) == 2
    # what one executor made is up to date for the other: the executor is not part of any manifest
    for stage in STAGES:
        logs = []
        stage.run(load_recipe(recipe), progress_bar=False, log=logs.append)
        assert any("is up to date" in line for line in logs), logs
    # a shard damaged afterwards is repaired on Ray from the journal: the shards before it are kept
    damaged = shard_dir / "train_000005.npy"
    corrupt = bytearray(damaged.read_bytes())
    corrupt[-1] ^= 0xFF
    damaged.write_bytes(bytes(corrupt))
    before = stamps(shard_dir, "train_00000[0-4].npy")
    logs = []
    shards.run(load_recipe(recipe), progress_bar=False, log=logs.append, executor="ray")
    assert any("repairing" in line for line in logs), logs
    assert stamps(shard_dir, "train_00000[0-4].npy") == before
    assert outputs(tmp_path) == outputs(local_reference)


def hub_stand_in(root: Path, files: int = 3, rows_per_file: int = 110) -> Path:
    """A directory laid out like a hub dataset repository, parquet files with duplicate ids across them and
    empty texts: the `hf` source streams it through `datasets` exactly as it streams a hub dataset (with no
    network, this is what can be tested)."""
    n = files * rows_per_file
    rows = []
    for i in range(n):
        text = "" if i % 41 == 7 else f"doc {i} " + "lorem ipsum " * (i % 9)
        rows.append({"text": text, "id": f"<urn:{i % (n - 20):04d}>", "score": i / 7, "url": f"https://x.org/{i}"})
    hub = root / "hub"
    (hub / "data").mkdir(parents=True)
    for k in range(files):
        write_parquet(hub / "data" / f"train-{k:05d}-of-{files:05d}.parquet",
                      rows[rows_per_file * k: rows_per_file * (k + 1)], row_group_size=32)
    return hub


def local_stand_in(root: Path) -> list[str]:
    """Local files: jsonl with an empty text and a lone surrogate, an empty file, a file listed twice, txt
    with invalid UTF-8, and a bad line that only a stream reading past the document limit would reach."""
    d = root / "inputs"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [{"text": f"alpha {i}", "id": i} for i in range(30)] + [{"text": " ", "id": 99},
                                                                                        {"text": "x \ud800", "id": 98}])
    (d / "empty.jsonl").write_bytes(b"")
    (d / "c.txt").write_bytes(b"line one\nline \xff two\n\nthree\n" * 5)
    write_jsonl(d / "d.jsonl", [{"text": f"delta {i}", "id": 100 + i} for i in range(20)])
    (d / "e.jsonl").write_text('{"text": "last", "id": 500}\nnot json\n', encoding="utf-8")
    return [str(d / "a.jsonl"), str(d / "empty.jsonl"), str(d / "c.txt"), str(d / "a.jsonl"), str(d / "d.jsonl"),
            str(d / "e.jsonl")]


@pytest.mark.parametrize("case", ["hub", "hub made-up ids, limit mid-file", "local files"])
def test_data_on_ray_fetches_file_by_file_and_writes_the_local_files(on_cluster, tmp_path, case):
    if case.startswith("hub"):
        fields = {"source": "hf", "dataset": str(hub_stand_in(tmp_path)), "metadata_fields": ["score", "url"],
                  "rows_per_file": 70}      # part files cross the boundaries of the input files
        if case == "hub":
            fields["id_field"] = "id"
        else:
            fields |= {"max_documents": 150, "rows_per_file": 33}
    else:
        fields = {"source": "local", "paths": local_stand_in(tmp_path), "rows_per_file": 16,
                  "max_documents": 66}      # the limit stops the stream before e.jsonl's bad line
    results = {}
    for executor in ("local", "ray"):
        (tmp_path / executor).mkdir()
        recipe = write_recipe(tmp_path / executor, name="hubby", data=fields)
        logs = []
        with TaskWatcher(on_cluster, ("fetch_unit",)) as watcher:
            data.run(load_recipe(recipe), progress_bar=False, log=logs.append, executor=executor)
        results[executor] = digests(tmp_path / executor / "artifacts" / "hubby" / "raw")
        results[executor + " warnings"] = [line for line in logs if "warning" in line]
    assert results["ray"] == results["local"]
    assert results["ray warnings"] == results["local warnings"]
    assert len(watcher.seen["fetch_unit"]) == 2   # the input files were fetched on both nodes


def test_a_worker_killed_mid_task_is_retried_and_changes_nothing(on_cluster, local_reference, tmp_path, monkeypatch):
    """One worker process SIGKILLed in the middle of a task of each stage. Fewer, longer tasks than usual
    (the driver-side knobs), so that every kind of task runs long enough to be caught."""
    monkeypatch.setattr(ray_tokenizer, "SLICES_AT_LEAST", 2)
    monkeypatch.setattr(ray_shards, "RANGES_AT_LEAST", 2)
    recipe = recipe_in(tmp_path)
    for stage, task in zip(STAGES, ("fetch_unit", "count_slice", "encode_range")):
        with TaskWatcher(on_cluster, (task,), kill=True) as killer:
            run_stages(recipe, "ray", stages=(stage,))
        assert task in killer.killed, f"no {task} task was caught running"
    assert outputs(tmp_path) == outputs(local_reference)


def _journaled(shard_dir: Path) -> int:
    try:
        return max(0, (shard_dir / shards.PROGRESS).read_bytes().count(b"\n") - 1)
    except OSError:
        return 0


def _kill_driver(recipe: Path, cluster: LocalRayCluster, shard_dir: Path, after: int) -> str:
    """`make shards` on Ray as a separate driver process, killed with SIGKILL once `after` shards are
    journaled; its output."""
    driver = subprocess.Popen([sys.executable, "-m", "pipelines.shards", "--config", str(recipe), "--no-progress",
                               "--executor", "ray"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while driver.poll() is None and _journaled(shard_dir) < after and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(driver.pid, signal.SIGKILL)
    output = driver.stdout.read()
    assert driver.wait() == -signal.SIGKILL, f"the driver ended before it was killed:\n{output}"
    cluster.wait_idle("write_shard")   # the dead driver's tasks are ended by Ray, not at once
    assert not (shard_dir / "manifest.json").exists()   # nothing looks complete
    return output


def stamps(directory: Path, pattern: str) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of files: unchanged stamps mean the file was not written again."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.glob(pattern)}


def test_driver_killed_then_rerun_resumes_to_the_same_bytes(on_cluster, local_reference, tmp_path):
    """kill -9 of the driver in the middle of `make shards` (many small shards), twice; the first rerun is on
    Ray, the second with the local executor: both resume from what the killed drivers finished."""
    small = {"shard_tokens": 700}
    expected = tmp_path / "expected"
    shutil.copytree(local_reference / "artifacts", expected / "artifacts")
    assert shards.main(["--config", str(recipe_in(expected, **small)), "--no-progress", "--force"]) == 0

    shutil.copytree(local_reference / "artifacts", tmp_path / "artifacts")
    shutil.rmtree(tmp_path / "artifacts" / NAME / "shards")
    recipe = recipe_in(tmp_path, **small)
    shard_dir = tmp_path / "artifacts" / NAME / "shards"
    _kill_driver(recipe, on_cluster, shard_dir, after=10)
    journaled = _journaled(shard_dir)
    spilled = stamps(shard_dir / ray_shards.SPILL_DIR, "r*.npz")
    written = stamps(shard_dir, "*_[0-9]*.npy")
    assert journaled >= 10 and spilled and written

    # The rerun on Ray, killed in its turn: it kept every encoded range and every journaled shard.
    output = _kill_driver(recipe, on_cluster, shard_dir, after=journaled + 10)
    assert f"shards: {len(spilled)} encoded range(s) kept from an interrupted run" in output
    needed = re.search(r"shards: 0 of (\d+) range\(s\) encoded in this run", output)   # all were, before the kill
    assert needed and 0 < int(needed.group(1)) <= len(spilled), output
    assert f"shards: resuming after {journaled} finished shard(s)" in output
    kept = sorted(written, key=lambda name: (not name.startswith("val"), name))[:journaled]   # journal order
    now = stamps(shard_dir, "*_[0-9]*.npy")
    assert all(now[name] == written[name] for name in kept)   # the very same files, not written again

    # The last rerun with the local executor: the same journal, so it resumes where the Ray driver stopped.
    journaled_now = _journaled(shard_dir)
    logs = []
    shards.run(load_recipe(recipe), progress_bar=False, log=logs.append, executor="local")
    assert any(line.startswith(f"shards: resuming after {journaled_now} finished shard(s)") for line in logs), logs
    assert digests(shard_dir) == digests(expected / "artifacts" / NAME / "shards")   # and no spill left behind


def test_data_driver_killed_then_rerun_fetches_only_what_was_left(on_cluster, tmp_path):
    """kill -9 of `make data`'s driver once the first input file is staged; the rerun fetches only the
    files that were not, and writes the local executor's files."""
    hub = hub_stand_in(tmp_path, files=6)
    fields = {"source": "hf", "dataset": str(hub), "id_field": "id", "rows_per_file": 100}
    for executor in ("local", "ray"):
        (tmp_path / executor).mkdir()
    data.run(load_recipe(write_recipe(tmp_path / "local", name="hubby", data=fields)), progress_bar=False, log=quiet)
    recipe = write_recipe(tmp_path / "ray", name="hubby", data=fields)
    raw = tmp_path / "ray" / "artifacts" / "hubby" / "raw"
    staged = raw / ray_data.STAGING_DIR
    driver = subprocess.Popen([sys.executable, "-m", "pipelines.data", "--config", str(recipe), "--no-progress",
                               "--executor", "ray"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "RAY_ADDRESS": on_cluster.address})
    deadline = time.monotonic() + 60
    while driver.poll() is None and not list(staged.glob("unit-*.json")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(driver.pid, signal.SIGKILL)
    assert driver.wait() == -signal.SIGKILL, driver.stdout.read()
    on_cluster.wait_idle("fetch_unit")   # a task of the dead driver may still finish its file meanwhile
    done = len(list(staged.glob("unit-*.json")))
    assert 0 < done < 6 and not (raw / "manifest.json").exists()

    logs = []
    data.run(load_recipe(recipe), progress_bar=False, log=logs.append, executor="ray")
    assert any(line.startswith(f"data: resuming: {done} of 6 unit(s) fetched") for line in logs), logs
    assert any(line.startswith(f"data: {6 - done} unit(s) fetched") for line in logs), logs
    assert digests(raw) == digests(tmp_path / "local" / "artifacts" / "hubby" / "raw")


def test_a_bad_record_found_by_a_task_is_one_error_line(on_cluster, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine", "id": 1}, {"text": 7, "id": 2}])
    recipe = write_recipe(tmp_path, name="bad", data={"source": "local", "paths": [str(bad)], "id_field": "id"})
    out = subprocess.run([sys.executable, "-m", "pipelines.data", "--config", str(recipe), "--no-progress"],
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RAY_ADDRESS": on_cluster.address, "EXECUTOR": "ray"})
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (f"error: {bad} row 1: field 'text' must be a string, got a int")
    assert "Traceback" not in out.stderr


def test_make_passes_the_executor_and_the_cluster_address(tmp_path):
    out = subprocess.run(["make", "-n", "shards", "EXECUTOR=ray", "RAY_ADDRESS=10.0.0.1:6379",
                          f"CONFIG={recipe_in(tmp_path)}"], cwd=REPO, capture_output=True, text=True, timeout=60)
    commands = [line for line in out.stdout.replace("\\\n", " ").splitlines() if "-m pipelines." in line]
    assert len(commands) == 3 and all("--executor 'ray'" in line for line in commands), out.stdout
    assert all("RAY_ADDRESS='10.0.0.1:6379'" in line for line in commands), out.stdout
