"""Recipes: the shipped configs load, keys are validated (errors name key and file), overrides parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.recipe import RecipeError, load_recipe, parse_overrides

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("config", ["configs/demo.toml", "configs/fineweb-edu-10B.toml"])
def test_shipped_recipes_load(config):
    recipe = load_recipe(REPO / config)
    assert recipe.artifacts_dir == Path("artifacts") / recipe.name
    assert recipe.stage_dir("shards") == recipe.artifacts_dir / "shards"
    for section in ("data", "tokenizer", "shards"):
        assert recipe.section(section)  # defaults filled in


def test_fineweb_recipe_values():
    recipe = load_recipe(REPO / "configs/fineweb-edu-10B.toml")
    data = recipe.section("data")
    assert (data["source"], data["dataset"], data["config"]) == ("hf", "HuggingFaceFW/fineweb-edu", "sample-10BT")
    assert recipe.section("tokenizer")["vocab_size"] == 50257
    assert recipe.section("shards")["shard_tokens"] == 100_000_000


def test_demo_is_offline():
    assert load_recipe(REPO / "configs/demo.toml").section("data")["source"] == "python-docs"


def test_section_is_a_copy(tmp_path):
    recipe = load_recipe(REPO / "configs/demo.toml")
    recipe.section("shards")["workers"] = 99
    assert recipe.section("shards")["workers"] != 99


def _write(tmp_path, text):
    p = tmp_path / "r.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_unknown_key_names_key_and_file(tmp_path):
    p = _write(tmp_path, 'name = "x"\n[shards]\nshard_token = 5\n')
    with pytest.raises(RecipeError, match=r"r\.toml.*\[shards\].*'shard_token'"):
        load_recipe(p)


def test_unknown_section_and_top_level_key(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown section \[bogus\]"):
        load_recipe(_write(tmp_path, "[bogus]\na = 1\n"))
    with pytest.raises(RecipeError, match=r"unknown top-level key 'nmae'"):
        load_recipe(_write(tmp_path, 'nmae = "x"\n'))


def test_passthrough_sections_are_kept_unvalidated(tmp_path):
    recipe = load_recipe(_write(tmp_path, '[model]\nanything = 1\n[train]\nlr = 0.1\n'))
    assert recipe.section("model") == {"anything": 1}
    assert recipe.section("train") == {"lr": 0.1}
    assert recipe.section("serve") == {}
    assert recipe.name == "r"  # no name: the file's stem


@pytest.mark.parametrize(
    "body, match",
    [
        ('[shards]\nshard_tokens = "big"\n', r"'shard_tokens' must be int"),
        ("[shards]\nformat = \"bin\"\n", r"'format' must be one of"),
        ("[data]\nsource = \"web\"\n", r"'source' must be one of"),
        ("[shards]\nval_fraction = 0.1\nval_documents = 5\n", r"either 'val_fraction' or 'val_documents'"),
        ("[shards]\nworkers = -1\n", r"'workers' must not be negative"),
        ("[tokenizer]\nvocab_size = 100\n", r"'vocab_size' must be at least 256"),
        ("[data]\npaths = [1, 2]\n", r"'paths' must be a list of strings"),
        ("[shards]\nworkers = true\n", r"'workers' must be int, got bool True"),
        ("name = 'a/b'\n", r"plain directory name"),
        ("[shards\n", r"not valid TOML"),
    ],
)
def test_invalid_values(tmp_path, body, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(_write(tmp_path, body))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match=r"does not exist"):
        load_recipe(tmp_path / "nope.toml")


def test_overrides_are_parsed_as_toml_values(tmp_path):
    p = _write(tmp_path, 'name = "x"\n')
    overrides = parse_overrides(["shards.workers=3 shards.format=arrow", "tokenizer.special_tokens=['<|a|>']",
                                 "shards.val_fraction=0.25", f"artifacts_root={tmp_path}"])
    recipe = load_recipe(p, overrides)
    shards = recipe.section("shards")
    assert shards["workers"] == 3 and shards["format"] == "arrow" and shards["val_fraction"] == 0.25
    assert recipe.section("tokenizer")["special_tokens"] == ["<|a|>"]
    assert recipe.artifacts_dir == tmp_path / "x"
    recipe = load_recipe(p, {"model.n_layer": "4"})  # other stages' sections accept overrides too
    assert recipe.section("model") == {"n_layer": 4}


def test_bad_overrides(tmp_path):
    p = _write(tmp_path, "")
    with pytest.raises(RecipeError, match=r"expected section\.key=value"):
        parse_overrides(["shards.workers"])
    with pytest.raises(RecipeError, match=r"'shard_tokens' must be int"):
        load_recipe(p, {"shards.shard_tokens": "lots"})
    with pytest.raises(RecipeError, match=r"unknown key 'wrkers'"):
        load_recipe(p, {"shards.wrkers": "1"})
    with pytest.raises(RecipeError, match=r"section\.key=value"):
        load_recipe(p, {"a.b.c": "1"})


def test_one_override_string_splits_between_assignments_not_inside_values(tmp_path):
    """Make's SET is one string: spaces separate assignments, except inside a value's quotes or brackets."""
    items = parse_overrides(['data.paths=["/data/my file.jsonl", \'b c\'] shards.workers=2',
                             'data.text_field="body text" train.note=it\'s'])
    assert items == {"data.paths": '["/data/my file.jsonl", \'b c\']', "shards.workers": "2",
                     "data.text_field": '"body text"', "train.note": "it's"}
    recipe = load_recipe(_write(tmp_path, 'name = "x"\n'), items)
    assert recipe.section("data")["paths"] == ["/data/my file.jsonl", "b c"]
    assert recipe.section("data")["text_field"] == "body text" and recipe.section("train") == {"note": "it's"}
