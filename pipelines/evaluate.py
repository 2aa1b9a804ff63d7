"""Evaluate a trained checkpoint: `make eval` (val loss; HellaSwag when configured).

    python -m pipelines.evaluate --config configs/demo.toml [--hellaswag path.jsonl] [--limit N]

Val loss is measured on the same first windows of the val split that training reports
(eval.val_tokens of them), so the number matches the last "val loss" line of the run. HellaSwag
uses eval.hellaswag from the recipe, or --hellaswag (see `make hellaswag`). Results are printed and
written to artifacts/<recipe>/pretrain/eval.json.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from pipelines.sample import at_least
from pipelines.stage_cli import add_common_flags, command_parser, run_reported
from tokenizer.atomic_write import write_json_atomic


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pipelines.evaluate", __doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", default="configs/demo.toml", help="recipe TOML (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, e.g. --set train.out_dir=artifacts/demo/pretrain-2 (repeatable)")
    parser.add_argument("--checkpoint", default=None, help="default: artifacts/<recipe>/pretrain/ckpt.pt")
    parser.add_argument("--hellaswag", default=None, help="HellaSwag jsonl (default: eval.hellaswag of the recipe)")
    parser.add_argument("--limit", type=at_least(0), default=None,
                        help="score only the first N HellaSwag examples (0 = all)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    add_common_flags(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        import torch

        from contract.shard_format import ShardReader
        from pipelines.sample import load_run, pick_device
        from train import hellaswag
        from train.loader import TokenWindows, VerifiedShards, eval_window_ids
        from train.val_loss import window_loss

        device = pick_device(args.device)
        model, tok, state, cfg = load_run(args.config, args.set, args.checkpoint, device)
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.startswith("cuda") \
            else contextlib.nullcontext
        seq_len = cfg.train.seq_len or model.config.block_size
        # the same check as training: the val shards' sha256, and ids inside the model's vocabulary
        val = VerifiedShards(ShardReader(cfg.shards_dir), model.config.vocab_size).token_arrays("val")
        windows = TokenWindows(val, seq_len, "val")
        ids = eval_window_ids(windows.num_windows, cfg.eval.val_tokens, seq_len, 0, 1)
        total = window_loss(model, windows, ids, cfg.train.micro_batch_size, device, autocast)
        result = {"step": int(state["step"]), "val_loss": float(total[0] / total[1]),
                  "val_tokens": len(ids) * seq_len}
        print(f"checkpoint step {result['step']}: val loss {result['val_loss']:.4f} "
              f"over {result['val_tokens']:,} tokens of the val split")
        path = args.hellaswag or cfg.eval.hellaswag
        if path:
            limit = cfg.eval.hellaswag_limit if args.limit is None else args.limit
            examples = hellaswag.load_examples(path, limit)
            n, acc, acc_norm = hellaswag.score(model, examples, tok.encode, device=device,
                                               block_size=model.config.block_size, autocast=autocast).tolist()
            result["hellaswag"] = {"n": int(n), "acc": acc / n, "acc_norm": acc_norm / n, "file": str(path)}
            print(f"HellaSwag ({int(n):,} examples): acc_norm {acc_norm / n:.4f}, acc {acc / n:.4f} (chance 0.25)")
        write_json_atomic(cfg.out_dir / "eval.json", result)

    from train.trainer import PRETRAIN_ERRORS

    return run_reported(body, PRETRAIN_ERRORS, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
