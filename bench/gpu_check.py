"""GPU check: train the gpt2 preset (124M) for ~50 steps at the real batch shape; report tokens/s and MFU.

    bash bench/gpu_check.sh                 on one H100: B=64 x T=1024 micro-batches, 524,288 tokens/step
                                            (8 micro-steps), bf16 autocast, TF32, torch.compile, fused AdamW
    python -m bench.gpu_check --dry-run     the same code path with a tiny model on the CPU (a few seconds)

Data: random token shards (uniform ids, vocab 50257) written with the production shard writer and read
by the production loader, so the measured loop is exactly the training loop of `make pretrain`.
Throughput counts steps after the first `--skip` (compilation and allocator warmup happen there).

No evaluation and no checkpoint: only the training loop is timed.

MFU = flops_per_token * tokens_per_second / peak, with flops_per_token = 6N + 12*L*H*Q*T (PaLM form;
N = parameters without position embeddings, the tied head included) and peak = the device's dense
bf16 TFLOP/s (H100 SXM: 989). Results go to BENCHMARKS.md (section pretrain-gpu).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

from harness.synthetic_shards import random_documents, write_shards
from train.config import EvalSection, ModelSection, PretrainConfig, TrainSection, WandbSection

GPT2_VOCAB = 50257
DRY_RUN_VOCAB = 1024  # keeps the CPU dry run to seconds; the GPU run uses GPT-2's vocabulary


def build_config(root: Path, args) -> PretrainConfig:
    train = TrainSection(micro_batch_size=args.batch, seq_len=args.seq, total_batch_tokens=args.total_batch,
                         max_steps=args.steps, warmup_steps=min(715, args.steps), checkpoint_every=10**9,
                         log_every=args.log_every, compile="false" if args.no_compile else "auto",
                         device="cpu" if args.dry_run else "auto", cpu_threads=1 if args.dry_run else 0)
    ev = EvalSection(every=10**9, val_tokens=args.seq * args.batch, samples_per_prompt=0)
    model = ModelSection(preset=args.preset, **({"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": args.seq}
                                                if args.dry_run else {}))
    return PretrainConfig(recipe_name="gpu-check", recipe_path=Path(__file__), shards_dir=root / "shards",
                          out_dir=root / "pretrain", model=model, train=train, eval=ev, wandb=WandbSection())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpt2")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64, help="micro-batch B per GPU")
    parser.add_argument("--seq", type=int, default=1024, help="sequence length T")
    parser.add_argument("--total-batch", type=int, default=524_288, help="tokens per optimizer step")
    parser.add_argument("--skip", type=int, default=10, help="first steps left out of the average")
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, tiny model, 3 steps: checks the code path, writes nothing to BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.preset, args.steps, args.batch, args.seq, args.total_batch, args.skip = "tiny", 3, 2, 32, 128, 1
        args.log_every = 1

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device (use --dry-run to check the code path on a CPU)", file=sys.stderr)
        return 2
    from train.trainer import pretrain

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(tmp)
        # Enough tokens that the loader does not wrap within the run (random data: nothing to learn anyway).
        n_train = min(args.steps * args.total_batch + 1, 64 * 1024 * 1024)
        vocab = DRY_RUN_VOCAB if args.dry_run else GPT2_VOCAB
        write_shards(root / "shards", {"train": random_documents(n_train, vocab, vocab - 1, seed=1),
                                       "val": random_documents(4 * args.batch * args.seq, vocab, vocab - 1, seed=2)},
                     vocab_size=vocab, eot_id=vocab - 1, tokenizer_fingerprint="synthetic-random-tokens",
                     shard_tokens=16 * 1024 * 1024)
        cfg = build_config(root, args)
        result = pretrain(cfg, evaluate=False, save_checkpoints=False)
        records = [json.loads(line) for line in (cfg.out_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"][args.skip:]
    if not train:
        print("error: no steps left after --skip", file=sys.stderr)
        return 2
    tok_s = statistics.mean(r["tokens_per_sec"] for r in train)
    dt = statistics.mean(r["dt"] for r in train)
    mfus = [r["mfu"] for r in train if r["mfu"] is not None]
    mfu = statistics.mean(mfus) if mfus else None
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.dry_run else "CPU"
    print(f"\n{device}: {args.preset}, B={args.batch} T={args.seq}, {args.total_batch:,} tokens/step, "
          f"steps {args.skip + 1}-{result.steps_done}: {tok_s:,.0f} tokens/s, {1000 * dt:.0f} ms/step, "
          f"MFU {'n/a' if mfu is None else f'{100 * mfu:.1f}%'}; final loss {result.losses[-1]:.3f} "
          f"(random tokens: ln {vocab} = {math.log(vocab):.2f})")
    if not args.dry_run and not args.no_write:
        from bench.report import markdown_table, stamp, update_section

        table = markdown_table(
            ["device", "model", "micro-batch", "tokens/step", "steps timed", "tokens/s", "ms/step", "MFU"],
            [[device, args.preset, f"{args.batch} x {args.seq}", f"{args.total_batch:,}",
              f"{args.skip + 1}-{result.steps_done}", f"{tok_s:,.0f}", f"{1000 * dt:.0f}",
              "n/a" if mfu is None else f"{100 * mfu:.1f}%"]])
        update_section("pretrain-gpu", "## Pretraining throughput (bench/gpu_check.sh)\n\n" + stamp() + "\n\n"
                       + table + "\n\nbf16 autocast, TF32, torch.compile, fused AdamW; MFU against 989 TFLOP/s "
                       "(H100 bf16 dense). References: llm.c ~468K tok/s (~40% MFU) per H100.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
