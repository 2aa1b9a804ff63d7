"""Shards throughput: our `make shards` stage vs a build-nanogpt-style tiktoken pipeline.

    python -m bench.bench_shards [--repeats 2] [--copies 1 2] [--workers 1 2] [--no-write]

Both pipelines turn the same raw parquet files (the embedded python-docs corpus, and the corpus
twice with fresh ids) into uint16 .npy shards with GPT-2's vocabulary, each document
preceded by <|endoftext|>, and are timed end to end: reading the raw files, starting the worker
processes, encoding, writing the shards.

Why both sizes: our encoder caches the ids of every chunk and piece it has seen, so it starts cold
and speeds up as it goes (on a real 10B-token run it is warm nearly all the time); tiktoken has no
such warm-up. x1 is the cold case, x2 shows the second pass through familiar words.

- ours: pipelines.shards.run (pure-Python BPE in worker processes that read row groups
  themselves, ordered windowed results, manifest with sha256 of every shard);
- reference: the way build-nanogpt's fineweb.py works: tiktoken's Rust encoder (GPT-2 built
  offline from the same files), multiprocessing.Pool.imap(tokenize, docs, chunksize=16), each
  result converted to a uint16 array and copied into a preallocated shard buffer, np.save per shard.

Every run happens in a fresh subprocess, so `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` is the
peak resident memory of the largest worker of exactly that run (for 1 worker, ours encodes in the
main process: its own peak is reported). Results go to BENCHMARKS.md, section "shards".
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
def prepare(root: Path, copies: int) -> Path:
    """A recipe whose raw/ holds the corpus `copies` times and whose tokenizer/ is GPT-2."""
    from contract import manifest as mf
    from contract.recipe import load_recipe
    from pipelines.data import ROW_GROUP_ROWS
    from pipelines.data import run as run_data
    from tokenizer import Tokenizer

    recipe_path = root / "bench.toml"
    recipe_path.write_text(
        f'name = "bench"\nartifacts_root = "{root}"\n[data]\nsource = "python-docs"\nrows_per_file = 5000\n'
        f'[shards]\nformat = "npy"\nshard_tokens = {SHARD_TOKENS}\nval_documents = 0\n',
        encoding="utf-8",
    )
    recipe = load_recipe(recipe_path)
    run_data(recipe, progress_bar=False, log=lambda *a: None)
    raw = recipe.stage_dir("raw")
    if copies > 1:  # more text, same distribution: the corpus again with fresh ids
        import pyarrow.parquet as pq

        files = [raw / o["path"] for o in mf.read_manifest(raw)["outputs"]]
        tables = [pq.read_table(p) for p in files]
        outputs = []
        for c in range(copies):
            for i, table in enumerate(tables):
                ids = [f"copy{c}:{x}" for x in table.column("id").to_pylist()]
                path = raw / f"part-{c:02d}{i:03d}.parquet"
                pq.write_table(table.set_column(1, "id", [ids]), path, row_group_size=ROW_GROUP_ROWS)
                outputs.append(path)
        for p in files:
            if p not in outputs:
                p.unlink()
        manifest = mf.read_manifest(raw)
        manifest["outputs"] = [mf.output_entry(p, raw) for p in outputs]
        mf.write_manifest(raw, manifest)

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
    """Subprocess entry: one timed run, printed as JSON with peak RSS figures (MiB)."""
    result = (run_ours if kind == "ours" else run_reference)(recipe_path, workers)
    to_mib = 1 / 1024  # ru_maxrss is in KiB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mib
    main_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mib
    # one worker of ours runs in the main process; the reference always has a pool
    result["worker_rss_mib"] = main_rss if (kind == "ours" and workers == 1) else children
    result["main_rss_mib"] = main_rss
    print(json.dumps(result))


def measure(kind: str, recipe_path: Path, workers: int, repeats: int) -> dict:
    best = None
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-m", "bench.bench_shards", "--one", kind, str(recipe_path),
                              str(workers)], cwd=REPO, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    best["tokens_per_s"] = best["tokens"] / best["seconds"]
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 2], help="corpus sizes (copies of the corpus)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-write", action="store_true", help="print the table, do not touch BENCHMARKS.md")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "RECIPE", "WORKERS"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare", nargs=2, metavar=("DIR", "COPIES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        one(args.one[0], Path(args.one[1]), int(args.one[2]))
        return
    if args.prepare:
        print(prepare(Path(args.prepare[0]), int(args.prepare[1])))
        return

    from bench.report import markdown_table, stamp, update_section

    load_before = os.getloadavg()[0]
    rows, scaling = [], []
    for copies in args.copies:
        with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
            # In a subprocess too: Linux starts a child's ru_maxrss at its parent's, so this driver
            # must stay small for the children's peak RSS figures to be their own.
            subprocess.run([sys.executable, "-m", "bench.bench_shards", "--prepare", tmp, str(copies)],
                           cwd=REPO, check=True, capture_output=True)
            recipe_path = Path(tmp) / "bench.toml"
            results = {}
            for workers in args.workers:
                ref = measure("reference", recipe_path, workers, args.repeats)
                ours = measure("ours", recipe_path, workers, args.repeats)
                if ref["tokens"] != ours["tokens"]:
                    raise SystemExit(f"token counts differ: reference {ref['tokens']} vs ours {ours['tokens']}")
                results[workers] = (ref, ours)
                for name, r in (("reference: tiktoken + Pool.imap", ref), ("**ours: make shards**", ours)):
                    rows.append([f"x{copies}", name, workers, f"{r['tokens']:,}", f"{r['seconds']:.2f}",
                                 f"{r['tokens_per_s']:,.0f}", f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x",
                                 f"{r['worker_rss_mib']:.0f}", f"{r['main_rss_mib']:.0f}"])
        if 1 in results and 2 in results:
            s_ours = results[2][1]["tokens_per_s"] / results[1][1]["tokens_per_s"]
            s_ref = results[2][0]["tokens_per_s"] / results[1][0]["tokens_per_s"]
            scaling.append(f"corpus x{copies}: ours {s_ours:.2f}x, reference {s_ref:.2f}x")
    table = markdown_table(["corpus", "pipeline", "workers", "tokens", "seconds", "tokens/s", "vs reference",
                            "peak RSS/worker MiB", "peak RSS main MiB"], rows)
    scaling_line = f"Scaling from 1 to 2 workers: {'; '.join(scaling)}.\n" if scaling else ""
    text = (
        "## Shards (make shards)\n\n"
        f"{stamp()}\n\n"
        f"End to end (read raw parquet, start workers, encode with GPT-2's vocabulary, write uint16 .npy), "
        f"embedded python-docs corpus (x2: twice, fresh ids), best of {args.repeats} runs, each in a fresh "
        "process. Target: ours >= 0.8x the reference. Our encoder warms its caches as it goes (cold in x1). "
        f"Load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} (parallel work on the same "
        "cores flattens the scaling figures).\n\n"
        + table + "\n\n" + scaling_line
    )
    print(text)
    if not args.no_write:
        update_section("shards", text)


if __name__ == "__main__":
    main()
