"""Recipes: one TOML file in configs/ describes a whole run, from raw text to trained model.

A recipe names its artifacts directory (`artifacts/<name>/`) and holds one section per stage. Every
section, whichever stage owns it, is validated the same way (`parse_section`): its schema is a frozen
dataclass whose fields are the keys, whose annotations are the types and whose defaults are the
defaults; `CHOICES` lists the allowed values of a key and `check` the constraints between values.
An unknown key or a value of the wrong type is an error that names the key and the file, because a
typo in a recipe (`shard_token = ...`) must not silently fall back to a default and cost hours.

This module owns the schemas of the data stages (`data`, `tokenizer`, `shards`) and checks them when
the recipe is loaded. The sections of later stages are validated by their owners with the same
function when they are read: `model`, `train`, `eval`, `wandb` by train/config.py, `sft` by
train/sft_config.py, `serve` by service/settings.py.

Overrides (`make shards SET="shards.workers=1"` or `load_recipe(path, {"shards.workers": "1"})`)
are parsed as TOML values, so `2` is an int, `true` a bool and `"x"`/`x` a string, then checked
like keys from the file. This module stays import-light (stdlib only): training imports it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TOKENIZER_FILE = "tokenizer.ljt.json"   # the tokenizer stage's output, in our own format


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


# ------------------------------------------------------------------------------ one way to validate
Section = TypeVar("Section")


def parse_section(schema: type[Section], values: Any, *, section: str, source: str | os.PathLike) -> Section:
    """Check one recipe section against its schema (a dataclass) and return the schema's instance.

    Every key must be a field; every value must have the field's type (an int is accepted where a float
    is expected, a bool never where an int is; lists hold strings; `X | None` means "X, or leave it out":
    TOML has no null). Then `CHOICES` and the schema's `check(fail)` run on the filled-in instance.
    """
    where = f"{source} [{section}]"
    if not isinstance(values, Mapping):
        raise RecipeError(f"{where}: must be a table of keys, got {values!r}")
    types_ = typing.get_type_hints(schema)  # the annotations as types, also under `from __future__ import annotations`
    known = [f.name for f in dataclasses.fields(schema) if f.init]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise RecipeError(f"{where}: unknown key {key!r} (known keys: {', '.join(sorted(known))})")
        kwargs[key] = _typed_value(where, key, value, types_[key])
    instance = schema(**kwargs)
    for key, allowed in getattr(schema, "CHOICES", {}).items():
        if getattr(instance, key) not in allowed:
            raise RecipeError(f"{where}: key {key!r} must be one of {'|'.join(map(str, allowed))}, "
                              f"got {getattr(instance, key)!r}")

    def fail(message: str) -> NoReturn:
        raise RecipeError(f"{where}: {message}")

    check: Callable[[Callable[[str], NoReturn]], None] | None = getattr(instance, "check", None)
    if check is not None:
        check(fail)
    return instance


def _typed_value(where: str, key: str, value: Any, expected: Any) -> Any:
    """`value` as a field of type `expected` holds it, or a RecipeError naming the key."""
    options = typing.get_args(expected) if typing.get_origin(expected) in (typing.Union, types.UnionType) else ()
    if options:  # `X | None`: the None only means "not given"
        expected = next(t for t in options if t is not type(None))
    origin = typing.get_origin(expected)
    if origin in (list, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RecipeError(f"{where}: key {key!r} must be a list of strings, got {value!r}")
        return list(value) if origin is list else tuple(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # `max_lr = 1` in TOML is an int
    # bool is a subclass of int in Python: `n_layer = true` must not pass as 1
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        raise RecipeError(f"{where}: key {key!r} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    return value


def no_negative_numbers(instance: Any, fail: Callable[[str], NoReturn]) -> None:
    """Counts, sizes and fractions are never negative: a check most sections share."""
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            fail(f"key {f.name!r} must not be negative, got {value!r}")


# ------------------------------------------------------------------------- the data stages' sections
@dataclass(frozen=True)
class DataSection:
    """[data]: where `make data` gets documents."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"source": ("python-docs", "hf", "local")}
    source: str = "python-docs"      # python-docs (embedded, offline) | hf | local
    dataset: str = ""                # hf: hub name ("HuggingFaceFW/fineweb-edu") or a local hub-like directory
    config: str = ""                 # hf: dataset configuration ("sample-10BT")
    split: str = "train"             # hf: split to stream
    paths: list[str] = field(default_factory=list)   # local: files or glob patterns (parquet, jsonl/json, txt)
    text_field: str = "text"
    id_field: str = ""               # "" = make ids "<file or source>:<row>"
    metadata_fields: list[str] = field(default_factory=list)   # extra columns copied next to text and id
    max_documents: int = 0           # 0 = no limit
    max_characters: int = 0          # 0 = no limit
    rows_per_file: int = 100_000     # documents per raw parquet file: the unit of resume

    def check(self, fail: Callable[[str], NoReturn]) -> None:
        no_negative_numbers(self, fail)
        if self.rows_per_file < 1:
            fail("key 'rows_per_file' must be at least 1")


