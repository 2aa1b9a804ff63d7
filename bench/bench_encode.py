"""Encoding speed: our pure-Python encoder vs tiktoken (Rust), GPT-2 vocabulary, embedded corpus.

    python -m bench.bench_encode [--repeats 5] [--batch-copies 5] [--no-write]

Rows (same text for both encoders; outputs checked identical):
  - tiktoken encode_ordinary: the reference;
  - ours, cold: a fresh tokenizer's first pass (every word and chunk is new to the caches);
  - ours, warm: the same text again after one pass (what a long run converges to);
  - ours, half-warm: caches filled by the first half of the corpus, timed on the second half
    (new documents, familiar words: the honest middle ground);
  - two long single pieces, "a" * 100_000 and " " * 100_000 (the worst case for merging one piece);
  - encode_batch with 2 workers vs 1 process, three cases:
      * a large input of new text: every .py file of this interpreter's standard library (~30 MB
        of real, mostly distinct text: code, comments, docstrings), from cold caches -- what
        encoding a corpus once looks like;
      * the embedded corpus repeated --batch-copies times from warm caches (a long job's steady
        state: every word already known);
      * the embedded corpus once from cold caches (a small input: 1.7 MB);
    and the machine's own ceiling for it: two independent processes, each encoding the whole
    corpus x --batch-copies warm at the same time with no communication at all. 2 x (one alone) /
    (the slower of the two together) is the most any 2-process design can reach on these cores.
The machine is shared, so every measurement is repeated in interleaved rounds (reference and
ours back to back) and the best of the rounds is reported. The table goes into BENCHMARKS.md,
section "tokenizer-encode".
"""

from __future__ import annotations

import argparse
import os
import resource
import sysconfig
import time
from pathlib import Path

from bench.report import markdown_table, stamp, update_section


def timed(fn, setup=None) -> float:
    if setup is not None:
        setup()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_batch(tok, texts, workers: int, setup) -> tuple[float, float]:
    """(wall seconds, CPU-bound seconds) of one encode_batch call.

    CPU-bound seconds = the wall time this call would take on otherwise idle cores: the CPU time
    of the busiest process (this one, or one of its `workers - 1` equally loaded children), or the
    total CPU time spread over the cores, whichever is larger.
    """
    setup()
    child0 = _children_cpu()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    tok.encode_batch(texts, workers=workers)
    wall, cpu, child = time.perf_counter() - wall0, time.process_time() - cpu0, _children_cpu() - child0
    if workers == 1:
        return wall, cpu
    cores = min(os.cpu_count() or 1, workers)
    return wall, max(cpu, child / (workers - 1), (cpu + child) / cores)


