"""A data stage whose recipe or inputs changed says what changed before it rebuilds
(`shards.format: arrow -> npy`), instead of replacing its outputs without a word; a key that cannot
change the output (`shards.workers`) still leaves the stage up to date."""

from __future__ import annotations

import pytest
from stage_helpers import copy_project, original_project, python_m, recipe_in, stage_dir

from contract import manifest as mf
from contract.recipe import load_recipe
from pipelines import data, learn_tokenizer, shards


@pytest.fixture
def project(tmp_path, tmp_path_factory):
    copy_project(original_project(tmp_path_factory), tmp_path)
    return tmp_path


def run(stage, root, **overrides) -> list[str]:
    lines: list[str] = []
    stage.run(load_recipe(recipe_in(root), {k: str(v) for k, v in overrides.items()}), progress_bar=False,
              log=lines.append)
    return lines


def test_shards_say_which_format_they_leave(project):
    shard_dir = stage_dir(project, "shards")
    first = run(shards, project, **{"shards.format": "arrow"})
    assert first[0] == f"shards: the recipe changed (shards.format: npy -> arrow): rebuilding {shard_dir}"
    assert list(shard_dir.glob("*.arrow")) and not list(shard_dir.glob("*.npy"))
    back = python_m("pipelines.shards", "--config", str(recipe_in(project)), "--no-progress")   # a plain rerun
    assert back.returncode == 0, back.stderr
    assert back.stdout.splitlines()[0] == (f"shards: the recipe changed (shards.format: arrow -> npy): "
                                           f"rebuilding {shard_dir}")


def test_workers_alone_do_not_rebuild(project):
    before = mf.sha256_file(stage_dir(project, "shards") / mf.MANIFEST)
    lines = run(shards, project, **{"shards.workers": 2})
    assert lines == [f"shards: {stage_dir(project, 'shards')} is up to date (FORCE=1 to redo)"]
    assert mf.sha256_file(stage_dir(project, "shards") / mf.MANIFEST) == before


def test_every_data_stage_names_the_key_and_both_values(project):
    lines = run(data, project, **{"data.max_documents": 250})
    raw = stage_dir(project, "raw")
    assert lines[0] == f"data: the recipe changed (data.max_documents: 300 -> 250): rebuilding {raw}"
    # the tokenizer's recipe is unchanged, its input is not: named by key, digests shortened
    lines = run(learn_tokenizer, project, **{"data.max_documents": 250})
    assert lines[0].startswith("tokenizer: its inputs changed (raw_manifest_sha256: ") and " -> " in lines[0]
    assert lines[0].endswith("...): retraining")
    lines = run(learn_tokenizer, project, **{"data.max_documents": 250, "tokenizer.vocab_size": 320})
    assert lines[0] == "tokenizer: the recipe changed (tokenizer.vocab_size: 300 -> 320): retraining"


def test_describe_changes_spells_values_so_they_can_be_told_apart():
    old = {"format": "npy", "paths": ["a b"], "id_field": "", "nested": {"k": 1}, "gone": True}
    new = {"format": "arrow", "paths": ["a b", "c"], "id_field": "id", "nested": {"k": 2}, "new": 0.5}
    assert mf.describe_changes(old, new, "data") == [
        "data.format: npy -> arrow", 'data.id_field: "" -> id', "data.nested.k: 1 -> 2",
        'data.paths: ["a b"] -> ["a b", "c"]', "data.new: (absent) -> 0.5", "data.gone: true -> (absent)"]
