"""Sample text from a trained checkpoint: `make sample PROMPT="Once upon a time"`.

    python -m pipelines.sample --config configs/demo.toml --prompt "I am a doctor" [--tokens 64] [--num 3]

The model comes from artifacts/<recipe>/pretrain/ckpt.pt (or --checkpoint), the tokenizer from the
file the shard manifest names; their fingerprints must agree, or ids would decode to other text.
"""

from __future__ import annotations

import argparse
import sys

from contract.recipe import load_recipe, parse_overrides
from pipelines.stage_cli import add_common_flags, command_parser, run_reported


def load_run(config: str, overrides: list[str], checkpoint: str | None, device: str):
    """(model, tokenizer, checkpoint state, PretrainConfig) for the recipe's trained model."""
    from contract.shard_format import ShardReader
    from train.checkpoint import check_same_tokenizer, load_checkpoint, model_from_checkpoint
    from train.config import pretrain_config_from_recipe

    cfg = pretrain_config_from_recipe(load_recipe(config, parse_overrides(overrides)))
    state = load_checkpoint(checkpoint or cfg.out_dir, map_location="cpu")
    # The shards name the tokenizer file; the checkpoint says which tokenizer its ids belong to.
    reader = ShardReader(cfg.shards_dir)
    tok = reader.load_tokenizer(required=True)
    check_same_tokenizer(state, reader.tokenizer_fingerprint, source=checkpoint or cfg.out_dir)
    return model_from_checkpoint(state, device), tok, state, cfg


def pick_device(name: str) -> str:
    """"auto" = a GPU when torch sees one; "cuda" without one is refused in one line, not a CUDA traceback."""
    import torch

    from train.distributed import DeviceUnavailableError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"--device {name} but torch sees no CUDA device; use --device cpu (or auto)")
    return name


def at_least(minimum: int | float, kind: type = int):
    """argparse type for a number >= minimum: `make sample TOKENS=-1` or NUM=0 is one usage error at once,
    not a tensor error from deep inside (or an empty result) after the model was loaded."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pipelines.sample", __doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", default="configs/demo.toml", help="recipe TOML (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, e.g. --set train.out_dir=artifacts/demo/pretrain-2 (repeatable)")
    parser.add_argument("--checkpoint", default=None, help="default: artifacts/<recipe>/pretrain/ckpt.pt")
    parser.add_argument("--prompt", default="I am a doctor, let me teach you about",
                        help="text the samples continue (default: %(default)r)")
    parser.add_argument("--tokens", type=at_least(1), default=64, help="new tokens per sample")
    parser.add_argument("--num", type=at_least(1), default=3, help="samples")
    parser.add_argument("--temperature", type=at_least(0.0, float), default=1.0, help="0 = greedy")
    parser.add_argument("--top-k", type=at_least(0), default=50, help="0 = no top-k filtering")
    parser.add_argument("--seed", type=int, default=1337, help="the same seed gives the same samples")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    add_common_flags(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        import torch

        device = pick_device(args.device)
        model, tok, state, _ = load_run(args.config, args.set, args.checkpoint, device)
        ids = tok.encode(args.prompt, allowed_special="all") or [tok.eot_id]
        idx = torch.tensor([ids] * args.num, dtype=torch.long, device=device)
        gen = torch.Generator(device=device).manual_seed(args.seed)
        out = model.generate(idx, args.tokens, temperature=args.temperature, top_k=args.top_k or None,
                             generator=gen)
        print(f"# checkpoint step {state['step']}, {args.num} sample(s) of {args.tokens} tokens, "
              f"temperature {args.temperature}, top-k {args.top_k or 'off'}, seed {args.seed}")
        for i, row in enumerate(out):
            print(f"--- sample {i + 1}\n{tok.decode(row.tolist())}")

    from train.trainer import PRETRAIN_ERRORS

    return run_reported(body, PRETRAIN_ERRORS, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
