"""Hugging Face interop from the command line: `make export-hf`, and sampling from any GPT-2 directory.

    python -m pipelines.hf export artifacts/demo/pretrain/ckpt.pt exported/ --tokenizer .../tokenizer.ljt.json
    python -m pipelines.hf sample ~/models/gpt2 --prompt "Hello, I'm a language model,"
    python -m pipelines.hf sample gpt2               # a hub id: through the HF cache (model/hf.py)
    python -m pipelines.hf check  ~/models/gpt2      # our logits vs transformers' own implementation

The weight conversion itself is model/hf.py (a library: GPT <-> transformers state dicts); training
checkpoints are read through train/checkpoint.py, the one reader of that format. This module only wires
them to files and flags.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from model.hf import export_hf, load_hf_gpt2, resolve_hf_checkpoint
from pipelines.sample import at_least
from pipelines.stage_cli import add_common_flags, command_parser, run_reported
from tokenizer import Tokenizer
from train.checkpoint import load_checkpoint, model_from_checkpoint


def load_directory_tokenizer(directory: Path) -> Tokenizer:
    """The tokenizer that ships with a model directory: ours (tokenizer.ljt.json, written by `export`)
    or GPT-2's vocab.json + merges.txt (the files of every transformers GPT-2 directory; same format as
    OpenAI's encoder.json + vocab.bpe)."""
    if (directory / "tokenizer.ljt.json").is_file():
        return Tokenizer.load(directory / "tokenizer.ljt.json")
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return Tokenizer.from_gpt2_files(directory / "vocab.json", directory / "merges.txt")
    raise FileNotFoundError(f"{directory}: no tokenizer.ljt.json and no vocab.json + merges.txt to decode with")


def export_checkpoint(checkpoint: Path, out: Path, tokenizer_path: Path | None, dtype: torch.dtype | None) -> None:
    """A training checkpoint -> a directory that transformers' GPT2LMHeadModel and AutoTokenizer load."""
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state)
    eot = None
    if tokenizer_path is not None:
        tok = Tokenizer.load(tokenizer_path)
        if tok.n_vocab > model.config.vocab_size:
            raise ValueError(f"{tokenizer_path}: {tok.n_vocab} tokens do not fit the model's {model.config.vocab_size}")
        eot = tok.eot_id
        out.mkdir(parents=True, exist_ok=True)
        tok.save(out / "tokenizer.ljt.json")  # for `python -m pipelines.hf sample`
        tok.save_hf(out)  # tokenizer.json + tokenizer_config.json, for transformers' AutoTokenizer
    export_hf(model, out, eos_token_id=eot, dtype=dtype)
    print(f"exported {checkpoint} (step {state['step']}, {model.num_params(False):,} parameters) to {out}")


def max_logit_difference(directory: Path, seed: int) -> float:
    """Max |logit difference| between our import and transformers' own GPT2LMHeadModel on random tokens."""
    import transformers  # a reference implementation: needed by `check` only

    ours = load_hf_gpt2(directory)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(directory).float().eval()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, ours.config.vocab_size, (2, min(64, ours.config.block_size)), generator=g)
    with torch.no_grad():
        return (ours(idx)[0] - theirs(idx).logits).abs().max().item()


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pipelines.hf", __doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    model_help = "a transformers GPT-2 directory, or a hub id such as gpt2 (through the HF cache)"
    p = sub.add_parser("sample", help="generate text from a transformers GPT-2 model")
    p.add_argument("directory", help=model_help)
    p.add_argument("--prompt", default="Hello, I'm a language model,", help="text to continue (default: %(default)r)")
    p.add_argument("--max-new-tokens", type=at_least(1), default=40, help="tokens per sample (default: %(default)s)")
    p.add_argument("--temperature", type=at_least(0.0, float), default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=at_least(0), default=50, help="0 = no top-k filtering")
    p.add_argument("--seed", type=int, default=1337, help="the same seed gives the same samples")
    p.add_argument("--num-samples", type=at_least(1), default=1, help="samples, drawn as one batch")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context every token")
    p = sub.add_parser("export", help="training checkpoint -> transformers directory")
    p.add_argument("checkpoint", type=Path, help="a training checkpoint (ckpt.pt)")
    p.add_argument("out", type=Path, help="the directory to write (created if needed)")
    p.add_argument("--tokenizer", type=Path, help="tokenizer.ljt.json to ship alongside (and take eot from)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="the weights' dtype in model.safetensors (default: as trained)")
    p = sub.add_parser("check", help="compare our logits with transformers' on a model")
    p.add_argument("directory", help=model_help)
    p.add_argument("--seed", type=int, default=0, help="seed of the random token ids compared")
    for p in sub.choices.values():
        add_common_flags(p)
    args = parser.parse_args(argv)
    code = 0

    def body() -> None:
        nonlocal code
        if args.command in ("sample", "check"):
            args.directory = resolve_hf_checkpoint(args.directory)   # a hub id -> its folder in the HF cache
        if args.command == "sample":
            model = load_hf_gpt2(args.directory)
            tok = load_directory_tokenizer(args.directory)
            ids = tok.encode(args.prompt) or [tok.eot_id]
            idx = torch.tensor([ids] * args.num_samples, dtype=torch.long)
            out = model.generate(
                idx, args.max_new_tokens, args.temperature, args.top_k or None,
                generator=torch.Generator().manual_seed(args.seed), use_cache=not args.no_cache,
            )  # fmt: skip
            for row in out.tolist():
                print(tok.decode(row))
                print("-" * 40)
        elif args.command == "export":
            export_checkpoint(args.checkpoint, args.out, args.tokenizer, args.dtype and getattr(torch, args.dtype))
        else:
            diff = max_logit_difference(args.directory, args.seed)
            print(f"max |our logits - transformers logits| = {diff:.3g}")
            code = 0 if diff < 1e-3 else 1

    # Bad input is a ValueError (CheckpointError, an edited config.json, ...): one line, rc 2.
    return run_reported(body, (ValueError,), debug=args.debug) or code


if __name__ == "__main__":
    sys.exit(main())
