"""Where a cold pass goes: our encoder's first pass over unseen text, taken apart step by step.

    python -m bench.encode_cost [--repeats 5] [--no-write]

bench_encode.py says how fast a cold pass is against tiktoken; this says what it is made of, so that
the next attempt at making it faster starts from measurements rather than guesses. The same pass
(one call per document, packed ids, a fresh cache) is run with the chunk cache's miss path cut short
at each of its steps in turn (bpe.ChunkCache.__missing__, "Caches" and "Misses" in bpe.py):

  1. chunks only: the chunk regex, one lookup per chunk, and on a miss a placeholder stored for the
     chunk. Every pass does this much, warm or cold;
  2. + splitting: a new chunk is also cut into pieces by the piece regex;
  3. + pieces: each piece is looked up, a new one that is a whole token learned, a new one that is
     not stored with a placeholder instead of its merges, and the chunk's ids joined;
  4. the real pass: + merging the new pieces that are not tokens (bpe.bpe_ids).

The steps' costs are the differences between consecutive rows. The variants run on the real
tokenizer's splitters and rank table; their outputs are wrong on purpose (placeholders), so they live
here and not in tokenizer/. Every row runs in the same interleaved rounds, reference first, best of
--repeats (CPU seconds: the machine is shared), each pass in a fresh process (see in_fresh_process).
The last column is the ratio to tiktoken a cold pass
would have with that step and the ones below it free, plus what turning packed ids into a list costs
(encode_ordinary's output, which tiktoken's also is): the ceiling that any speed-up of those steps
can reach. Results go to BENCHMARKS.md, section "encode-cost".
"""

from __future__ import annotations

import argparse
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import markdown_table, stamp, update_section

REPO = Path(__file__).resolve().parent.parent
PLACEHOLDER = b"\0\0"  # two bytes of packed ids standing for whatever the skipped steps would give


def _variants(ChunkCache, ranks: dict[bytes, int]):
    """ChunkCache subclasses whose miss path stops after one more step each (see the module doc)."""
    pack_id = struct.Struct("=H").pack  # GPT-2's ids fit uint16

    class ChunksOnly(ChunkCache):
        def __missing__(self, chunk):
            self[chunk] = PLACEHOLDER
            return PLACEHOLDER

    class PlusSplitting(ChunkCache):
        def __missing__(self, chunk):
            self.split_pieces(chunk)
            self[chunk] = PLACEHOLDER
            return PLACEHOLDER

    class PlusPieces(ChunkCache):
        def __missing__(self, chunk):
            parts = []
            for piece in self.split_pieces(chunk):
                ids = self.get(piece)
                if ids is None:
                    rank = ranks.get(piece.encode("utf-8"))
                    ids = self[piece] = pack_id(rank) if rank is not None else PLACEHOLDER
                parts.append(ids)
            ids = self[chunk] = b"".join(parts)
            return ids

    return [("chunks only", ChunksOnly), ("+ splitting new chunks into pieces", PlusSplitting),
            ("+ looking pieces up, learning whole-token ones, joining", PlusPieces)]


STEPS = ["chunks only", "+ splitting new chunks into pieces", "+ looking pieces up, learning whole-token ones, joining",
         "the real pass: + merging new pieces that are not tokens"]
TOLIST = "making the list of ints (memoryview.tolist, any pass)"
TIKTOKEN = "tiktoken encode_ordinary (Rust), per document"