@dataclass(frozen=True)
class TokenizerSection:
    """[tokenizer]: what `make tokenizer` learns, from how much text -- or which tokenizer it takes instead."""

    # "train" (learn BPE merges on the raw documents), "gpt2" (GPT-2's r50k_base: the two files below when
    # given, else from the hub), or a path to a .ljt.json, .tiktoken or HF tokenizer.json file (or a directory
    # holding one). Not "train": the keys up to special_tokens do not apply (pipelines/learn_tokenizer.py).
    use: str = "train"
    vocab_size: int = 4096
    max_characters: int = 10_000_000
    max_chars_per_doc: int = 10_000
    heldout_documents: int = 200
    special_tokens: list[str] = field(default_factory=lambda: ["<|endoftext|>"])
    gpt2_encoder_json: str = ""
    gpt2_vocab_bpe: str = ""
    workers: int = 0

    def check(self, fail: Callable[[str], NoReturn]) -> None:
        no_negative_numbers(self, fail)
        if not self.use.strip():
            fail("key 'use' must be \"train\", \"gpt2\" or the path of a tokenizer file")
        if self.vocab_size < 256 + len(self.special_tokens):
            fail("key 'vocab_size' must be at least 256 + the number of special tokens")


@dataclass(frozen=True)
class ShardsSection:
    """[shards]: how `make shards` cuts the token stream."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"format": ("npy", "arrow")}
    format: str = "npy"              # npy | arrow
    shard_tokens: int = 100_000_000
    val_fraction: float = 0.0
    val_documents: int = 0
    workers: int = 0                 # 0 = os.cpu_count()

    def check(self, fail: Callable[[str], NoReturn]) -> None:
        no_negative_numbers(self, fail)
        if self.shard_tokens < 1:
            fail("key 'shard_tokens' must be at least 1")
        if self.shard_tokens > 2**31 - 1:  # arrow list offsets are int32, one record batch per shard
            fail("key 'shard_tokens' must be below 2**31")
        if self.val_fraction >= 1:
            fail("key 'val_fraction' must be below 1")
        if self.val_fraction and self.val_documents:
            fail("set either 'val_fraction' or 'val_documents', not both")


# Checked when the recipe is loaded: every data stage then sees a full section, defaults filled in.
DATA_STAGE_SECTIONS: dict[str, type] = {"data": DataSection, "tokenizer": TokenizerSection, "shards": ShardsSection}
# Sections owned by later stages: accepted here, validated by their owners (with parse_section).
LATER_STAGE_SECTIONS = {"model", "train", "eval", "wandb", "serve", "sft"}
TOP_LEVEL_KEYS: dict[str, Any] = {"name": "", "description": "", "artifacts_root": "artifacts"}


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

    @property
    def tokenizer_file(self) -> Path:
        """The tokenizer the tokenizer stage wrote and every later stage (shards, service) loads."""
        return self.stage_dir("tokenizer") / TOKENIZER_FILE

    def section(self, name: str) -> dict[str, Any]:
        """A copy of one section ({} if absent); data-stage sections come with defaults filled in."""
        return copy.deepcopy(self.raw.get(name, {}))


def _parse_override_value(text: str) -> Any:
    """`2` -> 2, `0.5` -> 0.5, `true` -> True, `["a"]` -> ["a"], anything else -> the string itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


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
            if key in DATA_STAGE_SECTIONS:
                out[key] = dataclasses.asdict(parse_section(DATA_STAGE_SECTIONS[key], value, section=key, source=path))
            elif key in LATER_STAGE_SECTIONS:
                out[key] = value
            else:
                known = sorted(set(DATA_STAGE_SECTIONS) | LATER_STAGE_SECTIONS)
                raise RecipeError(f"{path}: unknown section [{key}] (known sections: {', '.join(known)})")
        elif key in TOP_LEVEL_KEYS:
            if not isinstance(value, str):
                raise RecipeError(f"{path}: key {key!r} must be str, got {type(value).__name__} {value!r}")
            out[key] = value
        else:
            raise RecipeError(f"{path}: unknown top-level key {key!r} (known: {', '.join(TOP_LEVEL_KEYS)})")
    for key, schema in DATA_STAGE_SECTIONS.items():  # every data stage sees a full section, defaults filled in
        out.setdefault(key, dataclasses.asdict(parse_section(schema, {}, section=key, source=path)))
    return out


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


def split_overrides(text: str) -> list[str]:
    """Cut `a=1 b="x y" c=["p q", 'r']` into its assignments: at the spaces between them, never at a
    space inside a value's quotes or brackets. So Make's SET can hold TOML values with spaces:

        make shards SET='data.paths=["/data/my file.jsonl"] shards.workers=1'
    """
    items: list[str] = []
    current: list[str] = []
    depth, quote, escaped = 0, "", False
    for ch in text:
        if quote:   # inside "..." or '...': everything belongs to the value; \" does not end a "..."
            current.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch.isspace() and depth == 0:
            if current:
                items.append("".join(current))
                current = []
        else:
            # a quote opens a string only where a TOML value may start (an apostrophe inside a bare word is text)
            opens = ch in "\"'" and (not current or current[-1] in "=[{," or current[-1].isspace())
            current.append(ch)
            if opens:
                quote = ch
            elif ch in "[{":
                depth += 1
            elif ch in "]}":
                depth = max(0, depth - 1)
    if current:
        items.append("".join(current))
    return items


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """['shards.workers=2 shards.format=arrow', ...] (command line / Make's SET) -> {'shards.workers': '2', ...}.

    Each item may hold several assignments separated by spaces (see split_overrides)."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in split_overrides(item):
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise RecipeError(f"override {part!r}: expected section.key=value")
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m contract.recipe configs/demo.toml [--set k=v]`: print the resolved recipe as JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m contract.recipe", description=main.__doc__)
    parser.add_argument("config", help="recipe TOML, e.g. configs/demo.toml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, as make's SET does (repeatable)")
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
