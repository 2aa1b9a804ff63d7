"""make data survives kill -9: a real SIGKILL of a process running the stage, at several points.

The stage runs in a forked child (the modules are already imported, so a run costs milliseconds,
not the seconds a fresh interpreter needs to import `datasets`); the parent kills it with SIGKILL
when the output directory reaches a chosen state, or the child kills itself at an exact point
(a file renamed but not yet recorded). Then a rerun must end with the very bytes of an
uninterrupted run, leave no temporary file, and not rewrite any file finished before a crash.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
from pipeline_helpers import file_bytes, write_parquet, write_recipe

from contract.recipe import load_recipe
from pipelines import data

WORDS = "the of and to in is that for it as with was on be by this are from at or an which".split()


def quiet(*_args, **_kwargs):
    pass


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))), "id": f"d{i:06d}",
             "score": i / 7} for i in range(n)]
    for i in range(3, n, 97):   # empty documents are skipped and counted: resume must count them once
        rows[i]["text"] = " \n "
    return rows


def progress_files(raw_dir: Path) -> list[str]:
    return [entry["output"]["path"] for entry in data.recorded_files(raw_dir)]


def identities(raw_dir: Path, names: list[str]) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) per file: a rewritten file (temporary + rename) gets a new inode."""
    return {n: ((raw_dir / n).stat().st_ino, (raw_dir / n).stat().st_mtime_ns) for n in names}


def _child(config: str, die_at: str | None) -> None:
    if die_at == "first file":
        # Die right after the first file of this run got its final name, before the progress
        # record lists it: the narrowest window, a finished-looking file not yet known to be finished.
        real_close = data._PartWriter.close

        def close_then_die(self):
            real_close(self)
            os.kill(os.getpid(), signal.SIGKILL)

        data._PartWriter.close = close_then_die
    elif die_at == "manifest":
        # Die after the manifest is written, before the progress record is removed.
        real_write = data.mf.write_manifest

        def write_then_die(stage_dir, manifest):
            real_write(stage_dir, manifest)
            os.kill(os.getpid(), signal.SIGKILL)

        data.mf.write_manifest = write_then_die
    os._exit(data.main(["--config", config, "--no-progress"]))


def run_and_kill(config: Path, raw_dir: Path, until=None, die_at: str | None = None,
                 complete: bool = False) -> list[str]:
    """Run the stage in a child process and SIGKILL it when `until(raw_dir)` holds, or let it kill
    itself at `die_at`; returns the files recorded as finished at that moment."""
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(str(config), die_at))
    proc.start()
    deadline = time.monotonic() + 60
    if until is not None:
        while proc.is_alive() and not until(raw_dir) and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL, f"the stage ended before it was killed (exit code {proc.exitcode})"
    assert (raw_dir / "manifest.json").exists() == complete   # a killed stage never looks complete
    return progress_files(raw_dir)


def count_part_writes(monkeypatch) -> list[str]:
    written: list[str] = []
    real_close = data._PartWriter.close

    def counting_close(self):
        real_close(self)
        written.append(self.path.name)

    monkeypatch.setattr(data._PartWriter, "close", counting_close)
    return written


def assert_clean(raw_dir: Path) -> None:
    leftovers = [p.name for p in raw_dir.iterdir() if p.suffix == ".tmp" or p.name == data.PROGRESS]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def kill_resume_compare(tmp_path, monkeypatch, fields, kills, expected_files, before_rerun=None):
    """Reference run, then the kill sequence, then a rerun: same bytes, finished files untouched."""
    for sub in ("ref", "crash"):
        (tmp_path / sub).mkdir()
    ref = load_recipe(write_recipe(tmp_path / "ref", data=fields))
    reference = data.run(ref, progress_bar=False, log=quiet)
    assert len(reference["outputs"]) == expected_files

    config = write_recipe(tmp_path / "crash", data=fields)   # same name and config: same manifest bytes
    raw_dir = load_recipe(config).stage_dir("raw")
    finished: dict[str, tuple[int, int]] = {}
    for kill in kills:
        recorded = run_and_kill(config, raw_dir, **kill)
        assert identities(raw_dir, list(finished)) == finished    # earlier finished files were kept as they were
        assert len(recorded) >= len(finished)
        finished = identities(raw_dir, recorded)
    assert 0 < len(finished) < expected_files
    if before_rerun is not None:
        before_rerun(raw_dir)

    written = count_part_writes(monkeypatch)
    logs: list[str] = []
    data.run(load_recipe(config), progress_bar=False, log=logs.append)
    assert f"resuming after {len(finished)} finished file(s)" in logs[0]
    assert identities(raw_dir, list(finished)) == finished
    assert not set(written) & set(finished)                       # never fetched or written again
    assert len(written) == expected_files - len(finished)
    assert file_bytes(raw_dir, ("*.parquet", "manifest.json")) == file_bytes(ref.stage_dir("raw"),
                                                                             ("*.parquet", "manifest.json"))
    assert_clean(raw_dir)
    return raw_dir


