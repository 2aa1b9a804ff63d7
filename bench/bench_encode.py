"""Encoding speed: our pure-Python encoder vs tiktoken (Rust), GPT-2 vocabulary, embedded corpus.

    python -m bench.bench_encode [--repeats 3] [--batch-copies 5] [--no-write]

Rows (each timed in this run, best of --repeats, on the same text):
  - tiktoken encode_ordinary: the reference;
  - ours, cold: a fresh tokenizer's first pass (every word and chunk is new to the caches);
  - ours, warm: the same text again after one pass (what a long run converges to);
  - ours, half-warm: caches filled by the first half of the corpus, timed on the second half
    (new documents, familiar words: the honest middle ground);
  - the two long single pieces of the issue;
  - encode_batch with 2 worker processes vs 1 process, on the corpus repeated --batch-copies
    times, from cold caches and from warm ones.
The table goes into BENCHMARKS.md, section "tokenizer-encode".
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from bench.report import markdown_table, stamp, update_section


def best_time(fn, repeats: int, setup=None) -> float:
    best = float("inf")
    for _ in range(repeats):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-copies", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print the table, do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)

    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from pipelines.sources import python_docs
    from tokenizer import Tokenizer
    from tokenizer.__main__ import gpt2_package_files

    texts = python_docs.texts()
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    encoder_json, vocab_bpe = gpt2_package_files()
    tok = Tokenizer.from_gpt2_files(encoder_json, vocab_bpe)
    enc = tiktoken.Encoding("gpt2-offline", pat_str=tok.pattern,
                            mergeable_ranks=data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json)),
                            special_tokens=tok.special_tokens)
    reference = [enc.encode_ordinary(t) for t in texts]
    n_tokens = sum(map(len, reference))

    def ours():
        return [tok.encode_ordinary(t) for t in texts]

    def theirs():
        return [enc.encode_ordinary(t) for t in texts]

    t_tiktoken = best_time(theirs, args.repeats)
    t_cold = best_time(ours, args.repeats, setup=tok.clear_cache)
    tok.clear_cache()
    assert ours() == reference, "our encoding differs from tiktoken's"
    t_warm = best_time(ours, args.repeats)

    half = len(texts) // 2
    first, second = texts[:half], texts[half:]
    second_bytes = sum(len(t.encode("utf-8")) for t in second)

    def warm_first_half():
        tok.clear_cache()
        for t in first:
            tok.encode_ordinary(t)

    t_half = best_time(lambda: [tok.encode_ordinary(t) for t in second], args.repeats, setup=warm_first_half)
    t_tiktoken_half = best_time(lambda: [enc.encode_ordinary(t) for t in second], args.repeats)

    long_rows = []
    for label, text in [('"a" * 100_000', "a" * 100_000), ('" " * 100_000', " " * 100_000)]:
        t_ours = best_time(lambda text=text: tok.encode_ordinary(text), args.repeats, setup=tok.clear_cache)
        t_ref = best_time(lambda text=text: enc.encode_ordinary(text), args.repeats)
        long_rows.append([label, f"{t_ours * 1000:.0f} ms", f"{t_ref * 1000:.1f} ms"])

    big = texts * args.batch_copies
    big_bytes = n_bytes * args.batch_copies
    tok.clear_cache()
    assert tok.encode_batch(big[: len(texts)], workers=2) == reference, "encode_batch differs from tiktoken"

    def warm_caches():
        tok.clear_cache()
        for t in texts:
            tok.encode_ordinary(t)

    def timed_batch(workers: int, setup) -> tuple[float, float]:
        """(best wall seconds, best critical-path CPU seconds) over the repeats.

        Critical path = the busiest process's CPU time (this process, or its one child with
        workers=2): what the wall time would be on otherwise idle cores.
        """
        best_wall = best_cpu = float("inf")
        for _ in range(args.repeats):
            setup()
            child0 = _children_cpu()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            tok.encode_batch(big, workers=workers)
            wall, cpu, child = time.perf_counter() - wall0, time.process_time() - cpu0, _children_cpu() - child0
            best_wall, best_cpu = min(best_wall, wall), min(best_cpu, max(cpu, child))
        return best_wall, best_cpu

    batch = {}
    for state, setup in [("cold", tok.clear_cache), ("warm", warm_caches)]:
        for workers in (1, 2):
            batch[state, workers] = timed_batch(workers, setup)

    def mbs(seconds: float, size: int = n_bytes) -> str:
        return f"{size / seconds / 1e6:.2f}"

    rows = [
        ["tiktoken encode_ordinary (Rust)", f"{t_tiktoken:.3f}", mbs(t_tiktoken), "1.00x"],
        ["ours, cold (fresh caches, first pass)", f"{t_cold:.3f}", mbs(t_cold), f"{t_tiktoken / t_cold:.2f}x"],
        ["ours, warm (after one pass)", f"{t_warm:.3f}", mbs(t_warm), f"{t_tiktoken / t_warm:.2f}x"],
        ["ours, half-warm (2nd half, caches from 1st half)", f"{t_half:.3f}", mbs(t_half, second_bytes),
         f"{t_tiktoken_half / t_half:.2f}x"],
    ]
    table = markdown_table(["encoder (GPT-2 vocab)", "seconds", "MB/s", "vs tiktoken"], rows)
    long_table = markdown_table(["single piece", "ours (cold)", "tiktoken"], long_rows)
    batch_rows = []
    for state in ("cold", "warm"):
        (wall1, cpu1), (wall2, cpu2) = batch[state, 1], batch[state, 2]
        batch_rows.append([f"{state} start", f"{wall1:.3f}", f"{wall2:.3f}", mbs(wall2, big_bytes),
                           f"{wall1 / wall2:.2f}x", f"{cpu1:.3f} / {cpu2:.3f}", f"{cpu1 / cpu2:.2f}x"])
    batch_table = markdown_table(
        ["encode_batch", "1 process (s)", "2 workers (s)", "2 workers MB/s", "wall speed-up",
         "critical-path CPU (s), 1 / 2", "CPU-bound speed-up"], batch_rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    markdown = "\n\n".join([
        "## Tokenizer: encoding speed (`make bench-encode`)",
        stamp(),
        f"Embedded python-docs corpus: {len(texts)} documents, {n_bytes / 1e6:.2f} MB UTF-8, {n_tokens:,} GPT-2 "
        f"tokens; best of {args.repeats} runs each; outputs checked identical to tiktoken. Acceptance: warm >= "
        "0.8x tiktoken. The half-warm row encodes documents never seen before, with words already cached.",
        table,
        long_table,
        f"encode_batch on the corpus x {args.batch_copies} ({big_bytes / 1e6:.1f} MB). Cold start: caches emptied "
        "before each run, so every process warms its own (forked workers inherit the parent's caches); warm start: "
        "caches filled by one pass over the corpus first (a long-running job's steady state). Target >= 1.7x. "
        f"Load average when the run ended: {load:.1f} on {os.cpu_count()} cores. Other processes take their share "
        "of the cores, so the wall speed-up can only reach 2x on an idle machine; the CPU-bound speed-up divides "
        "the single process's CPU time by that of the busiest of the two processes (the calling process encodes "
        "a share itself, see tokenizer/parallel.py), i.e. the wall speed-up on two otherwise idle cores.",
        batch_table,
    ])
    print(markdown)
    if not args.no_write:
        update_section("tokenizer-encode", markdown)


if __name__ == "__main__":
    main()
