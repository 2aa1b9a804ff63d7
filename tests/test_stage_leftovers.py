"""What a kill -9 leaves in a stage directory (`*.tmp` files, a half-written `hf.tmp/`) is removed
when the stage next starts, whichever way it then goes (up to date, resume, rebuild); and the
bookkeeping beside the stage directories (locks, verified stamps) never shows up inside them."""

from __future__ import annotations

import pytest
from stage_helpers import copy_project, original_project, stage_dir

from contract import manifest as mf
from pipelines import data, learn_tokenizer, shards

STAGES = {"raw": data, "tokenizer": learn_tokenizer, "shards": shards}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return original_project(tmp_path_factory)


def plant_leftovers(directory) -> list:
    planted = [directory / "manifest.json.tmp", directory / "part-00009.parquet.tmp", directory / "x.npy.tmp"]
    for p in planted:
        p.write_bytes(b"torn")
    if directory.name == "tokenizer":   # save_hf writes a whole directory under a temporary name
        (directory / "hf.tmp").mkdir()
        (directory / "hf.tmp" / "tokenizer.json").write_bytes(b"{")
        (directory / "hf" / "tokenizer.json.tmp").write_bytes(b"{")
        planted += [directory / "hf.tmp", directory / "hf" / "tokenizer.json.tmp"]
    return planted


def listing(directory) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


@pytest.mark.parametrize("stage", ["raw", "tokenizer", "shards"])
@pytest.mark.parametrize("then", ["up to date", "resumed or redone"])
def test_a_stage_removes_the_leftovers_of_a_killed_run_when_it_starts(original, tmp_path, capsys, stage, then):
    recipe = copy_project(original, tmp_path)
    directory = stage_dir(tmp_path, stage)
    if then != "up to date":   # as after a kill before the manifest: the stage must run again
        (directory / "manifest.json").unlink()
    planted = plant_leftovers(directory)
    assert STAGES[stage].main(["--config", str(recipe), "--no-progress"]) == 0
    assert ("is up to date" in capsys.readouterr().out) == (then == "up to date")
    assert not [p for p in planted if p.exists()]
    assert not list(directory.rglob("*.tmp"))


def test_the_bookkeeping_beside_the_stage_directories_stays_out_of_them(original):
    art = original / "artifacts" / "mini"
    assert {".raw.lock", ".tokenizer.lock", ".shards.lock"} <= {p.name for p in art.iterdir()}
    for stage in STAGES:
        directory = stage_dir(original, stage)
        manifest = mf.read_manifest(directory)
        expected = sorted([mf.MANIFEST, *(o["path"] for o in manifest["outputs"])]
                          + ([shards.PROGRESS] if stage == "shards" else []))
        assert listing(directory) == expected