def one_pass(kind: str, texts: list[str]) -> float:
    """CPU seconds of one pass of `kind` (a STEPS label, TOLIST or TIKTOKEN) over `texts`, from a
    fresh cache; building the tokenizers is not timed."""
    from bench.bench_encode import gpt2_and_tiktoken
    from tokenizer.bpe import ChunkCache

    tok, enc = gpt2_and_tiktoken()
    real = tok._cache
    if kind == TIKTOKEN:
        t0 = time.process_time()
        for text in texts:
            enc.encode_ordinary(text)
        return time.process_time() - t0
    packed = tok._packed_ordinary
    if kind == TOLIST:
        out = [packed(text) for text in texts]
        t0 = time.process_time()
        for ids in out:
            memoryview(ids).cast(real.typecode).tolist()
        return time.process_time() - t0
    variants = dict(_variants(ChunkCache, real.ranks))
    if kind in variants:
        tok._cache = variants[kind](real.ranks, real.typecode, real.split_pieces)
    elif kind != STEPS[-1]:
        raise ValueError(f"encode-cost: unknown kind {kind!r}")
    t0 = time.process_time()
    for text in texts:
        packed(text)
    return time.process_time() - t0


def in_fresh_process(kind: str, texts_file: Path) -> float:
    """one_pass in a new interpreter: every pass starts from a fresh heap. (In one long process each
    cold pass leaves the allocator's memory scattered for the next one, which then runs measurably
    slower, and whichever row runs first would look cheapest.)"""
    out = subprocess.run([sys.executable, "-m", "bench.encode_cost", "--one", kind, str(texts_file)],
                         cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(corpus: str, texts: list[str], repeats: int, run=None) -> tuple[str, str]:
    """Best of `repeats` interleaved rounds of every row; `run(kind, texts)` times one pass (by
    default in a fresh process each)."""
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="encode_cost_") as tmp:
        texts_file = Path(tmp) / "texts.pickle"
        if run is None:
            texts_file.write_bytes(pickle.dumps(texts))

            def run(kind, _texts):
                return in_fresh_process(kind, texts_file)

        for _ in range(repeats):
            for kind in [TIKTOKEN, *STEPS, TOLIST]:
                best[kind] = min(best.get(kind, float("inf")), run(kind, texts))
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    tiktoken, tolist, whole = best[TIKTOKEN], best[TOLIST], best[STEPS[-1]]
    rows, previous = [], None
    for label in STEPS:
        seconds = best[label]
        step = "-" if previous is None else f"{seconds - previous:+.3f}"
        rows.append([label, f"{seconds:.3f}", step, f"{seconds / whole:.0%}", f"{tiktoken / (seconds + tolist):.2f}x"])
        previous = seconds
    rows.append([TOLIST, f"{tolist:.3f}", "-", "-", "-"])
    rows.append([TIKTOKEN, f"{tiktoken:.3f}", "-", "-", "1.00x"])
    note = f"{corpus}: {len(texts):,} documents, {n_bytes / 1e6:.1f} MB UTF-8, GPT-2's vocabulary."
    table = markdown_table(["cold pass, packed ids, up to and including", "CPU s", "step", "of the real pass",
                            "vs tiktoken, with the steps below free (+ the list)"], rows)
    return note, table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the best is reported")
    parser.add_argument("--no-write", action="store_true", help="print the tables, do not touch BENCHMARKS.md")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "TEXTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        print(one_pass(args.one[0], pickle.loads(Path(args.one[1]).read_bytes())))
        return

    from bench.encode_corpora import CORPORA

    parts = []
    for corpus, build in CORPORA.items():
        note, table = measure(corpus, build(), args.repeats)
        parts.append(f"{note}\n\n{table}")
        print(parts[-1], flush=True)
    text = (
        "## Tokenizer: where a cold pass goes (`make bench-encode-cost`)\n\n"
        f"{stamp()}\n\n"
        "Our first pass over unseen text (one call per document, packed ids, fresh caches) with the miss path "
        "cut short after each of its steps (bench/encode_cost.py): each row adds one step, \"step\" is what it "
        "costs. The last column is the ceiling: the ratio to tiktoken if the steps below that row cost nothing. "
        f"CPU seconds, best of {args.repeats} interleaved rounds, each pass in a fresh process; 1-minute load "
        f"average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.\n\n" + "\n\n".join(parts)
    )
    if not args.no_write:
        update_section("encode-cost", text)


if __name__ == "__main__":
    main()
