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
--repeats (CPU seconds: the machine is shared). The last column is the ratio to tiktoken a cold pass
would have with that step and the ones below it free, plus what turning packed ids into a list costs
(encode_ordinary's output, which tiktoken's also is): the ceiling that any speed-up of those steps
can reach. Results go to BENCHMARKS.md, section "encode-cost".
"""

from __future__ import annotations

import argparse
import os
import struct
import time

from bench.report import markdown_table, stamp, update_section

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


def measure(corpus: str, texts: list[str], tok, enc, repeats: int) -> tuple[str, str]:
    from tokenizer.bpe import ChunkCache

    real = tok._cache
    if type(real) is not ChunkCache:
        raise SystemExit("encode-cost: needs GPT-2's pattern (the chunk cache)")
    ranks = real.ranks
    caches = [(label, cls(ranks, real.typecode, real.split_pieces)) for label, cls in _variants(ChunkCache, ranks)]
    caches.append(("the real pass: + merging new pieces that are not tokens", real))
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    best: dict[str, float] = {}

    def keep(key: str, seconds: float) -> None:
        best[key] = min(best.get(key, float("inf")), seconds)

    def timed(fn) -> float:
        t0 = time.process_time()
        fn()
        return time.process_time() - t0

    packed = tok._packed_ordinary
    try:
        for _ in range(repeats):
            keep("tiktoken", timed(lambda: [enc.encode_ordinary(t) for t in texts]))
            for label, cache in caches:
                cache.clear()
                tok._cache = cache
                keep(label, timed(lambda: [packed(t) for t in texts]))
            tok._cache = real
            out = [packed(t) for t in texts]  # warm now: what making the lists costs

            def make_lists(out=out):
                return [memoryview(p).cast(real.typecode).tolist() for p in out]

            keep("tolist", timed(make_lists))
    finally:
        tok._cache = real
    tiktoken, tolist = best["tiktoken"], best["tolist"]
    rows, previous = [], None
    for label, _ in caches:
        seconds = best[label]
        step = "-" if previous is None else f"{seconds - previous:+.3f}"
        rows.append([label, f"{seconds:.3f}", step, f"{seconds / best[caches[-1][0]]:.0%}",
                     f"{tiktoken / (seconds + tolist):.2f}x"])
        previous = seconds
    rows.append(["making the list of ints (memoryview.tolist, any pass)", f"{tolist:.3f}", "-", "-", "-"])
    rows.append(["tiktoken encode_ordinary (Rust), per document", f"{tiktoken:.3f}", "-", "-", "1.00x"])
    note = f"{corpus}: {len(texts):,} documents, {n_bytes / 1e6:.1f} MB UTF-8, GPT-2's vocabulary."
    table = markdown_table(["cold pass, packed ids, up to and including", "CPU s", "step", "of the real pass",
                            "vs tiktoken, with the steps below free (+ the list)"], rows)
    return note, table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the best is reported")
    parser.add_argument("--no-write", action="store_true", help="print the tables, do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)

    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from bench.encode_corpora import CORPORA
    from tokenizer import Tokenizer
    from tokenizer.gpt2_files import gpt2_package_files

    encoder_json, vocab_bpe = gpt2_package_files()
    tok = Tokenizer.from_gpt2_files(encoder_json, vocab_bpe)
    enc = tiktoken.Encoding("gpt2-offline", pat_str=tok.pattern,
                            mergeable_ranks=data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json)),
                            special_tokens=tok.special_tokens)
    parts = []
    for corpus, build in CORPORA.items():
        note, table = measure(corpus, build(), tok, enc, args.repeats)
        parts.append(f"{note}\n\n{table}")
        print(parts[-1], flush=True)
    text = (
        "## Tokenizer: where a cold pass goes (`make bench-encode-cost`)\n\n"
        f"{stamp()}\n\n"
        "Our first pass over unseen text (one call per document, packed ids, fresh caches) with the miss path "
        "cut short after each of its steps (bench/encode_cost.py): each row adds one step, \"step\" is what it "
        "costs. The last column is the ceiling: the ratio to tiktoken if the steps below that row cost nothing. "
        f"CPU seconds, best of {args.repeats} interleaved rounds; 1-minute load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.\n\n" + "\n\n".join(parts)
    )
    if not args.no_write:
        update_section("encode-cost", text)


if __name__ == "__main__":
    main()
