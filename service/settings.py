"""What the service serves and its limits: one frozen record that travels to the workers.

uvicorn's workers are fresh interpreters (multiprocessing spawn), so they cannot be handed a
loaded Tokenizer. The parent serialises ServeSettings into an environment variable, which the
spawned workers inherit; each one reads it back and loads the tokenizer itself, once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, NoReturn

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
            raise RuntimeError(f"{SETTINGS_ENV} is not set: start the service with `python -m service`")
        return cls(**json.loads(raw))


@dataclasses.dataclass(frozen=True)
class ServeSection:
    """The recipe's optional [serve] section (command-line flags override it)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = DEFAULT_WORKERS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    tokenizer: str = ""  # "" = the recipe's own tokenizer stage output

    def check(self, fail: Callable[[str], NoReturn]) -> None:
        if not 0 <= self.port < 65536:
            fail(f"key 'port' must be a TCP port (0-65535), got {self.port}")
        if self.workers < 1:
            fail(f"key 'workers' must be at least 1, got {self.workers}")


def recipe_serve_options(config: str) -> dict[str, Any]:
    """Options from a recipe: its [serve] section over the defaults, and by default the tokenizer
    its tokenizer stage wrote (artifacts/<recipe>/tokenizer/tokenizer.ljt.json)."""
    from contract.recipe import load_recipe, parse_section

    recipe = load_recipe(config)
    options = dataclasses.asdict(parse_section(ServeSection, recipe.section("serve"), section="serve",
                                               source=recipe.path))
    if not options["tokenizer"]:
        options["tokenizer"] = str(recipe.tokenizer_file)
    return options