def test_local_source_kill9_then_resume_gives_the_same_bytes(tmp_path, monkeypatch):
    write_parquet(tmp_path / "in.parquet", synthetic_rows(4800), row_group_size=1000)
    fields = {"source": "local", "paths": [str(tmp_path / "in.parquet")], "id_field": "id",
              "metadata_fields": ["score"], "rows_per_file": 400}     # 12 files of 2 row groups (256 + 144)

    def mid_file(raw_dir: Path) -> bool:   # several files done and the next one half written
        n = len(progress_files(raw_dir))
        return n >= 2 and (raw_dir / (data.PART_PATTERN.format(n) + ".tmp")).exists()

    kills = [{"until": lambda d: len(progress_files(d)) >= 1},   # as soon as the first file is finished
             {"until": mid_file},
             {"die_at": "first file"}]                          # renamed, not yet recorded
    kill_resume_compare(tmp_path, monkeypatch, fields, kills, expected_files=12)


def test_hub_stream_kill9_resumes_from_state_dict(tmp_path, monkeypatch):
    """The `hf` code path over a local directory laid out like a hub repo (3 parquet shards)."""
    hub = tmp_path / "hub"
    (hub / "data").mkdir(parents=True)
    rows = synthetic_rows(600, seed=1)
    for k in range(3):
        write_parquet(hub / "data" / f"train-{k:05d}-of-00003.parquet", rows[200 * k : 200 * (k + 1)])
    fields = {"source": "hf", "dataset": str(hub), "id_field": "id", "metadata_fields": ["score"],
              "rows_per_file": 70}   # files cross the hub's shard boundaries

    from pipelines.sources import hf

    resumed_from = []
    real_init = hf.HubStream.__init__

    def spy(self, *args, **kwargs):
        resumed_from.append(kwargs.get("resume_state"))
        real_init(self, *args, **kwargs)

    recorded = {}

    def remember_progress(raw_dir):
        recorded.update(data.recorded_files(raw_dir)[-1])

    kills = [{"until": lambda d: len(progress_files(d)) >= 3}, {"die_at": "first file"}]
    monkeypatch.setattr(hf.HubStream, "__init__", spy)   # the forked children inherit the spy harmlessly
    raw_dir = kill_resume_compare(tmp_path, monkeypatch, fields, kills, expected_files=9,
                                  before_rerun=remember_progress)
    # the rerun (the last stream opened) continued from the state_dict recorded with the last
    # finished file, past the first hub shard: no row was streamed twice (the bytes prove it)
    assert recorded["stream_state"] is not None and resumed_from[-1] == recorded["stream_state"]
    assert recorded["consumed"] > 200
    got = [r["id"] for p in sorted(raw_dir.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert got == [r["id"] for r in rows if r["text"].strip()]


def test_kill9_after_the_manifest_leaves_nothing_behind(tmp_path):
    write_parquet(tmp_path / "in.parquet", synthetic_rows(300))
    config = write_recipe(tmp_path, data={"source": "local", "paths": [str(tmp_path / "in.parquet")],
                                          "rows_per_file": 100})
    raw_dir = load_recipe(config).stage_dir("raw")
    run_and_kill(config, raw_dir, die_at="manifest", complete=True)
    assert (raw_dir / data.PROGRESS).exists()
    (raw_dir / "part-00003.parquet.tmp").write_bytes(b"PAR1 torn")   # as if killed while writing
    logs: list[str] = []
    manifest = data.run(load_recipe(config), progress_bar=False, log=logs.append)
    assert "up to date" in logs[0] and len(manifest["outputs"]) == 3
    assert_clean(raw_dir)
