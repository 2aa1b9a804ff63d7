"""Bounded memory: the data and shards stages stream, so their peak RSS does not grow with the corpus.

Each stage runs over a synthetic corpus of ~5 MB and one 4x larger, in a fresh interpreter, and
reports its own peak. Measuring that peak needs care:
- Linux carries a process's high-water mark across exec, so `ru_maxrss` of a child started from
  this (large) pytest process starts at pytest's size. The probe reads VmHWM from
  /proc/self/status instead (the peak of the address space the stage built after exec), and
  RUSAGE_CHILDREN for its worker processes (forked by the stage, reaped before it exits).
- Allocator caches make that peak jitter by 20-40 MB from run to run, with no data held: Arrow's
  mimalloc pool keeps freed pages, and glibc gives each reading thread its own arena. The probe
  runs with Arrow on the system allocator and one glibc arena, so the peak is what the code
  holds and a few MB of margin suffice (measured: +1..6 MB for 4x the corpus).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import write_recipe

from contract.recipe import load_recipe
from pipelines import learn_tokenizer

REPO = Path(__file__).resolve().parent.parent
SIZES_MB = (5, 20)
# Allowed growth of the peak from the small to the 4x corpus. What it catches: holding the texts
# (+15 MB), all token ids even as uint16 (+25 MB), or a reader buffering a whole file (+19 MB:
# datasets' parquet streaming before pipelines/sources/local.py read it per row group).
MARGIN_MB = 8

PROBE = r"""
import importlib, json, resource, sys
stage = importlib.import_module(sys.argv[1])
rc = stage.main(sys.argv[2:])
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"rc": rc, "self_mb": int(status["VmHWM"].split()[0]) / 1024,
                  "workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def write_corpus(path: Path, megabytes: int, seed: int) -> None:
    """Documents of ~4 KB drawn from a 400-word vocabulary, written row group by row group."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(400)]
    written, doc = 0, 0
    with pq.ParquetWriter(path, pa.schema([("text", pa.string()), ("id", pa.string())])) as writer:
        while written < megabytes * 1_000_000:
            texts = [" ".join(rng.choices(words, k=rng.randint(500, 900))) for _ in range(250)]
            writer.write_table(pa.table({"text": texts, "id": [f"doc{doc + i:07d}" for i in range(len(texts))]}))
            written += sum(map(len, texts))
            doc += len(texts)


def peak_mb(stage: str, recipe: Path) -> dict:
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_ARENA_MAX": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, stage, "--config", str(recipe), "--no-progress"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0, out.stderr[-2000:]
    return report


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Peak memory of `make data` then `make shards` (2 workers) for each corpus size."""
    results = {}
    for mb in SIZES_MB:
        root = tmp_path_factory.mktemp(f"corpus{mb}")
        write_corpus(root / "in.parquet", mb, seed=mb)
        recipe = write_recipe(root, data={"source": "local", "paths": [str(root / "in.parquet")], "id_field": "id",
                                          "rows_per_file": 5000},
                              tokenizer={"vocab_size": 300, "max_characters": 50_000, "heldout_documents": 0},
                              shards={"shard_tokens": 200_000, "val_fraction": 0.01, "workers": 2})
        data_peak = peak_mb("pipelines.data", recipe)
        learn_tokenizer.run(load_recipe(recipe), progress_bar=False, log=lambda *a: None)
        shards_peak = peak_mb("pipelines.shards", recipe)
        manifest = json.loads((load_recipe(recipe).stage_dir("shards") / "manifest.json").read_text())
        tokens = sum(split["tokens"] for split in manifest["splits"].values())
        results[mb] = {"data": data_peak, "shards": shards_peak, "tokens": tokens}
    return results


def test_the_big_corpus_really_is_bigger(runs):
    small, big = (runs[mb]["tokens"] for mb in SIZES_MB)
    assert 3.5 < big / small < 4.5


@pytest.mark.parametrize("stage", ["data", "shards"])
def test_peak_rss_does_not_grow_with_the_corpus(runs, stage):
    small, big = (runs[mb][stage] for mb in SIZES_MB)
    report = f"{stage}: peak {small['self_mb']:.0f} -> {big['self_mb']:.0f} MB (workers {small['workers_mb']:.0f} " \
             f"-> {big['workers_mb']:.0f} MB) for a {SIZES_MB[1] // SIZES_MB[0]}x larger corpus"
    assert big["self_mb"] - small["self_mb"] < MARGIN_MB, report
    if stage == "shards":   # the encoding workers stay flat too
        assert big["workers_mb"] - small["workers_mb"] < MARGIN_MB, report
    print(report)
