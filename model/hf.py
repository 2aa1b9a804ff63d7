"""Move GPT-2 weights between Hugging Face transformers checkpoints and our GPT (model/gpt.py).

Both implement the same network with the same parameter names (transformer.h.0.attn.c_attn.weight, ...), so
the conversion is small, and each step has a reason:
- OpenAI wrote GPT-2 with "Conv1D" layers that store their weight as (in, out); nn.Linear stores (out, in).
  The four matmul weights (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are transposed on the way in and out.
- Our embedding has padded_vocab_size rows (a multiple of 64, for fast matmuls); HF's has exactly vocab_size.
  Import zero-fills the padding rows; export slices them off.
- The output head is tied to wte. HF checkpoints may or may not carry a `lm_head.weight` copy; if present it
  must equal wte (we refuse an untied head rather than silently dropping it). Export omits it and sets
  tie_word_embeddings, so transformers re-ties on load.
- Old checkpoints carry the causal-mask buffers attn.bias / attn.masked_bias: constants, skipped.

Security: a checkpoint file may come from anywhere. We read safetensors (no code execution possible) and load
legacy pytorch_model.bin files with torch.load(weights_only=True), which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from model.gpt import GPT, LAYER_NORM_EPS, GPTConfig
from tokenizer.atomic_write import atomic_path, write_text_atomic

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")  # note: ".attn.bias", not ".attn.c_attn.bias"
# GPT-2's released widths -> head counts: lets a bare state dict of an OpenAI size load without a config.
KNOWN_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # both are GELU's tanh approximation
LAYER_KEY = re.compile(r"transformer\.h\.(\d+)\.")


def weights_contradict_config(config: GPTConfig, weights: Mapping[str, torch.Tensor], vocab_rows: int) -> str | None:
    """The first field of `config` that the tensors contradict ("key: config says X, the tensors Y"), or None.

    A config is a few numbers anyone can edit; the tensors are what the file really holds. GPT(config)
    allocates what the config says, so a config claiming n_layer = 10**6 beside a 2-layer state dict would
    spend minutes and all the memory building blocks before load_state_dict could notice anything. The
    facts the tensors prove cheaply (layers from the key names, widths from two shapes) are compared
    first, which bounds the model to be built by the size of the file. Shared by both readers of weights
    from elsewhere: training checkpoints (vocab_rows = the padded vocabulary) and transformers
    directories (vocab_rows = the real one). n_head is not in any shape; GPTConfig checks it divides n_embd.
    """
    def shape(key: str) -> tuple[int, ...] | None:
        t = weights.get(key)
        return tuple(t.shape) if isinstance(t, torch.Tensor) else None

    wte, wpe = shape("transformer.wte.weight"), shape("transformer.wpe.weight")
    for key, s in (("transformer.wte.weight", wte), ("transformer.wpe.weight", wpe)):
        if s is None or len(s) != 2:
            return f"{key}: missing or not a matrix ({s}); not GPT-2 weights"
    layers = sorted({int(m.group(1)) for k in weights if (m := LAYER_KEY.match(k))})
    if layers != list(range(len(layers))):
        return f"n_layer: the layer keys transformer.h.<i> are not numbered 0..n-1 (found {layers[:8]}...)"
    facts = {
        "n_layer": (config.n_layer, len(layers)),
        "n_embd": (config.n_embd, wte[1]),
        "vocab_size": (vocab_rows, wte[0]),
        "block_size": (config.block_size, wpe[0]),
        "bias": (config.bias, "transformer.ln_f.bias" in weights),
    }
    for key, (claimed, held) in facts.items():
        if claimed != held:
            rows = " (embedding rows)" if key == "vocab_size" else ""
            return f"{key}: config says {claimed}{rows}, the tensors hold {held}"
    return None


# ---------------------------------------------------------------------------------------------- reading


def _read_config_json(path: Path) -> GPTConfig:
    try:
        hf = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the transformers config: {e}") from e
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{path}: model_type {hf.get('model_type')!r} is not 'gpt2'")
    # Variants of GPT2Config that our GPT does not implement: refuse them instead of computing something else.
    checks = {
        "activation_function": (hf.get("activation_function", "gelu_new") in TANH_GELUS, "gelu_new"),
        "scale_attn_weights": (hf.get("scale_attn_weights", True) is True, True),
        "scale_attn_by_inverse_layer_idx": (hf.get("scale_attn_by_inverse_layer_idx", False) is False, False),
        "add_cross_attention": (hf.get("add_cross_attention", False) is False, False),
        "n_inner": (hf.get("n_inner") in (None, 4 * hf.get("n_embd", 768)), "null or 4*n_embd"),
        "layer_norm_epsilon": (abs(hf.get("layer_norm_epsilon", LAYER_NORM_EPS) - LAYER_NORM_EPS) < 1e-12, 1e-5),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", True) is True, True),
    }
    for field, (ok, supported) in checks.items():
        if not ok:
            raise ValueError(f"{path}: unsupported {field}={hf.get(field)!r} (this GPT supports {supported!r})")
    try:
        return GPTConfig(
            block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
            vocab_size=hf.get("vocab_size", 50257),
            n_layer=hf.get("n_layer", 12),
            n_head=hf.get("n_head", 12),
            n_embd=hf.get("n_embd", 768),
            dropout=0.0,
            bias=True,
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def _load_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix == ".bin":
        try:
            return torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
        except Exception as e:
            raise ValueError(f"{path}: not a plain tensor checkpoint (weights_only load failed): {e}") from e
    raise ValueError(f"{path}: expected a .safetensors or .bin weight file")


def _load_checkpoint_dir(directory: Path) -> dict[str, torch.Tensor]:
    """Weights of a save_pretrained directory: single or sharded (index.json), safetensors preferred."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (directory / single).is_file():
            return _load_weight_file(directory / single)
        if (directory / index).is_file():
            try:
                weight_map = json.loads((directory / index).read_text())["weight_map"]
            except (OSError, json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{directory / index}: not a valid shard index: {e}") from e
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(_load_weight_file(directory / shard))
            return state
    raise FileNotFoundError(
        f"{directory}: no model.safetensors, pytorch_model.bin or their .index.json: not a transformers checkpoint"
    )


def _normalise_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF GPT-2 state dict (GPT2LMHeadModel or bare GPT2Model keys) -> our key names, without buffers/head."""
    out: dict[str, torch.Tensor] = {}
    lm_head = None
    for key, tensor in state.items():
        if key == "lm_head.weight":
            lm_head = tensor
            continue
        if key.endswith(MASK_BUFFERS):
            continue  # the causal mask constants of old transformers versions
        name = key if key.startswith("transformer.") else f"transformer.{key}"
        out[name] = tensor
    wte = out.get("transformer.wte.weight")
    if lm_head is not None and wte is not None and not (lm_head.shape == wte.shape and torch.equal(lm_head, wte)):
        raise ValueError("checkpoint has an lm_head.weight that differs from wte: untied heads are not supported")
    return out


def _infer_config(state: Mapping[str, torch.Tensor]) -> GPTConfig:
    try:
        vocab_size, n_embd = state["transformer.wte.weight"].shape
        block_size = state["transformer.wpe.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"state dict has no {e.args[0]}: not a GPT-2 checkpoint") from e
    layers = {int(m.group(1)) for k in state if (m := re.match(r"transformer\.h\.(\d+)\.", k))}
    if n_embd not in KNOWN_HEADS:
        raise ValueError(
            f"cannot infer n_head for n_embd={n_embd} from a state dict: pass config=GPTConfig(...) "
            "or load the checkpoint directory with its config.json"
        )
    return GPTConfig(
        block_size=block_size,
        vocab_size=vocab_size,
        n_layer=len(layers),
        n_head=KNOWN_HEADS[n_embd],
        n_embd=n_embd,
        bias="transformer.ln_f.bias" in state,
    )


# What a GPT-2 snapshot needs from the hub: the config, the weights and the tokenizer files (GPT-2's
# repository also holds TensorFlow, Flax, ONNX, Rust and TFLite copies of the weights: gigabytes not needed).
HUB_FILES = ["config.json", "generation_config.json", "vocab.json", "merges.txt", "tokenizer.json",
             "tokenizer_config.json", "tokenizer.ljt.json"]
HUB_SAFETENSORS = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
HUB_BIN = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]


def resolve_hf_checkpoint(source: str | os.PathLike) -> Path:
    """A local directory or weight file for `source`, as transformers' from_pretrained resolves names.

    An existing path is used as it is. Otherwise a hub id ("openai-community/gpt2", or "gpt2", "gpt2-medium",
    ... for OpenAI's sizes) is fetched with huggingface_hub's snapshot_download: from the HF cache when it is
    there (offline with HF_HUB_OFFLINE=1), else downloaded into it once (safetensors weights, else .bin).
    A name that is neither raises FileNotFoundError (tokenizer.hub.HubUnavailableError when the hub could
    not provide it, with the reason and what to do)."""
    from tokenizer.hub import hub_snapshot, looks_like_repo_id

    path = Path(source).expanduser()
    if path.exists() or not looks_like_repo_id(str(source)):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such checkpoint directory or weight file")
        return path
    folder = hub_snapshot(str(source), HUB_FILES + HUB_SAFETENSORS, what="GPT-2 weights")
    if not any(folder.glob("*.safetensors")):  # an older repository: weights only as pytorch_model.bin
        folder = hub_snapshot(str(source), HUB_FILES + HUB_BIN, what="GPT-2 weights")
    return folder


def load_hf_gpt2(
    source: str | os.PathLike | Mapping[str, torch.Tensor], config: GPTConfig | None = None, dropout: float = 0.0
) -> GPT:
    """A GPT with the weights of a transformers GPT-2 checkpoint.

    source: a save_pretrained directory (config.json + model.safetensors or pytorch_model.bin, possibly sharded),
    a single weight file (its directory's config.json is used when present), a hub id such as
    "openai-community/gpt2" or "gpt2" (through the HF cache: resolve_hf_checkpoint), or a state dict.
    config: overrides the config.json / shape-inferred architecture. Returns an fp32 model in eval mode.
    """
    if isinstance(source, Mapping):
        raw = dict(source)
        config_path = None
    else:
        path = resolve_hf_checkpoint(source)
        if path.is_dir():
            raw, config_path = _load_checkpoint_dir(path), path / "config.json"
        else:
            raw, config_path = _load_weight_file(path), path.parent / "config.json"
    state = _normalise_state_dict(raw)
    config_source = "config=" + repr(config)
    if config is None:
        if config_path and config_path.is_file():
            config, config_source = _read_config_json(config_path), str(config_path)
        else:
            config = _infer_config(state)
    if dropout:
        config = GPTConfig(**{**config.to_dict(), "dropout": dropout})
    # Before GPT(config): an edited config.json must not make us allocate a model the file does not hold.
    problem = weights_contradict_config(config, state, vocab_rows=config.vocab_size)
    if problem:
        raise ValueError(f"{config_source}: {problem}; the config does not describe these weights")

    model = GPT(config)
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match {config}: missing {missing[:8]}, unexpected {unexpected[:8]}")
    with torch.no_grad():
        for name, target in ours.items():
            tensor = state[name]
            if name.endswith(CONV1D_WEIGHTS):
                tensor = tensor.t()  # Conv1D (in, out) -> Linear (out, in)
            if name == "transformer.wte.weight":
                if tensor.shape != (config.vocab_size, config.n_embd):
                    raise ValueError(f"{name}: shape {tuple(tensor.shape)} != {(config.vocab_size, config.n_embd)}")
                target[: config.vocab_size].copy_(tensor)
                target[config.vocab_size :].zero_()  # padding rows: inert
                continue
            if tensor.shape != target.shape:
                raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != model shape {tuple(target.shape)}")
            target.copy_(tensor)
    return model.eval()


def widen_embedding(wte: torch.Tensor, vocab: int, new_vocab: int, rows: int) -> torch.Tensor:
    """`wte` (its first `vocab` rows real) as an embedding of `rows` rows for a vocabulary of `new_vocab` ids.

    The ids the weights never saw (vocab..new_vocab-1: say the chat tokens after GPT-2's <|endoftext|>)
    start as the mean embedding: as input they look like an average token, and through the tied head their
    logit is an average one -- not 0, which would tower over GPT-2's large negative logits and make the
    untrained tokens the most likely. The padding rows after new_vocab stay 0 (never sampled)."""
    if not vocab <= new_vocab <= rows:
        raise ValueError(f"cannot widen an embedding of {vocab} tokens to {new_vocab} tokens in {rows} rows")
    out = torch.zeros(rows, wte.shape[1], dtype=wte.dtype)
    out[:vocab] = wte[:vocab]
    out[vocab:new_vocab] = wte[:vocab].mean(dim=0)
    return out


# ---------------------------------------------------------------------------------------------- writing


def hf_config_dict(config: GPTConfig, eos_token_id: int | None = None, dtype: torch.dtype = torch.float32) -> dict:
    """transformers GPT2Config fields describing `config` (eos/bos default to the last id, our tokenizers' eot)."""
    eot = config.vocab_size - 1 if eos_token_id is None else eos_token_id
    dtype_name = str(dtype).removeprefix("torch.")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "torch_dtype": dtype_name,  # transformers 4.x
        "dtype": dtype_name,  # transformers 5.x
    }


def hf_state_dict(model: GPT, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Our weights under GPT2LMHeadModel names: Conv1D layout, unpadded vocabulary, no lm_head (tied)."""
    config = model.config
    out = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        if name == "transformer.wte.weight":
            tensor = tensor[: config.vocab_size]
        out[name] = tensor.to(device="cpu", dtype=dtype or tensor.dtype).contiguous().clone()
    return out


def export_hf(
    model: GPT, directory: str | os.PathLike, eos_token_id: int | None = None, dtype: torch.dtype | None = None
) -> Path:
    """Write config.json + model.safetensors that transformers.GPT2LMHeadModel.from_pretrained(directory) loads.

    dtype: e.g. torch.bfloat16 to halve the file (default: the model's dtype). Pair it with
    `Tokenizer.save_hf(directory)` to make the directory usable with AutoTokenizer too: a tokenizer_config.json
    found in the directory gets `model_max_length` = the model's block_size, so `tok(text, truncation=True)`
    never yields more positions than the model has (128 for the demo model, not GPT-2's 1024).
    """
    from safetensors.torch import save_file

    from tokenizer.formats import set_hf_model_max_length

    config = model.config
    if not config.bias:
        raise ValueError("transformers' GPT-2 always has biases: a bias=False model cannot be exported as GPT-2")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = hf_state_dict(model, dtype)
    hf_config = hf_config_dict(config, eos_token_id, tensors["transformer.wte.weight"].dtype)
    # weights first, config last: a directory with a config.json is complete
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    set_hf_model_max_length(directory, config.block_size)
    write_text_atomic(directory / "config.json", json.dumps(hf_config, indent=2) + "\n")
    return directory
