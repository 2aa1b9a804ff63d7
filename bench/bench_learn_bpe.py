"""Benchmark: BPE training time and peak memory, ours (pure Python) against HF tokenizers (Rust).

    python -m bench.bench_learn_bpe [--vocab-sizes 4096 16384] [--repeats 3] [--stream-copies 4]
                                [--no-many-words] [--no-write]

Both trainers learn from the same text (the embedded python-docs corpus, ~2 MB), at each vocabulary
size, in the same run. Every measurement is a fresh subprocess, so that peak RSS (ru_maxrss) belongs
to one trainer alone; the two trainers alternate and the best of `--repeats` wall times is kept.
Ours uses its default, all cores for pre-tokenisation (worker processes); HF uses all cores too
(rayon threads). The merges of both are hashed and compared: the table says whether they agree.

The next row streams the corpus `--stream-copies` times through each trainer (a generator, the
list is held once): since our trainer keeps only the table of distinct pre-tokens, its peak memory
should not grow with the amount of text. The last row is a harder case: a deterministic
synthetic corpus with ~10x more distinct pre-tokens than python-docs (random letter strings drawn
from a Zipf-like distribution), where the merge loop, not the regex, dominates.
Results go to BENCHMARKS.md, section "learn-bpe".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def many_words_corpus(n_docs: int = 2000, seed: int = 5) -> list[str]:
    """~4 MB of random lowercase "words" (a 300k-word lexicon, half Zipf-distributed, half uniform)."""
    import random

    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    lexicon = ["".join(rng.choices(letters, weights, k=rng.randint(1, 12))) for _ in range(300_000)]
    docs = []
    for _ in range(n_docs):
        words = (
            lexicon[min(int(rng.paretovariate(0.7)) - 1, len(lexicon) - 1)]
            if rng.random() < 0.5
            else rng.choice(lexicon)
            for _ in range(250)
        )
        docs.append(" ".join(words))
    return docs


def _peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def _merges_digest(pairs: list[tuple[bytes, bytes]]) -> str:
    h = hashlib.sha256()
    for left, right in pairs:
        h.update(len(left).to_bytes(4, "little") + left + len(right).to_bytes(4, "little") + right)
    return h.hexdigest()[:16]


def _child(trainer: str, vocab_size: int, texts_path: str, copies: int) -> dict:
    """Runs in a fresh process: load the texts, train once, report time, memory and a merges digest."""
    with open(texts_path, "rb") as f:
        texts = pickle.load(f)

    def stream():
        for _ in range(copies):
            yield from texts

    if trainer == "ours":
        from tokenizer.learn_bpe import train_bpe_from_counts
        from tokenizer.pretokenize import count_pretokens

        baseline = _peak_rss_mib()
        # Exactly what train_bpe does, timed per phase.
        t0 = time.perf_counter()
        counts = count_pretokens(stream())
        t1 = time.perf_counter()
        result = train_bpe_from_counts(counts, vocab_size)
        t2 = time.perf_counter()
        merges = [(result.vocab[a], result.vocab[b]) for a, b in result.merges]
        phases = {"pretokenize_s": t1 - t0, "merge_s": t2 - t1, "distinct_pretokens": len(counts)}
    else:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        from tokenizer.byte_order import unicode_str_to_bytes

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf_trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            min_frequency=0,
            special_tokens=[],
            show_progress=False,
        )
        baseline = _peak_rss_mib()
        t0 = time.perf_counter()
        tok.train_from_iterator(stream(), trainer=hf_trainer)
        t2 = time.perf_counter()
        model = json.loads(tok.to_str())["model"]
        merges = []
        for m in model["merges"]:
            left, right = m.split(" ") if isinstance(m, str) else m
            merges.append((unicode_str_to_bytes(left), unicode_str_to_bytes(right)))
        phases = {}
    return {
        "seconds": t2 - t0,
        "rss_baseline_mib": baseline,
        "rss_peak_mib": _peak_rss_mib(),
        "rss_workers_mib": _peak_rss_mib(resource.RUSAGE_CHILDREN),
        "merges": len(merges),
        "digest": _merges_digest(merges),
        **phases,
    }


def _run_child(trainer: str, vocab_size: int, texts_path: str, copies: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "bench.bench_learn_bpe",
        "--child",
        trainer,
        "--vocab",
        str(vocab_size),
        "--texts",
        texts_path,
        "--copies",
        str(copies),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if out.returncode != 0:
        raise RuntimeError(f"{trainer} trainer failed (vocab {vocab_size}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _best(runs: list[dict]) -> dict:
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "rss_peak_mib": max(r["rss_peak_mib"] for r in runs)}


def measure(texts_path: str, vocab_size: int, repeats: int, copies: int = 1) -> tuple[dict, dict]:
    ours, hf = [], []
    for _ in range(repeats):  # alternate, so that both see the same background load
        hf.append(_run_child("hf", vocab_size, texts_path, copies))
        ours.append(_run_child("ours", vocab_size, texts_path, copies))
    return _best(ours), _best(hf)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stream-copies", type=int, default=4, help="0 skips the memory-scaling row")
    parser.add_argument(
        "--many-words",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train on the synthetic many-distinct-words corpus",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--child", choices=["ours", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    parser.add_argument("--copies", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.vocab, args.texts, args.copies)))
        return

    from bench.report import markdown_table, stamp, update_section
    from pipelines.sources import python_docs

    texts = python_docs.texts()
    n_chars = sum(map(len, texts))
    corpora = [("python-docs", texts)]
    if args.many_words:
        corpora.append(("many-words", many_words_corpus()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for name, corpus in corpora:
            path = os.path.join(tmp, f"{name}.pkl")
            with open(path, "wb") as f:
                pickle.dump(corpus, f)
            n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in corpus)
            if name == "python-docs":
                cases += [(name, path, n_bytes, v, 1) for v in args.vocab_sizes]
                if args.stream_copies > 1:
                    cases.append((name, path, n_bytes, args.vocab_sizes[0], args.stream_copies))
            else:
                cases.append((name, path, n_bytes, args.vocab_sizes[-1], 1))
        for name, path, n_bytes, vocab_size, copies in cases:
            ours, hf = measure(path, vocab_size, args.repeats, copies)
            ratio = ours["seconds"] / hf["seconds"]
            rows.append(
                [
                    f"{vocab_size:,}",
                    f"{name}, {copies * n_bytes / 1e6:.1f} MB" + (f" ({copies}x streamed)" if copies > 1 else ""),
                    f"{ours['distinct_pretokens']:,}",
                    f"{hf['seconds']:.2f}",
                    f"{ours['seconds']:.2f}",
                    f"{ours['pretokenize_s']:.2f} + {ours['merge_s']:.2f}",
                    f"**{ratio:.2f}x**",
                    f"{ours['rss_peak_mib']:.0f} (+{ours['rss_peak_mib'] - ours['rss_baseline_mib']:.0f}) / "
                    f"{ours['rss_workers_mib']:.0f}",
                    f"{hf['rss_peak_mib']:.0f} (+{hf['rss_peak_mib'] - hf['rss_baseline_mib']:.0f})",
                    "yes" if ours["digest"] == hf["digest"] and ours["merges"] == hf["merges"] else "**NO**",
                ]
            )
            print(rows[-1], flush=True)
    headers = [
        "vocab",
        "text",
        "distinct pre-tokens",
        "HF s",
        "ours s",
        "ours: pre-tokenise + merges s",
        "ours / HF",
        "ours peak RSS MiB (+training) / worker",
        "HF peak RSS MiB (+training)",
        "same merges",
    ]
    markdown = "\n".join(
        [
            "### BPE training: pure Python vs HF tokenizers (Rust)",
            "",
            stamp(),
            "",
            f"Corpus: embedded python-docs, {len(texts):,} documents, {n_chars:,} characters"
            + (" (and the synthetic many-words corpus, see bench/bench_learn_bpe.py); " if args.many_words else "; ")
            + f"best of {args.repeats} fresh processes per cell; both trainers use all {os.cpu_count()} cores "
            "(ours: worker processes for pre-tokenisation; HF: threads). Target: <= 3x HF, goal <= 2x. "
            "RSS: peak of the training process, with the growth of that peak during training in brackets "
            "(the rest is the interpreter, libraries and the corpus list); ours also shows the largest worker.",
            "",
            markdown_table(headers, rows),
        ]
    )
    print(markdown)
    if not args.no_write:
        update_section("learn-bpe", markdown)


if __name__ == "__main__":
    main()
