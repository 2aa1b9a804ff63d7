"""Benchmark fine-tuning and chat on the CPU.  `make bench-sft`

1. Fine-tuning vs pretraining throughput: the same trainer, model (the demo's: 4 layers, 128 wide, context
   128, 4,096 ids) and batch (B 16 x T 128, 2,048 positions per step), once on token shards of the embedded
   corpus and once on packed conversations made from it. Runs alternate (pretrain, sft, pretrain, sft) and
   the median step time after the first steps gives positions/s; what SFT adds per step is building rows
   from the packed arrays and masking targets, and it should cost next to nothing. Padding is reported
   apart: it is paid in positions, not in speed.
2. `make chat` latency: time to first token (prompt rendered and encoded, prefill, one sample) and decoding
   tokens/s with the KV cache (model/chat_session.generate_stream, greedy, no stop), on the demo model's shape
   and on GPT-2 124M's, random weights (speed does not depend on what the weights know). Reference:
   transformers' GPT2LMHeadModel.generate with the same weights (exported with model/hf.export_hf),
   use_cache=True, greedy; its first token is timed as a generate(max_new_tokens=1).

Results go to BENCHMARKS.md, section "sft".
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.report import markdown_table, stamp, update_section
from harness.synthetic_shards import write_shards
from model import GPT, GPTConfig
from model.chat_session import generate_stream
from pipelines.sft import build_conversations
from pipelines.sources import python_docs
from tokenizer import Tokenizer
from tokenizer.chat import ChatFormat, special_tokens_with_chat, with_chat_tokens
from train.config import EvalSection, ModelSection, PretrainConfig, TrainSection
from train.sft_config import SftSection
from train.sft_data import ConversationData
from train.trainer import Trainer

DEMO = dict(n_layer=4, n_head=4, n_embd=128, block_size=128)
QUESTION = "What does json.dumps do?"


def trainer_config(root: Path, name: str, steps: int) -> PretrainConfig:
    return PretrainConfig(
        recipe_name=name, recipe_path=Path("bench/bench_sft.py"), shards_dir=root / "shards", out_dir=root / name,
        model=ModelSection(preset="tiny", **DEMO),
        train=TrainSection(micro_batch_size=16, total_batch_tokens=2048, max_steps=steps, max_lr=1e-3, min_lr=1e-4,
                           warmup_steps=5, checkpoint_every=10**9, log_every=10**9),
        eval=EvalSection(every=10**9, sample_every=0))


def training_throughput(steps: int, log=print) -> tuple[dict, Tokenizer]:
    texts = python_docs.texts()
    tok = Tokenizer.train(texts, vocab_size=4096, special_tokens=special_tokens_with_chat(["<|endoftext|>"]),
                          progress=False, max_chars_per_doc=10_000, name="bench")
    chat = ChatFormat(tok)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok.save(root / "tokenizer.ljt.json")
        docs = [tok.encode_to_array(t) for t in texts]
        write_shards(root / "shards", {"train": docs[100:], "val": docs[:100]}, vocab_size=tok.n_vocab,
                     eot_id=tok.eot_id, tokenizer_fingerprint=tok.fingerprint, tokenizer_path="../tokenizer.ljt.json")
        train, val, report = build_conversations(SftSection(), chat, DEMO["block_size"] + 1, None, log=lambda *a: None)
        # Both trainers live side by side and take their steps in turn, so a busy moment of the machine
        # slows both; the ratio is the median of the per-step ratios.
        pre = Trainer(trainer_config(root, "pretrain", steps), log=False, evaluate=False, save_checkpoints=False)
        data = ConversationData(train, val, tok, pad_id=chat.bos)
        sft = Trainer(trainer_config(root, "sft", steps), data=data, log=False, evaluate=False,
                      save_checkpoints=False)
        seconds: dict[str, list[float]] = {"pretrain": [], "sft": []}
        try:
            for step in range(steps):
                for kind, trainer in (("pretrain", pre), ("sft", sft)):
                    t0 = time.perf_counter()
                    trainer.train_step(step)
                    seconds[kind].append(time.perf_counter() - t0)
        finally:
            pre.close()
            sft.close()
        rows = data.packed["train"]
        skip = min(3, steps - 1)  # the first steps warm up the allocator and kernels
        ratios = [a / b for a, b in zip(seconds["pretrain"][skip:], seconds["sft"][skip:])]
    step_pre, step_sft = (statistics.median(seconds[k][skip:]) for k in ("pretrain", "sft"))
    log(f"pretraining {2048 / step_pre:,.0f} positions/s, sft {2048 / step_sft:,.0f}, "
        f"per-step ratio {statistics.median(ratios):.3f}")
    return {"pretrain_tok_s": 2048 / step_pre, "sft_tok_s": 2048 / step_sft, "ratio": statistics.median(ratios),
            "padding": rows.padding_fraction, "assistant_share": rows.learned_tokens / rows.tokens.size,
            "conversations": report["train"], "rows": rows.num_windows}, tok


@torch.no_grad()
def chat_latency(name: str, model: GPT, tok: Tokenizer, new_tokens: int, repeats: int, threads: int,
                 log=print) -> dict:
    """(ours, transformers) time to first token and decode tokens/s, medians of `repeats`, on `threads` threads
    (the same for both: the setting is per process)."""


    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _chat_latency(name, model, tok, new_tokens, repeats, log) | {"threads": threads}
    finally:
        torch.set_num_threads(before)


def _chat_latency(name: str, model: GPT, tok: Tokenizer, new_tokens: int, repeats: int, log) -> dict:
    import transformers

    from model.hf import export_hf

    chat = ChatFormat(tok)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(model, tmp)
        hf = transformers.GPT2LMHeadModel.from_pretrained(tmp).eval()
    kw = dict(do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
    times: dict[str, list[float]] = {"first": [], "rate": [], "hf_first": [], "hf_rate": []}
    for _ in range(repeats + 1):  # ours and transformers alternate, so a busy moment hits both; the first is warm-up
        t0 = time.perf_counter()
        prompt = chat.render_prompt([{"role": "user", "content": QUESTION}])
        stream = generate_stream(model, prompt, max_new_tokens=new_tokens, temperature=0)
        next(stream)
        t1 = time.perf_counter()
        n = 1 + sum(1 for _ in stream)
        t2 = time.perf_counter()
        assert n == new_tokens
        ids = torch.tensor([prompt])
        t3 = time.perf_counter()
        hf.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
        t4 = time.perf_counter()
        out = hf.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kw)
        t5 = time.perf_counter()
        assert out.shape[1] - ids.shape[1] == new_tokens
        for key, value in (("first", t1 - t0), ("rate", (n - 1) / (t2 - t1)), ("hf_first", t4 - t3),
                           ("hf_rate", (new_tokens - 1) / ((t5 - t4) - (t4 - t3)))):
            times[key].append(value)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    res = {"name": name, "params": model.num_params(non_embedding=False), "prompt": len(prompt), "new": new_tokens,
           "first_ms": 1000 * med["first"], "tok_s": med["rate"], "hf_first_ms": 1000 * med["hf_first"],
           "hf_tok_s": med["hf_rate"]}
    log(f"chat {name}: first token {res['first_ms']:.1f} ms (transformers {res['hf_first_ms']:.1f}), "
        f"{res['tok_s']:.0f} tokens/s (transformers {res['hf_tok_s']:.0f})")
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=80, help="training steps of each kind (taken in turn)")
    parser.add_argument("--repeats", type=int, default=5, help="chat measurements per model")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)

    from tokenizer.gpt2_files import gpt2_package_files

    train, demo_tok = training_throughput(args.steps)
    torch.manual_seed(0)
    # One thread for both models and both implementations: on a machine shared with other jobs, a second
    # thread waiting for a busy core makes every token as slow as that core (`make chat` takes all cores for
    # models of 10M parameters and more; --threads 1 there gives these numbers).
    demo = chat_latency("demo (4 x 128, context 128)", GPT(GPTConfig(vocab_size=demo_tok.n_vocab, **DEMO)), demo_tok,
                        100, args.repeats, threads=1)
    gpt2_tok = with_chat_tokens(Tokenizer.from_gpt2_files(*gpt2_package_files()))
    gpt2_model = GPT(GPTConfig.from_preset("gpt2", vocab_size=gpt2_tok.n_vocab))
    gpt2 = chat_latency("GPT-2 124M shape (context 1024)", gpt2_model, gpt2_tok, 200, args.repeats, threads=1)

    md = [
        "## Fine-tuning and chat (`make bench-sft`)", "",
        stamp(), "",
        "Both halves measure each number against its reference in turn (step by step, run by run), so a busy "
        "moment of the machine slows both sides: on a machine shared with other jobs the absolute speeds move "
        "between runs, the ratios hold.", "",
        f"**SFT vs pretraining**, same trainer, model (demo: 4 layers x 128, context 128, 4,096 ids) and batch "
        f"(B 16 x T 128 = 2,048 positions per step, float32, torch default threads): the two trainers take "
        f"{args.steps} steps in turn; medians after the first 3. SFT data: {train['conversations']:,} python-docs "
        f"conversations packed into {train['rows']:,} rows.", "",
        markdown_table(["data", "positions/s (median step)", "speed vs pretraining (median of step-by-step ratios)",
                        "padding", "learned targets"], [
            ["pretraining (token shards)", f"{train['pretrain_tok_s']:,.0f}", "1.00x", "0%", "100%"],
            ["SFT (packed conversations, loss masked)", f"{train['sft_tok_s']:,.0f}", f"{train['ratio']:.3f}x",
             f"{100 * train['padding']:.1f}%", f"{100 * train['assistant_share']:.1f}%"],
        ]), "",
        "Masking costs nothing measurable: the loss ignores targets of -1 inside the same cross-entropy call. "
        "Packing whole conversations best-fit leaves the padding shown (paid in positions, not speed); only the "
        "assistant's tokens are learned, so SFT learns from fewer targets per step than pretraining.", "",
        f"**`make chat`**: prompt = \"{QUESTION}\" in the chat format; greedy; medians of {args.repeats}. "
        "Reference: transformers' GPT2LMHeadModel.generate (use_cache=True) with the same weights.", "",
        markdown_table(["model", "parameters", "threads", "prompt", "new tokens", "first token", "tokens/s",
                        "transformers first token", "transformers tokens/s", "tokens/s vs transformers"], [
            [r["name"], f"{r['params'] / 1e6:.1f}M", r["threads"], r["prompt"], r["new"], f"{r['first_ms']:.1f} ms",
             f"{r['tok_s']:,.0f}", f"{r['hf_first_ms']:.1f} ms", f"{r['hf_tok_s']:,.0f}",
             f"{r['tok_s'] / r['hf_tok_s']:.2f}x"] for r in (demo, gpt2)]),
    ]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        update_section("sft", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
