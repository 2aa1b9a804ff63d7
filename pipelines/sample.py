"""Sample text from a trained checkpoint: `make sample PROMPT="Once upon a time"`.

    python -m pipelines.sample --config configs/demo.toml --prompt "I am a doctor" [--tokens 64] [--num 3]

The model comes from artifacts/<recipe>/pretrain/ckpt.pt (or --checkpoint), the tokenizer from the
file the shard manifest names; their fingerprints must agree, or ids would decode to other text.
"""

from __future__ import annotations

import argparse
import sys

from contract.recipe import RecipeError, load_recipe, parse_overrides


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
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.toml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--checkpoint", default=None, help="default: artifacts/<recipe>/pretrain/ckpt.pt")
    parser.add_argument("--prompt", default="I am a doctor, let me teach you about")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per sample")
    parser.add_argument("--num", type=int, default=3, help="samples")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=50, help="0 = no top-k filtering")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    import torch

    from contract.shard_format import ShardFormatError
    from train.checkpoint import CheckpointError

    try:
        device = pick_device(args.device)
        model, tok, state, _ = load_run(args.config, args.set, args.checkpoint, device)
        ids = tok.encode(args.prompt, allowed_special="all") or [tok.eot_id]
        idx = torch.tensor([ids] * args.num, dtype=torch.long, device=device)
        gen = torch.Generator(device=device).manual_seed(args.seed)
        out = model.generate(idx, args.tokens, temperature=args.temperature, top_k=args.top_k or None,
                             generator=gen)
    except (RecipeError, ShardFormatError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"# checkpoint step {state['step']}, {args.num} sample(s) of {args.tokens} tokens, "
          f"temperature {args.temperature}, top-k {args.top_k or 'off'}, seed {args.seed}")
    for i, row in enumerate(out):
        print(f"--- sample {i + 1}\n{tok.decode(row.tolist())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
