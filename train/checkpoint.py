"""Checkpoints: everything a run needs to continue exactly where it stopped, and nothing executable.

Contents (tensors, and dicts/lists/str/int/float/bool only, so `torch.load(weights_only=True)` reads them
and no pickle from disk can run code):
    format, step, model (state_dict), optimizer (state_dict), loader (position of the data stream),
    rng (torch CPU/CUDA generator states of every rank), model_config, config (the validated recipe
    sections), tokenizer_fingerprint, shards_manifest (path), metrics (last values, for humans)

Writes are atomic (tokenizer/atomic_write.py): torch.save to a temporary file in the same directory, fsync,
then os.replace, so a crash while saving leaves the previous checkpoint intact (a half-written checkpoint
is worse than none).

Reads trust nothing but the tensors: weights_only=True refuses code, and `check_weights_match_config`
refuses a model_config that its own tensors contradict before any model is built from it (a file whose
config says n_layer = 10**6 would otherwise hang `make eval` and exhaust memory in the HF export).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokenizer.atomic_write import atomic_open

FORMAT = "llm-journey-checkpoint/1"
CHECKPOINT_NAME = "ckpt.pt"


class CheckpointError(ValueError):
    pass


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    with atomic_open(path, "wb", durable=True) as f:
        torch.save({"format": FORMAT, **state}, f)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Read and check a checkpoint. mmap=True maps the tensors instead of reading them (for a quick look
    at `step` or the config of a checkpoint of many GB)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (train first: make pretrain)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated file, not a zip archive, or a pickle asking for arbitrary classes
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this project (expected format {FORMAT!r})")
    missing = [k for k in ("step", "model", "model_config", "tokenizer_fingerprint") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    check_weights_match_config(state, path)
    return state


def check_weights_match_config(state: dict[str, Any], source: str | Path) -> None:
    """Refuse a checkpoint whose model_config its tensors contradict, naming the file and the key.

    First the few facts the tensors prove (model.hf.weights_contradict_config: layers, widths, vocabulary,
    context), so that the model built next is bounded by what the file holds; then every tensor's shape
    against that model built on the "meta" device (shapes only, no memory), so that load_state_dict
    can no longer fail with a size mismatch halfway through."""
    from model import GPT, GPTConfig
    from model.hf import weights_contradict_config

    try:
        config = GPTConfig(**state["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: model_config is not a GPT config ({exc})") from None
    weights = state["model"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{source}: 'model' is not a state dict of tensors")
    problem = weights_contradict_config(config, weights, vocab_rows=config.padded_vocab_size)
    if problem:
        raise CheckpointError(f"{source}: model_config does not match the weights: {problem}")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
    for key in sorted(set(expected) | set(weights)):
        held = tuple(weights[key].shape) if key in weights else None
        if held != expected.get(key):
            raise CheckpointError(f"{source}: model_config does not match the weights: {key}: the config "
                                  f"implies {expected.get(key) or 'no such tensor'}, the file holds "
                                  f"{held or 'none'}")


def check_same_tokenizer(state: dict[str, Any], tokenizer_fingerprint: str, source: str | Path) -> None:
    """Refuse a checkpoint whose token ids came from another tokenizer than the shards' (by fingerprint)."""
    if state["tokenizer_fingerprint"] != tokenizer_fingerprint:
        raise CheckpointError(
            f"{source}: tokenizer fingerprint mismatch: the checkpoint was trained on tokens of tokenizer "
            f"{state['tokenizer_fingerprint'][:16]}..., the shards now come from {tokenizer_fingerprint[:16]}...; "
            "the same ids would mean different text")


def check_resume_compatible(state: dict[str, Any], *, model_config: dict[str, Any], tokenizer_fingerprint: str,
                            source: str | Path) -> None:
    """Refuse to continue a run on other data or with another architecture: clear error, before any step."""
    check_same_tokenizer(state, tokenizer_fingerprint, source)
    saved = dict(state["model_config"])
    diffs = {k: (saved.get(k), v) for k, v in model_config.items() if saved.get(k) != v}
    if diffs:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs recipe {b!r}" for k, (a, b) in diffs.items())
        raise CheckpointError(f"{source}: cannot resume with a different model config ({detail})")


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["torch_cuda"])


def model_from_checkpoint(state: dict[str, Any], device: str | torch.device = "cpu"):
    """Rebuild the GPT a checkpoint holds (config + weights), in eval mode."""
    from model import GPT, GPTConfig

    model = GPT(GPTConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()
