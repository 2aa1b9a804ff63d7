"""What the service serves and its limits: one frozen record that travels to the workers.

uvicorn's workers are fresh interpreters (multiprocessing spawn), so they cannot be handed a
loaded Tokenizer. The parent serialises ServeSettings into an environment variable, which the
spawned workers inherit; each one reads it back and loads the tokenizer itself, once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"  # loopback: the service has no authentication
DEFAULT_PORT = 8000
DEFAULT_WORKERS = 2
DEFAULT_MAX_BODY_BYTES = 8 * 2**20
DEFAULT_MAX_BATCH = 1024
SETTINGS_ENV = "LJT_SERVE_SETTINGS"  # JSON-encoded ServeSettings handed from the parent to each worker


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    tokenizer_path: str | None = None  # our own tokenizer.ljt.json
    gpt2_encoder_json: str | None = None  # or GPT-2's encoder.json + vocab.bpe
    gpt2_vocab_bpe: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH

    def __post_init__(self) -> None:
        gpt2 = (self.gpt2_encoder_json, self.gpt2_vocab_bpe)
        if (self.tokenizer_path is None) == (gpt2 == (None, None)):
            raise ValueError("serve settings: give exactly one of tokenizer_path or the GPT-2 file pair")
        if (None in gpt2) and gpt2 != (None, None):
            raise ValueError("serve settings: the GPT-2 tokenizer needs both encoder.json and vocab.bpe")
        if self.max_body_bytes < 1024:
            raise ValueError(f"serve settings: max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.max_batch < 1:
            raise ValueError(f"serve settings: max_batch must be >= 1, got {self.max_batch}")

    def load_tokenizer(self):
        """Load the tokenizer these settings name; a missing file is a clear error naming it."""
        from tokenizer import Tokenizer

        paths = [self.tokenizer_path] if self.tokenizer_path else [self.gpt2_encoder_json, self.gpt2_vocab_bpe]
        for p in paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"tokenizer file not found: {p}")
        if self.tokenizer_path:
            return Tokenizer.load(self.tokenizer_path)
        return Tokenizer.from_gpt2_files(self.gpt2_encoder_json, self.gpt2_vocab_bpe)

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> ServeSettings:
        raw = (os.environ if environ is None else environ).get(SETTINGS_ENV)
        if not raw:
            raise RuntimeError(f"{SETTINGS_ENV} is not set: start the service with `python -m tokenizer.serve`")
        return cls(**json.loads(raw))


# The recipe's optional [serve] section: these keys, these types (CLI flags override them).
RECIPE_SERVE_DEFAULTS: dict[str, Any] = {
    "host": DEFAULT_HOST,
    "port": DEFAULT_PORT,
    "workers": DEFAULT_WORKERS,
    "max_body_bytes": DEFAULT_MAX_BODY_BYTES,
    "max_batch": DEFAULT_MAX_BATCH,
    "tokenizer": "",  # "" = the recipe's own tokenizer stage output
}


def recipe_serve_options(config: str) -> dict[str, Any]:
    """Options from a recipe: its [serve] section over the defaults, and by default the tokenizer
    its tokenizer stage wrote (artifacts/<recipe>/tokenizer/tokenizer.ljt.json)."""
    from pipelines.recipe import load_recipe

    recipe = load_recipe(config)
    section = recipe.section("serve")
    for key, value in section.items():
        if key not in RECIPE_SERVE_DEFAULTS:
            raise ValueError(f"{config} [serve]: unknown key {key!r} (known keys: {', '.join(RECIPE_SERVE_DEFAULTS)})")
        expected = type(RECIPE_SERVE_DEFAULTS[key])
        if type(value) is not expected:
            raise ValueError(f"{config} [serve]: key {key!r} must be {expected.__name__}, got {value!r}")
    options = {**RECIPE_SERVE_DEFAULTS, **section}
    if not options["tokenizer"]:
        options["tokenizer"] = str(recipe.stage_dir("tokenizer") / "tokenizer.ljt.json")
    return options
