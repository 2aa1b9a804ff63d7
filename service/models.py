"""The models behind the OpenAI-compatible API (service/openai_api.py): loaded once per worker process.

- The **chat model** (`--checkpoint`, or the recipe's `sft/` checkpoint with `--models`) answers
  POST /v1/chat/completions, and continues plain text on POST /v1/completions too.
- The **base model** (`--base-checkpoint`, or the recipe's `pretrain/` checkpoint) continues text on
  POST /v1/completions. It never learned the chat format, so chat requests naming it are refused.

Each is named after its recipe and checkpoint, `<recipe>/<stage>` (`demo/sft`, `demo/pretrain`), which is
what a client passes as `model`. Each comes with the tokenizer its ids belong to: the one `make sft` saves
beside its checkpoint, else the tokenizer the service serves. Either way that tokenizer's fingerprint must
be the one the checkpoint records, or the same ids would mean other text; a mismatch stops the service at
startup, naming both files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.recipe import TOKENIZER_FILE

from .budget import BoundedEncoder
from .settings import ServeSettings

CHECKPOINT_NAME = "ckpt.pt"
OWNED_BY = "llm-journey"
# Below this many parameters one decoding step is a chain of microsecond matmuls, and handing each one to
# a second thread costs more than it saves (the same rule as `make chat`, pipelines/chat.py).
SMALL_MODEL_PARAMS = 10_000_000


@dataclass
class ServedModel:
    """One model as the API serves it: the GPT, its tokenizer, and what GET /v1/models says about it."""

    id: str
    kind: str                           # "chat" (fine-tuned: chat + completions) | "base" (completions only)
    model: Any                          # model.gpt.GPT, in eval mode, on `device`
    tokenizer: Any                      # tokenizer.Tokenizer whose fingerprint the checkpoint records
    chat: Any                           # tokenizer.chat.ChatFormat for a chat model, else None
    encoder: BoundedEncoder             # the tokenizer under the service's per-request limits
    checkpoint: Path
    step: int
    created: int                        # the checkpoint file's modification time (Unix seconds)
    device: str
    autocast: Callable[[], contextlib.AbstractContextManager]

    @property
    def context_length(self) -> int:
        return self.model.config.block_size

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids that have no text of their own: never part of a completion's text."""
        return frozenset(self.tokenizer.special_tokens.values())

    def describe(self) -> dict[str, Any]:
        """The model object of GET /v1/models: OpenAI's four fields, then ours."""
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": OWNED_BY,
            "kind": self.kind,
            "endpoints": ["/v1/chat/completions", "/v1/completions"] if self.kind == "chat" else ["/v1/completions"],
            "checkpoint": str(self.checkpoint),
            "step": self.step,
            "context_length": self.context_length,
            "parameters": self.model.num_params(),
            "tokenizer": self.tokenizer.name,
            "tokenizer_fingerprint": self.tokenizer.fingerprint,
        }


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint given as its file or its run directory -> the file."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def model_id(checkpoint: Path, recipe_name: str | None = None) -> str:
    """`<recipe>/<stage>` from artifacts/<recipe>/<stage>/ckpt.pt (the recipe's own name when known, since
    out_dir may put a run elsewhere); a checkpoint file with another name adds it: `demo/sft:step-200`."""
    stage = checkpoint.parent.name
    recipe = recipe_name or checkpoint.parent.parent.name or "model"
    suffix = "" if checkpoint.name == CHECKPOINT_NAME else f":{checkpoint.stem}"
    return f"{recipe}/{stage}{suffix}"


def resolve_device(name: str) -> str:
    """"auto" = CUDA when torch sees a GPU; "cuda" without one is a one-line error, not a CUDA traceback."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} but torch sees no CUDA device; use --device cpu (or auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    return name


def auto_threads(n_params: int, workers: int) -> int:
    """torch CPU threads per worker process: 1 for a small model (see SMALL_MODEL_PARAMS), else the cores
    shared out between the workers (each worker runs one forward pass at a time, see service/generation.py)."""
    if n_params < SMALL_MODEL_PARAMS:
        return 1
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def set_torch_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _tokenizer_for(checkpoint: Path, fingerprint: str, served_tokenizer, served_path: str | None):
    """The tokenizer saved beside the checkpoint (what `make sft` leaves), else the served one; it must be
    the tokenizer the checkpoint was trained with (by fingerprint)."""
    from tokenizer import Tokenizer

    beside = checkpoint.parent / TOKENIZER_FILE
    tok, source = (Tokenizer.load(beside), str(beside)) if beside.is_file() else \
        (served_tokenizer, served_path or "the served tokenizer")
    if tok.fingerprint != fingerprint:
        raise ValueError(
            f"{checkpoint} was trained with tokenizer {fingerprint[:16]}..., but {source} is "
            f"{tok.fingerprint[:16]}...: the same ids would mean other text. Serve the tokenizer the model was "
            "trained with (--tokenizer PATH), or put it beside the checkpoint as " + TOKENIZER_FILE)
    return tok


def load_served_model(kind: str, path: str | Path, settings: ServeSettings, served_tokenizer) -> ServedModel:
    """Load one checkpoint for serving. Errors (missing or corrupt file, tokenizer mismatch, a chat model
    whose tokenizer lacks the chat tokens) are ValueError / OSError with the file named."""
    import torch

    from tokenizer.chat import ChatFormat
    from train.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = checkpoint_file(path)
    if not ckpt.is_file():
        what = "fine-tuned model (make sft)" if kind == "chat" else "base model (make pretrain)"
        raise FileNotFoundError(f"no checkpoint at {ckpt}: train the {what} first, or name another checkpoint")
    state = load_checkpoint(ckpt)
    tok = _tokenizer_for(ckpt, state["tokenizer_fingerprint"], served_tokenizer, settings.tokenizer_path)
    device = resolve_device(settings.device)
    model = model_from_checkpoint(state, device)
    step = int(state["step"])
    del state  # the weights now live in the model; the optimizer state is not needed
    if model.config.vocab_size > tok.n_vocab:
        raise ValueError(f"{ckpt}: the model has {model.config.vocab_size} ids, its tokenizer only {tok.n_vocab}: "
                         "it could sample ids without text")
    chat = ChatFormat(tok) if kind == "chat" else None  # MissingChatTokensError (a ValueError) says how to fix it
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.startswith("cuda") \
        else contextlib.nullcontext
    encoder = BoundedEncoder(tok, max_run_chars=settings.max_run_chars, max_tokens=settings.max_tokens)
    return ServedModel(id=model_id(ckpt, settings.recipe_name), kind=kind, model=model, tokenizer=tok, chat=chat,
                       encoder=encoder, checkpoint=ckpt, step=step, created=int(ckpt.stat().st_mtime),
                       device=device, autocast=autocast)


def load_served_models(settings: ServeSettings, served_tokenizer) -> list[ServedModel]:
    """The models `settings` name (chat first), or [] for a tokenizer-only service."""
    wanted = [("chat", settings.chat_checkpoint), ("base", settings.base_checkpoint)]
    models = [load_served_model(kind, path, settings, served_tokenizer) for kind, path in wanted if path]
    if len({m.id for m in models}) < len(models):
        raise ValueError(f"the chat and base checkpoints would both be named {models[0].id!r}: "
                         "put them in directories of different names")
    return models
