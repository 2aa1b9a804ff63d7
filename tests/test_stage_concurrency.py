"""Two runs of one stage at once: the second is refused at once (status 2, one line naming the
holder), and the first finishes with intact output. Two real processes; the first is frozen with
SIGSTOP while it holds the directory, so the overlap does not depend on timing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from stage_helpers import REPO, copy_project, error_line, original_project, python_m, stage_dir

from contract.shard_format import ShardReader
from contract.stage_lock import lock_path_for


def _wait_until_locked(proc: subprocess.Popen, lock) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the first run ended before it could be caught holding the lock"
        try:
            if lock.read_text().strip() == str(proc.pid):
                return
        except OSError:
            pass
        time.sleep(0.001)
    raise AssertionError("the first run never took the lock")


def test_a_second_run_of_a_stage_is_refused_and_the_first_is_intact(tmp_path_factory, tmp_path):
    recipe = copy_project(original_project(tmp_path_factory), tmp_path)
    out = stage_dir(tmp_path, "shards")
    lock = lock_path_for(out)
    lock.unlink()   # so that only the first run's pid in it says "locked"
    first = subprocess.Popen([sys.executable, "-m", "pipelines.shards", "--config", str(recipe), "--no-progress",
                              "--force", "--set", "shards.shard_tokens=2000"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_locked(first, lock)
        os.kill(first.pid, signal.SIGSTOP)   # frozen mid-run, holding the directory
        second = python_m("pipelines.shards", "--config", str(recipe), "--no-progress", "--force",
                          "--set", "shards.shard_tokens=3000")
        assert second.returncode == 2
        assert error_line(second.stderr) == (
            f"error: {out}: another `shards` run (pid {first.pid}) is writing this directory; "
            "wait for it to finish or stop it, then run again")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    reader = ShardReader(out, verify=True)   # every sha256 matches: nothing of the second run in there
    assert reader.manifest["shard_tokens"] == 2000
    assert sum(reader.num_documents(s) for s in reader.splits) == 300
    assert sorted(p.name for p in out.glob("*.npy")) == sorted(e["path"] for s in reader.splits
                                                               for e in reader.shards(s))
    # once the first is done, the second may run
    again = python_m("pipelines.shards", "--config", str(recipe), "--no-progress", "--set", "shards.shard_tokens=3000")
    assert again.returncode == 0, again.stderr
    assert ShardReader(out, verify=True).manifest["shard_tokens"] == 3000