def two_at_once(fn) -> float:
    """Run fn() in this process and in a forked copy at the same time; the slower one's seconds."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: report its time and leave
        os.close(read_fd)
        os.write(write_fd, repr(timed(fn)).encode())
        os._exit(0)
    os.close(write_fd)
    mine = timed(fn)
    theirs = float(os.read(read_fd, 64))
    os.waitpid(pid, 0)
    os.close(read_fd)
    return max(mine, theirs)


def stdlib_sources() -> list[str]:
    """Every .py file of the running interpreter's standard library, in path order (site-packages
    excluded): a large, real, offline corpus. Files that are not valid UTF-8 are decoded leniently."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    if len(paths) < 100:
        raise SystemExit(f"bench-encode: only {len(paths)} .py files under {root}; the large-input case needs "
                         "an interpreter whose standard library ships as source files")
    return [p.read_text(encoding="utf-8", errors="replace") for p in paths]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the best is reported")
    parser.add_argument("--batch-copies", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print the table, do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)

    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from pipelines.sources import python_docs
    from tokenizer import Tokenizer
    from tokenizer.gpt2_files import gpt2_package_files

    texts = python_docs.texts()
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    encoder_json, vocab_bpe = gpt2_package_files()
    tok = Tokenizer.from_gpt2_files(encoder_json, vocab_bpe)
    enc = tiktoken.Encoding("gpt2-offline", pat_str=tok.pattern,
                            mergeable_ranks=data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json)),
                            special_tokens=tok.special_tokens)
    reference = [enc.encode_ordinary(t) for t in texts]
    n_tokens = sum(map(len, reference))
    tok.clear_cache()
    assert [tok.encode_ordinary(t) for t in texts] == reference, "our encoding differs from tiktoken's"
    tok.clear_cache()
    assert tok.encode_batch(texts, workers=2) == reference, "encode_batch differs from tiktoken"

    half = len(texts) // 2
    first, second = texts[:half], texts[half:]
    second_bytes = sum(len(t.encode("utf-8")) for t in second)
    big = texts * args.batch_copies
    big_bytes = n_bytes * args.batch_copies
    long_texts = [('"a" * 100_000', "a" * 100_000), ('" " * 100_000', " " * 100_000)]

    def ours(xs):
        return lambda: [tok.encode_ordinary(t) for t in xs]

    def theirs(xs):
        return lambda: [enc.encode_ordinary(t) for t in xs]

    def warm_on(xs):
        def setup():
            tok.clear_cache()
            for t in xs:
                tok.encode_ordinary(t)
        return setup

    large = stdlib_sources()
    large_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in large)
    large_label = f"large input: stdlib sources ({len(large)} files, {large_bytes / 1e6:.1f} MB), cold caches"
    batch_cases = [(large_label, large, large_bytes, tok.clear_cache),
                   (f"corpus x {args.batch_copies}, warm caches", big, big_bytes, warm_on(texts)),
                   ("small input: corpus x 1 (new text), cold caches", texts, n_bytes, tok.clear_cache)]
    best: dict[object, float] = {}

    def keep(key, value: float) -> None:
        best[key] = min(best.get(key, float("inf")), value)

    for _ in range(args.repeats):
        keep("tiktoken", timed(theirs(texts)))
        keep("cold", timed(ours(texts), setup=tok.clear_cache))
        keep("warm", timed(ours(texts)))  # caches now hold the whole corpus
        keep("tiktoken half", timed(theirs(second)))
        keep("half", timed(ours(second), setup=warm_on(first)))
        for label, text in long_texts:
            keep(("long ref", label), timed(lambda text=text: enc.encode_ordinary(text)))
            keep(("long ours", label), timed(lambda text=text: tok.encode_ordinary(text), setup=tok.clear_cache))
        warm_on(texts)()
        keep("ceiling alone", timed(ours(big)))
        keep("ceiling together", two_at_once(ours(big)))
        for label, xs, _, setup in batch_cases:
            for workers in (1, 2):
                wall, cpu = timed_batch(tok, xs, workers, setup)
                keep(("wall", label, workers), wall)
                keep(("cpu", label, workers), cpu)

    def mbs(seconds: float, size: int = n_bytes) -> str:
        return f"{size / seconds / 1e6:.2f}"

    t_ref = best["tiktoken"]
    rows = [["tiktoken encode_ordinary (Rust)", f"{t_ref:.3f}", mbs(t_ref), "1.00x"]]
    for key, label in [("cold", "ours, cold (fresh caches, first pass)"), ("warm", "ours, warm (after one pass)")]:
        rows.append([label, f"{best[key]:.3f}", mbs(best[key]), f"{t_ref / best[key]:.2f}x"])
    rows.append(["ours, half-warm (2nd half, caches from 1st half)", f"{best['half']:.3f}",
                 mbs(best["half"], second_bytes), f"{best['tiktoken half'] / best['half']:.2f}x"])
    table = markdown_table(["encoder (GPT-2 vocab)", "seconds", "MB/s", "vs tiktoken"], rows)
    long_table = markdown_table(
        ["single piece", "ours (cold)", "tiktoken"],
        [[label, f"{best['long ours', label] * 1000:.0f} ms", f"{best['long ref', label] * 1000:.1f} ms"]
         for label, _ in long_texts])
    batch_rows = []
    for label, _, size, _ in batch_cases:
        wall1, wall2 = best["wall", label, 1], best["wall", label, 2]
        cpu1, cpu2 = best["cpu", label, 1], best["cpu", label, 2]
        batch_rows.append([label, f"{wall1:.3f}", f"{wall2:.3f}", mbs(wall2, size), f"{wall1 / wall2:.2f}x",
                           f"{cpu1:.3f} / {cpu2:.3f}", f"**{cpu1 / cpu2:.2f}x**"])
    alone, together = best["ceiling alone"], best["ceiling together"]
    batch_rows.append([f"ceiling: 2 independent processes, each all of corpus x {args.batch_copies}, warm",
                       f"{alone:.3f}", f"{together:.3f} (each)", mbs(together / 2, big_bytes),
                       f"{2 * alone / together:.2f}x", "-", "-"])
    batch_table = markdown_table(
        ["encode_batch", "1 process (s)", "2 workers (s)", "2 workers MB/s", "wall speed-up",
         "CPU-bound (s), 1 / 2", "CPU-bound speed-up"], batch_rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    markdown = "\n\n".join([
        "## Tokenizer: encoding speed (`make bench-encode`)",
        stamp(),
        f"Embedded python-docs corpus: {len(texts)} documents, {n_bytes / 1e6:.2f} MB UTF-8, {n_tokens:,} GPT-2 "
        f"tokens; outputs checked identical to tiktoken; best of {args.repeats} interleaved rounds (reference and "
        "ours back to back in each). Target: warm >= 0.8x tiktoken. The half-warm row encodes documents never "
        "seen before, with the words of the first half already cached.",
        table,
        long_table,
        "encode_batch with 2 workers (the calling process and one forked child claim guided-size jobs from a "
        "shared counter; the child copies packed ids into shared memory and the caller unpacks them, see "
        "tokenizer/parallel.py) vs 1 process. Target >= 1.7x on a large input. Cold: caches emptied before the "
        "call; warm: caches filled by one pass over the corpus first. "
        f"Load average at the end of the run: {load:.1f} on {os.cpu_count()} cores: other processes share the "
        "cores, so the wall speed-up is not what two free cores give. The CPU-bound speed-up divides the single "
        "process's CPU time by the larger of the busiest process's CPU time and the total CPU time spread over "
        "the cores. What 2 workers cannot split: the caller alone makes the Python ints of every id (~15% of a "
        "warm encode), and with cold caches each process learns the words it meets by itself, so common words "
        "are learned twice. On a small cold input that dominates: encoding half of the corpus from cold caches "
        "costs ~70% of encoding all of it. The last row is the ceiling of these two cores for this work: two "
        "processes that share nothing, each encoding the whole input, slow each other down (shared caches and "
        "memory bandwidth, and on a VM whatever the host does); it is measured in the same rounds.",
        batch_table,
    ])
    print(markdown)
    if not args.no_write:
        update_section("tokenizer-encode", markdown)


if __name__ == "__main__":
    main()
