"""The shards stage's bookkeeping is O(1) per shard: one journal line appended per finished shard,
never a rewrite of everything so far (which made `shard_tokens=1000` on 10M tokens run for over ten
minutes). Measured as bytes the process writes, not as time; and a torn or garbled tail of the
journal costs only the shards it describes."""

from __future__ import annotations

from pathlib import Path

import pytest
from stage_helpers import copy_project, original_project, shard_bytes, stage_dir

from contract.recipe import load_recipe
from pipelines import shards


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return original_project(tmp_path_factory)


def bytes_written() -> int:
    """write() bytes of this process so far (Linux /proc/self/io `wchar`)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def bookkeeping_bytes_per_shard(recipe: Path, shard_tokens: int) -> float:
    """Bytes written beyond the files the stage publishes (shards, indexes, manifest), per shard."""
    r = load_recipe(recipe, {"shards.shard_tokens": str(shard_tokens)})
    before = bytes_written()
    manifest = shards.run(r, force=True, progress_bar=False, log=lambda *a: None)
    written = bytes_written() - before
    out = r.stage_dir("shards")
    published = sum(p.stat().st_size for p in out.iterdir() if p.name != shards.PROGRESS)
    n_shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    return (written - published) / n_shards


def test_progress_bookkeeping_grows_linearly_with_the_number_of_shards(original, tmp_path):
    recipe = copy_project(original, tmp_path)
    few = bookkeeping_bytes_per_shard(recipe, 8000)     # ~50 shards
    many = bookkeeping_bytes_per_shard(recipe, 1000)    # ~420 shards: 8x as many
    # one journal line (~300 bytes) per shard, whatever their number; rewriting the whole record after
    # every shard costs ~150 bytes x the shards so far: 8x more per shard for 8x the shards
    assert many < 1000 and many < 1.5 * few, (few, many)


def test_a_torn_or_garbled_journal_tail_costs_only_its_shards(original, tmp_path, capsys):
    recipe = copy_project(original, tmp_path)
    out = stage_dir(tmp_path, "shards")
    journal = out / shards.PROGRESS
    lines = journal.read_bytes().split(b"\n")[:-1]
    n = len(lines) - 1   # journaled shards (the first line is the header)
    (out / "manifest.json").unlink()   # as after a kill before the manifest
    journal.write_bytes(b"\n".join(lines[:-1]) + b"\n" + lines[-1][: len(lines[-1]) // 2])   # a torn last line
    assert shards.main(["--config", str(recipe), "--no-progress"]) == 0
    assert f"resuming after {n - 1} finished shard(s)" in capsys.readouterr().out
    assert shard_bytes(tmp_path) == shard_bytes(original)

    lines = journal.read_bytes().split(b"\n")[:-1]
    lines[5] = b"\0" * len(lines[5])   # what a power cut can leave of an unsynced block
    journal.write_bytes(b"\n".join(lines) + b"\n")
    (out / "manifest.json").unlink()
    assert shards.main(["--config", str(recipe), "--no-progress"]) == 0
    assert "resuming after 4 finished shard(s)" in capsys.readouterr().out
    assert shard_bytes(tmp_path) == shard_bytes(original)
    assert len(journal.read_bytes().split(b"\n")) - 2 == n   # rewritten whole again
