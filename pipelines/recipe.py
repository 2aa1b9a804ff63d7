"""Recipes: one TOML file in configs/ describes a whole run, from raw text to trained model.

A recipe names its artifacts directory (`artifacts/<name>/`) and holds one section per stage.
This module validates the sections of the data stages (`data`, `tokenizer`, `shards`) against
the defaults below: an unknown key or a value of the wrong type is an error that names the key
and the file, because a typo in a recipe (`shard_token = ...`) must not silently fall back to a
default and cost hours. The sections of later stages (`model`, `train`, `eval`, `wandb`,
`serve`) are passed through untouched; their stages validate them.

Overrides (`make shards SET="shards.workers=1"` or `load_recipe(path, {"shards.workers": "1"})`)
are parsed as TOML values, so `2` is an int, `true` a bool and `"x"`/`x` a string, then checked
like keys from the file. This module stays import-light (stdlib only): training imports it.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Defaults double as the schema: the type of each default is the type a value must have
# (an int is accepted where a float is expected). Lists hold strings.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "source": "python-docs",      # python-docs | hf | local
        "dataset": "",                # hf: hub name ("HuggingFaceFW/fineweb-edu") or a local hub-like directory
        "config": "",                 # hf: dataset configuration ("sample-10BT")
        "split": "train",             # hf: split to stream
        "paths": [],                  # local: files or glob patterns (parquet, jsonl/json, txt)
        "text_field": "text",
        "id_field": "",               # "" = make ids "<file or source>:<row>"
        "metadata_fields": [],        # extra columns copied next to text and id
        "max_documents": 0,           # 0 = no limit
        "max_characters": 0,          # 0 = no limit
        "rows_per_file": 100_000,     # documents per raw parquet file: the unit of resume
    },
    "tokenizer": {
        "vocab_size": 4096,
        "max_characters": 10_000_000,
        "max_chars_per_doc": 10_000,
        "heldout_documents": 200,
        "special_tokens": ["<|endoftext|>"],
        "gpt2_encoder_json": "",
        "gpt2_vocab_bpe": "",
        "workers": 0,
    },
    "shards": {
        "format": "npy",              # npy | arrow
        "shard_tokens": 100_000_000,
        "val_fraction": 0.0,
        "val_documents": 0,
        "workers": 0,                 # 0 = os.cpu_count()
    },
}
# Sections owned by later stages: accepted here, validated there.
PASSTHROUGH_SECTIONS = {"model", "train", "eval", "wandb", "serve"}
TOP_LEVEL_DEFAULTS: dict[str, Any] = {"name": "", "description": "", "artifacts_root": "artifacts"}
CHOICES = {
    ("data", "source"): {"python-docs", "hf", "local"},
    ("shards", "format"): {"npy", "arrow"},
}


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


@dataclass
class Recipe:
    name: str
    path: Path
    raw: dict[str, Any]
    artifacts_root: Path = field(default=Path("artifacts"))

    @property
    def artifacts_dir(self) -> Path:
        return self.artifacts_root / self.name

    def stage_dir(self, stage: str) -> Path:
        """artifacts/<name>/<stage>: raw, tokenizer, shards, ..."""
        return self.artifacts_dir / stage

    def section(self, name: str) -> dict[str, Any]:
        """A copy of one section ({} if absent); data-stage sections come with defaults filled in."""
        return copy.deepcopy(self.raw.get(name, {}))


def _parse_override_value(text: str) -> Any:
    """`2` -> 2, `0.5` -> 0.5, `true` -> True, `["a"]` -> ["a"], anything else -> the string itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _check_type(where: str, key: str, value: Any, default: Any) -> Any:
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise RecipeError(f"{where}: key {key!r} must be an integer, got {value!r}")
    if not isinstance(value, expected):
        raise RecipeError(f"{where}: key {key!r} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    if expected is list and not all(isinstance(v, str) for v in value):
        raise RecipeError(f"{where}: key {key!r} must be a list of strings, got {value!r}")
    return value


def _apply_override(raw: dict[str, Any], dotted: str, text: str, path: Path) -> None:
    parts = dotted.split(".")
    if len(parts) > 2 or not all(parts):
        raise RecipeError(f"override {dotted!r} for {path}: use 'section.key=value' or 'key=value'")
    value = _parse_override_value(text)
    if len(parts) == 1:
        raw[parts[0]] = value
    else:
        section = raw.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise RecipeError(f"override {dotted!r} for {path}: {parts[0]!r} is not a section")
        section[parts[1]] = value


def _validate(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            if key in STAGE_DEFAULTS:
                out[key] = _validate_section(key, value, path)
            elif key in PASSTHROUGH_SECTIONS:
                out[key] = value
            else:
                known = sorted(set(STAGE_DEFAULTS) | PASSTHROUGH_SECTIONS)
                raise RecipeError(f"{path}: unknown section [{key}] (known sections: {', '.join(known)})")
        elif key in TOP_LEVEL_DEFAULTS:
            out[key] = _check_type(str(path), key, value, TOP_LEVEL_DEFAULTS[key])
        else:
            raise RecipeError(f"{path}: unknown top-level key {key!r} (known: {', '.join(TOP_LEVEL_DEFAULTS)})")
    for section in STAGE_DEFAULTS:  # every data stage sees a full section, defaults filled in
        out.setdefault(section, _validate_section(section, {}, path))
    return out


def _validate_section(name: str, values: dict[str, Any], path: Path) -> dict[str, Any]:
    defaults = STAGE_DEFAULTS[name]
    where = f"{path} [{name}]"
    for key in values:
        if key not in defaults:
            raise RecipeError(f"{where}: unknown key {key!r} (known keys: {', '.join(defaults)})")
    section = copy.deepcopy(defaults)
    for key, value in values.items():
        section[key] = _check_type(where, key, value, defaults[key])
        choices = CHOICES.get((name, key))
        if choices and section[key] not in choices:
            raise RecipeError(f"{where}: key {key!r} must be one of {sorted(choices)}, got {section[key]!r}")
    for key, value in section.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise RecipeError(f"{where}: key {key!r} must not be negative, got {value!r}")
    if name == "shards":
        if section["shard_tokens"] < 1:
            raise RecipeError(f"{where}: key 'shard_tokens' must be at least 1")
        if section["shard_tokens"] > 2**31 - 1:  # arrow list offsets are int32, one record batch per shard
            raise RecipeError(f"{where}: key 'shard_tokens' must be below 2**31")
        if section["val_fraction"] >= 1:
            raise RecipeError(f"{where}: key 'val_fraction' must be below 1")
        if section["val_fraction"] and section["val_documents"]:
            raise RecipeError(f"{where}: set either 'val_fraction' or 'val_documents', not both")
    if name == "tokenizer" and section["vocab_size"] < 256 + len(section["special_tokens"]):
        raise RecipeError(f"{where}: key 'vocab_size' must be at least 256 + the number of special tokens")
    if name == "data" and section["rows_per_file"] < 1:
        raise RecipeError(f"{where}: key 'rows_per_file' must be at least 1")
    return section


def load_recipe(path: str | os.PathLike, overrides: dict[str, str] | None = None) -> Recipe:
    """Read, override and validate a recipe. Errors name the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"recipe {path} does not exist (recipes live in configs/, e.g. configs/demo.toml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"recipe {path} is not valid TOML: {exc}") from None
    for dotted, text in (overrides or {}).items():
        _apply_override(raw, dotted, text, path)
    raw = _validate(raw, path)
    name = raw.get("name") or path.stem
    if "/" in name or name in {".", ".."}:
        raise RecipeError(f"{path}: key 'name' must be a plain directory name, got {name!r}")
    raw["name"] = name
    return Recipe(name=name, path=path, raw=raw, artifacts_root=Path(raw.get("artifacts_root", "artifacts")))


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """['shards.workers=2', ...] (command line / Make's SET) -> {'shards.workers': '2'}."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in item.split():
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise RecipeError(f"override {part!r}: expected section.key=value")
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.recipe configs/demo.toml [--set k=v]`: print the resolved recipe as JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.config, parse_overrides(args.set))
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**recipe.raw, "artifacts_dir": str(recipe.artifacts_dir)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
