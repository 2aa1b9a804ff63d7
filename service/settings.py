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
DEFAULT_ARTIFACTS_DIR = "artifacts"  # where the pages look for recipes (service/pages.py)
DEFAULT_PORT = 8000
DEFAULT_WORKERS = 2
DEFAULT_MAX_BODY_BYTES = 8 * 2**20
DEFAULT_MAX_BATCH = 1024
SETTINGS_ENV = "LJT_SERVE_SETTINGS"  # JSON-encoded ServeSettings handed from the parent to each worker


@dataclasses.dataclass(frozen=True)
class ServeLimits:
    """What one request may cost a worker. Every limit is a setting (flag, recipe [serve] key) and is
    published in GET /v1/info under `limits`, so clients can size their requests before sending them.

    Bytes and counts are checked before any work is done where they can be (body size, batch size,
    runs); the token and decoded-size limits while the work runs, so a refused request stops early.
    Together they bound what a request can hold in memory; max_cpu_seconds bounds its time.
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # 413 body_too_large
    max_batch: int = DEFAULT_MAX_BATCH  # texts / id lists per request; 422 invalid_request
    # Ids an encode or count may produce, or a decode may take (all texts together); 413 too_many_tokens.
    # English runs ~4 bytes per token, so 8 MiB of it is ~2 M tokens; text of one token per byte (a
    # whitespace run, rare scripts) can reach this before the body limit.
    max_tokens: int = 4 * 2**20
    # UTF-8 bytes a decode may produce (all id lists together); 413 decoded_too_large. One id can stand for
    # up to 128 bytes (GPT-2), so a body of ids alone could otherwise decode to ~20x its size.
    max_decoded_bytes: int = 32 * 2**20
    # Consecutive whitespace or consecutive non-whitespace characters a text may hold; 413 run_too_long.
    # BPE merges within one such run; a long run costs ~300 bytes of memory per byte (see service/budget.py).
    max_run_chars: int = 64 * 1024
    # CPU time one request may spend encoding or decoding (its worker thread's clock, so a busy server
    # does not make a request "too expensive"); 413 too_expensive.
    max_cpu_seconds: float = 10.0
    # Seconds from the start of a request's body until its last byte; 408 body_timeout.
    body_timeout: float = 10.0
    # After SIGTERM: how long requests already in progress may take to finish; the rest get 503.
    shutdown_timeout: float = 5.0

    def problems(self) -> list[str]:
        """What is wrong with these values (empty when they are usable)."""
        out = []
        if self.max_body_bytes < 1024:
            out.append(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        for name in ("max_batch", "max_tokens", "max_decoded_bytes", "max_run_chars"):
            if getattr(self, name) < 1:
                out.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_cpu_seconds", "body_timeout"):
            if not getattr(self, name) > 0:
                out.append(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if not self.shutdown_timeout >= 0:
            out.append(f"shutdown_timeout must be >= 0 seconds, got {self.shutdown_timeout}")
        return out

    def limits(self) -> dict[str, int | float]:
        """The limits alone (GET /v1/info `limits`), also when called on a subclass with more fields."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ServeLimits)}


LIMIT_KEYS = tuple(f.name for f in dataclasses.fields(ServeLimits))


@dataclasses.dataclass(frozen=True)
class ServeSettings(ServeLimits):
    tokenizer_path: str | None = None  # our own tokenizer.ljt.json
    gpt2_encoder_json: str | None = None  # or GPT-2's encoder.json + vocab.bpe
    gpt2_vocab_bpe: str | None = None
    # Models for the OpenAI-compatible API (service/models.py); none = a tokenizer-only service.
    chat_checkpoint: str | None = None  # a fine-tuned checkpoint: /v1/chat/completions, /v1/completions, /chat
    base_checkpoint: str | None = None  # a pretrained checkpoint: /v1/completions
    recipe_name: str | None = None  # names the models `<recipe>/<stage>`; None = from the checkpoint's path
    device: str = "auto"  # auto (CUDA when torch sees one) | cpu | cuda[:N]
    threads: int = 0  # torch CPU threads per worker process; 0 = torch's default
    # The artifacts directory the pages browse (recipes, shards, tokenizer files); None: ./artifacts.
    artifacts_dir: str | None = None

    def __post_init__(self) -> None:
        gpt2 = (self.gpt2_encoder_json, self.gpt2_vocab_bpe)
        if (self.tokenizer_path is None) == (gpt2 == (None, None)):
            raise ValueError("serve settings: give exactly one of tokenizer_path or the GPT-2 file pair")
        if (None in gpt2) and gpt2 != (None, None):
            raise ValueError("serve settings: the GPT-2 tokenizer needs both encoder.json and vocab.bpe")
        problems = self.problems()
        if self.threads < 0:
            problems.append(f"threads must be >= 0, got {self.threads}")
        if problems:
            raise ValueError("serve settings: " + "; ".join(problems))

    @property
    def serves_models(self) -> bool:
        return bool(self.chat_checkpoint or self.base_checkpoint)

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
class ServeSection(ServeLimits):
    """The recipe's optional [serve] section: every limit of ServeLimits plus where to listen and what to
    serve (command-line flags override it)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = DEFAULT_WORKERS
    tokenizer: str = ""  # "" = the recipe's own tokenizer stage output

    def check(self, fail: Callable[[str], NoReturn]) -> None:
        if not 0 <= self.port < 65536:
            fail(f"key 'port' must be a TCP port (0-65535), got {self.port}")
        if self.workers < 1:
            fail(f"key 'workers' must be at least 1, got {self.workers}")
        for problem in self.problems():
            fail(f"key {problem}")


def recipe_serve_options(config: str) -> dict[str, Any]:
    """Options from a recipe: its [serve] section over the defaults, and by default the tokenizer
    its tokenizer stage wrote (artifacts/<recipe>/tokenizer/tokenizer.ljt.json). Also the recipe's name
    and where its models are (`python -m service --models`): the fine-tuned checkpoint in `[sft] out_dir`
    (default artifacts/<recipe>/sft/) and the pretrained one in `[train] out_dir` (artifacts/<recipe>/pretrain/)."""
    from contract.recipe import load_recipe, parse_section

    recipe = load_recipe(config)
    options = dataclasses.asdict(parse_section(ServeSection, recipe.section("serve"), section="serve",
                                               source=recipe.path))
    if not options["tokenizer"]:
        options["tokenizer"] = str(recipe.tokenizer_file)
    options["recipe_name"] = recipe.name
    for key, section, stage in (("chat_checkpoint", "sft", "sft"), ("base_checkpoint", "train", "pretrain")):
        out_dir = recipe.section(section).get("out_dir") or recipe.stage_dir(stage)
        options[key] = str(Path(out_dir) / "ckpt.pt")
    options["artifacts_dir"] = str(recipe.artifacts_root)   # what the pages browse (service/pages.py)
    return options
