"""Shards throughput: our `make shards` stage vs a build-nanogpt-style tiktoken pipeline.

    python -m bench.bench_shards [--repeats 2] [--corpora tuning held-aside] [--workers 1 2]
                                 [--baseline DIR] [--no-write]

Both pipelines turn the same raw parquet files into uint16 .npy shards with GPT-2's vocabulary, each
document preceded by <|endoftext|>, and are timed end to end: reading the raw files, starting the
worker processes, encoding, writing the shards. The raw files are made by our own data stage
(`source = "local"`) from the two offline corpora of bench/encode_corpora.py: the package
documentation the encoder was tuned on, and the held-aside docstrings it never was (~23 and 28 MB
of text no cache has seen: every run starts cold).

- ours: pipelines.shards.run (the pure-Python tokenizer, a row group's documents per
  encode_to_arrays call, i.e. through its chunk table; worker processes that read row groups
  themselves, forked after the main process has encoded the first one; ordered windowed results,
  manifest with sha256 of every shard);
- reference: the way build-nanogpt's fineweb.py works: tiktoken's Rust encoder (GPT-2 built
  offline from the same files), multiprocessing.Pool.imap(tokenize, docs, chunksize=16), each
  result converted to a uint16 array and copied into a preallocated shard buffer, np.save per shard.

The machine is shared, so the two pipelines run in interleaved rounds (reference then ours, for each
worker count) and the best round of each is kept. Every run happens in a fresh subprocess, which
reports its wall time, its CPU time and its children's (`resource.getrusage`), and peak resident
memory: RUSAGE_CHILDREN's ru_maxrss is the largest worker of exactly that run (for 1 worker ours
encodes in the main process: its own peak is reported). "CPU-bound seconds" is what the run would
take on otherwise idle cores: the larger of the CPU time of its busiest process (the main one, or
one of `workers` equally loaded workers) and its total CPU time spread over the cores. Note that the
reference with 1 worker is two busy processes (the pool worker encodes, the main process converts
and copies), while ours with 1 worker is one. With --baseline DIR (another checkout, e.g. made with
`git worktree add`), that version's `make shards` runs in the same rounds: the before/after figures.
Results go to BENCHMARKS.md, section "shards".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARD_TOKENS = 100_000_000  # build-nanogpt's shard size; the corpus fits in one


def gpt2_files() -> tuple[Path, Path]:
    from tokenizer.gpt2_files import gpt2_package_files

    return gpt2_package_files()


# --------------------------------------------------------------------------------------- setup
def prepare(root: Path, corpus: str) -> Path:
    """A recipe whose raw/ holds `corpus` (made by our data stage) and whose tokenizer/ is GPT-2."""
    from bench.encode_corpora import CORPORA
    from contract import manifest as mf
    from contract.recipe import load_recipe
    from pipelines.data import run as run_data
    from tokenizer import Tokenizer

    source = root / "corpus.jsonl"
    with open(source, "w", encoding="utf-8") as f:
        for text in CORPORA[corpus]():
            f.write(json.dumps({"text": text}) + "\n")
    recipe_path = root / "bench.toml"
    recipe_path.write_text(
        f'name = "bench"\nartifacts_root = "{root}"\n[data]\nsource = "local"\npaths = ["{source}"]\n'
        f'rows_per_file = 5000\n[shards]\nformat = "npy"\nshard_tokens = {SHARD_TOKENS}\nval_documents = 0\n',
        encoding="utf-8",
    )
    recipe = load_recipe(recipe_path)
    run_data(recipe, progress_bar=False, log=lambda *a: None)

    tok = Tokenizer.from_gpt2_files(*gpt2_files())
    tok_dir = recipe.stage_dir("tokenizer")
    tok_dir.mkdir(parents=True, exist_ok=True)
    tok.save(tok_dir / "tokenizer.ljt.json")
    mf.write_manifest(tok_dir, {
        "stage": "tokenizer", "config": {"pretrained": "gpt2"}, "inputs": {},
        "tokenizer": {"fingerprint": tok.fingerprint, "name": tok.name, "n_vocab": tok.n_vocab,
                      "eot_id": tok.eot_id, "special_tokens": tok.special_tokens, "file": "tokenizer.ljt.json"},
        "outputs": [mf.output_entry(tok_dir / "tokenizer.ljt.json", tok_dir)],
    })
    return recipe_path


# ------------------------------------------------------------------------- the two pipelines
def run_ours(recipe_path: Path, workers: int) -> dict:
    from contract.recipe import load_recipe
    from pipelines.shards import run

    recipe = load_recipe(recipe_path)
    t0 = time.perf_counter()
    manifest = run(recipe, force=True, progress_bar=False, log=lambda *a: None, workers=workers)
    seconds = time.perf_counter() - t0
    return {"tokens": manifest["splits"]["train"]["tokens"], "documents": manifest["splits"]["train"]["documents"],
            "seconds": seconds}


_ENC = None
_EOT = 0


def _reference_tokenize(doc: dict):
    import numpy as np

    tokens = [_EOT]
    tokens.extend(_ENC.encode_ordinary(doc["text"]))
    arr = np.array(tokens)
    assert (0 <= arr).all() and (arr < 2**16).all(), "token dictionary too large for uint16"
    return arr.astype(np.uint16)


def run_reference(recipe_path: Path, workers: int) -> dict:
    """build-nanogpt's fineweb.py loop, fed from the same raw parquet files."""
    global _ENC, _EOT
    import multiprocessing as mp

    import numpy as np
    import pyarrow.parquet as pq
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from contract.raw import raw_files
    from contract.recipe import load_recipe
    from tokenizer.pattern import GPT2_PATTERN

    recipe = load_recipe(recipe_path)
    out = recipe.artifacts_dir / "reference"
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    encoder_json, vocab_bpe = gpt2_files()
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    _ENC = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})
    _EOT = _ENC._special_tokens["<|endoftext|>"]

    def docs():
        for path in raw_files(recipe.stage_dir("raw")):
            for batch in pq.ParquetFile(path).iter_batches(columns=["text"], batch_size=1024):
                for text in batch.column("text").to_pylist():
                    yield {"text": text}

    shard_index, token_count, total = 0, 0, 0
    buf = np.empty((SHARD_TOKENS,), dtype=np.uint16)
    with mp.get_context("fork").Pool(workers) as pool:
        for tokens in pool.imap(_reference_tokenize, docs(), chunksize=16):
            if token_count + len(tokens) < SHARD_TOKENS:
                buf[token_count : token_count + len(tokens)] = tokens
                token_count += len(tokens)
            else:
                remainder = SHARD_TOKENS - token_count
                buf[token_count:] = tokens[:remainder]
                np.save(out / f"ref_train_{shard_index:06d}", buf)
                shard_index += 1
                total += SHARD_TOKENS
                buf[: len(tokens) - remainder] = tokens[remainder:]
                token_count = len(tokens) - remainder
        if token_count:
            np.save(out / f"ref_train_{shard_index:06d}", buf[:token_count])
            total += token_count
    return {"tokens": total, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------- driver
def one(kind: str, recipe_path: Path, workers: int) -> None:
    """Subprocess entry: one timed run, printed as JSON with CPU seconds and peak RSS figures (MiB)."""
    result = (run_ours if kind == "ours" else run_reference)(recipe_path, workers)
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    to_mib = 1 / 1024  # ru_maxrss is in KiB on Linux
    in_process = kind == "ours" and workers == 1  # one worker of ours runs in the main process
    result["worker_rss_mib"] = me.ru_maxrss * to_mib if in_process else children.ru_maxrss * to_mib
    result["main_rss_mib"] = me.ru_maxrss * to_mib
    main_cpu = me.ru_utime + me.ru_stime
    workers_cpu = children.ru_utime + children.ru_stime
    busiest = main_cpu if in_process else max(main_cpu, workers_cpu / workers)
    result["cpu_s"] = main_cpu + workers_cpu
    result["cpu_bound_s"] = max(busiest, result["cpu_s"] / (os.cpu_count() or 1))
    print(json.dumps(result))


def run_once(kind: str, recipe_path: Path, workers: int, tree: Path = REPO) -> dict:
    """One run in a fresh process; `tree`: the checkout whose code runs (see --baseline)."""
    out = subprocess.run([sys.executable, "-m", "bench.bench_shards", "--one", kind, str(recipe_path),
                          str(workers)], cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_corpus(recipe_path: Path, workers_list: list[int], repeats: int,
                   baseline: Path | None = None) -> dict[tuple[str, int], dict]:
    """Best of `repeats` interleaved rounds for each (pipeline, workers): lowest wall time, and
    separately the lowest CPU-bound time (the machine is shared: the two may come from different rounds).
    With a baseline checkout, its `make shards` ("before") runs in the same rounds."""
    best: dict[tuple[str, int], dict] = {}
    kinds = [("reference", REPO), ("ours", REPO)] + ([("before", baseline)] if baseline else [])
    for _ in range(repeats):
        for workers in workers_list:
            for kind, tree in kinds:
                result = run_once("ours" if kind == "before" else kind, recipe_path, workers, tree)
                kept = best.setdefault((kind, workers), dict(result))
                if result["seconds"] < kept["seconds"]:
                    kept.update({k: v for k, v in result.items() if k != "cpu_bound_s"})
                kept["cpu_bound_s"] = min(kept["cpu_bound_s"], result["cpu_bound_s"])
    for (kind, workers), r in best.items():
        if r["tokens"] != best[("reference", workers)]["tokens"]:
            raise SystemExit(f"token counts differ: reference {best[('reference', workers)]['tokens']} vs {kind} "
                             f"{r['tokens']}")
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--corpora", nargs="+", choices=["tuning", "held-aside"], default=["tuning", "held-aside"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--baseline", type=Path, help="another checkout whose `make shards` to run alongside ours")
    parser.add_argument("--no-write", action="store_true", help="print the table, do not touch BENCHMARKS.md")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "RECIPE", "WORKERS"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare", nargs=2, metavar=("DIR", "CORPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        one(args.one[0], Path(args.one[1]), int(args.one[2]))
        return
    if args.prepare:
        print(prepare(Path(args.prepare[0]), args.prepare[1]))
        return

    from bench.encode_corpora import CORPORA
    from bench.report import markdown_table, stamp, update_section

    names = {"tuning": next(k for k in CORPORA if k.startswith("tuning")),
             "held-aside": next(k for k in CORPORA if k.startswith("held"))}
    load_before = os.getloadavg()[0]
    rows, scaling = [], []
    for corpus in args.corpora:
        with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
            # In a subprocess too: Linux starts a child's ru_maxrss at its parent's, so this driver
            # must stay small for the children's peak RSS figures to be their own.
            subprocess.run([sys.executable, "-m", "bench.bench_shards", "--prepare", tmp, names[corpus]],
                           cwd=REPO, check=True, capture_output=True)
            best = measure_corpus(Path(tmp) / "bench.toml", args.workers, args.repeats, args.baseline)
        for workers in args.workers:
            ref, ours = best[("reference", workers)], best[("ours", workers)]
            pipelines = [("reference: tiktoken + Pool.imap", ref), ("**ours: make shards**", ours)]
            if args.baseline:
                pipelines.append(("before: make shards (--baseline)", best[("before", workers)]))
            for label, r in pipelines:
                rows.append([names[corpus], label, workers, f"{r['tokens']:,}", f"{r['seconds']:.2f}",
                             f"{r['tokens'] / r['seconds']:,.0f}", f"**{ref['seconds'] / r['seconds']:.2f}x**",
                             f"{r['cpu_bound_s']:.2f}", f"{ref['cpu_bound_s'] / r['cpu_bound_s']:.2f}x",
                             f"{r['worker_rss_mib']:.0f}", f"{r['main_rss_mib']:.0f}"])
        if 1 in args.workers and 2 in args.workers:
            parts = []
            for kind in ("ours", "reference", "before")[: 3 if args.baseline else 2]:
                one_, two = best[(kind, 1)], best[(kind, 2)]
                parts.append(f"{kind} {one_['seconds'] / two['seconds']:.2f}x wall, "
                             f"{one_['cpu_bound_s'] / two['cpu_bound_s']:.2f}x CPU-bound")
            scaling.append(f"{names[corpus]}: " + "; ".join(parts))
    table = markdown_table(["corpus", "pipeline", "workers", "tokens", "seconds", "tokens/s", "vs reference",
                            "CPU-bound s", "vs reference (CPU-bound)", "peak RSS/worker MiB",
                            "peak RSS main MiB"], rows)
    scaling_lines = "".join(f"- {line}\n" for line in scaling)
    text = (
        "## Shards (make shards)\n\n"
        f"{stamp()}\n\n"
        "End to end (read raw parquet, start workers, encode with GPT-2's vocabulary, write uint16 .npy) on the "
        "two corpora of bench/encode_corpora.py, built offline from files installed on the benchmark machine: "
        "the encoder was tuned on the first and only measured on the second. Every run starts with cold caches. "
        f"Best of {args.repeats} interleaved rounds, each run in a fresh process. Targets: ours >= 1.0x the reference "
        "with 1 and 2 workers, and 2 workers >= 1.6x 1 worker. Wall seconds are what the run took on the "
        "shared benchmark machine; CPU-bound seconds are what it would take on idle cores (see bench/bench_shards.py). "
        f"Load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.\n\n"
        + table + "\n\nScaling from 1 to 2 workers:\n" + scaling_lines
    )
    print(text)
    if not args.no_write:
        update_section("shards", text)


if __name__ == "__main__":
    main()
