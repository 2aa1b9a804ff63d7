"""`make tokenizer` on a Ray cluster: pre-tokens counted by tasks (a map), added up (a reduce), merges
learned on the driver, where the counts end up.

The local stage trains on a prefix of the corpus: the first documents, each cut to `max_chars_per_doc`,
until `max_characters` characters are taken (the last document cut to what is left), never one of the
held-out documents at the end. Here the driver first finds that prefix from the parquet files alone: the
text column's lengths (`pyarrow.compute.utf8_length`, Python's len() computed in C, no str made) say
which documents are taken and where the last one is cut. The prefix is cut into slices of whole row
groups, one task each; a task reads its documents, cuts them exactly as the local stage does and counts
their pre-tokens with the local counting function (`tokenizer.pretokenize.count_chunk`).

Why the merges come out identical. BPE training sees the corpus only through the table {pre-token:
count}. Counting is exact wherever it runs (documents are split one by one, so no pre-token spans two),
and sums do not depend on how the documents were grouped. The driver adds the tables up in slice order,
so even the table's key order is the local one (keys in the order the corpus first shows them), and the
same merge loop (`train_bpe_from_counts`) runs on the same table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contract.raw import raw_files
from pipelines.executors import ray_cluster

SLICE_CHARS = 8 << 20      # characters per counting task, at most (~1 GB of pre-tokens per hour per core)
SLICES_AT_LEAST = 64       # a small corpus is cut finer, so that every CPU of a cluster gets some of it


@dataclass(frozen=True)
class GroupSlice:
    """The first `rows` documents of one row group, the last of them cut to `last_chars` when given."""

    file: str
    row_group: int
    rows: int
    last_chars: int | None


@dataclass
class TrainingPrefix:
    """The local stage's training documents, as row-group slices in corpus order."""

    groups: list[GroupSlice]
    chars: list[int]        # characters taken from each group
    documents: int

    @classmethod
    def find(cls, raw_dir: Path, n_train_docs: int, budget: int, per_doc_cap: int) -> TrainingPrefix:
        """The same documents, cut the same way, as `learn_tokenizer.training_texts` yields them."""
        groups, chars, documents, left = [], [], 0, budget
        for path in raw_files(raw_dir):
            pf = pq.ParquetFile(path)
            for g in range(pf.num_row_groups):
                if documents >= n_train_docs or left <= 0:
                    return cls(groups, chars, documents)
                rows = min(pf.metadata.row_group(g).num_rows, n_train_docs - documents)
                text = pf.read_row_group(g, columns=["text"], use_threads=False).column("text")
                lengths = pc.utf8_length(text).to_numpy(zero_copy_only=False)[:rows].astype(np.int64)
                if per_doc_cap:
                    lengths = np.minimum(lengths, per_doc_cap)
                before = np.cumsum(lengths) - lengths          # characters taken before each document
                taken = int(np.searchsorted(before, left, side="left"))   # documents that start with some left
                last = min(int(lengths[taken - 1]), left - int(before[taken - 1])) if taken else 0
                cut = last if taken and last < lengths[taken - 1] else None
                used = (int(before[taken - 1]) + last) if taken else 0
                groups.append(GroupSlice(str(path.resolve()), g, taken, cut))
                chars.append(used)
                documents += taken
                left -= used
        return cls(groups, chars, documents)

    @property
    def total_chars(self) -> int:
        return sum(self.chars)

    def slices(self) -> list[list[int]]:
        """Consecutive groups, about the same number of characters each: the tasks."""
        target = max(1, min(SLICE_CHARS, self.total_chars // SLICES_AT_LEAST))
        slices, current, size = [], [], 0
        for i, n in enumerate(self.chars):
            current.append(i)
            size += n
            if size >= target:
                slices.append(current)
                current, size = [], 0
        if current:
            slices.append(current)
        return slices


def training_documents(groups: list[GroupSlice], per_doc_cap: int) -> list[str]:
    """The documents of some slices, capped and cut exactly as `learn_tokenizer.training_texts` does."""
    docs = []
    for group in groups:
        table = pq.ParquetFile(group.file).read_row_group(group.row_group, columns=["text"], use_threads=False)
        texts = table.column("text").to_pylist()[: group.rows]
        if per_doc_cap:
            texts = [t[:per_doc_cap] for t in texts]
        if group.last_chars is not None:
            texts[-1] = texts[-1][: group.last_chars]
        docs += texts
    return docs


def count_slice(groups: list[GroupSlice], per_doc_cap: int, pattern: str) -> dict[bytes, int]:
    """The task: {pre-token: count} over its documents, counted by the local stage's own function."""
    from tokenizer.pretokenize import count_chunk

    return count_chunk(training_documents(groups, per_doc_cap), pattern)


def add_counts(total: dict[bytes, int], part: dict[bytes, int]) -> None:
    """The reduce: new pre-tokens keep the order in which the corpus first shows them."""
    get = total.get
    for piece, n in part.items():
        total[piece] = get(piece, 0) + n


def count_on_ray(prefix: TrainingPrefix, per_doc_cap: int, pattern: str, log, progress_bar: bool) -> dict[bytes, int]:
    """{pre-token: count} over the training prefix: counted by tasks on the cluster, added up here in order."""
    from tokenizer.progress import Progress

    slices = prefix.slices()
    task = ray_cluster.remote(count_slice)

    def submit(i: int):
        return task.remote([prefix.groups[g] for g in slices[i]], per_doc_cap, pattern)

    total: dict[bytes, int] = {}
    finished: dict[int, dict[bytes, int]] = {}
    added = 0
    with ray_cluster.connected() as cluster:
        log(f"tokenizer: {cluster.describe()}; counting pre-tokens in {len(slices)} task(s)")
        with Progress(prefix.total_chars, unit="chars", desc="pre-tokenising", enabled=progress_bar) as bar:
            for i, counts in ray_cluster.as_completed(range(len(slices)), submit, cluster.window):
                finished[i] = counts
                bar.update(sum(prefix.chars[g] for g in slices[i]))
                while added in finished:   # in slice order: the key order of the local count
                    add_counts(total, finished.pop(added))
                    added += 1
    return total


def train_on_ray(raw_dir: Path, cfg: dict[str, Any], n_train_docs: int, name: str, log, progress_bar: bool):
    """The tokenizer the local stage's `Tokenizer.train` would make, with the counting done on Ray.
    Returns (tokenizer, documents trained on, characters trained on, seconds)."""
    from tokenizer import Tokenizer
    from tokenizer.learn_bpe import train_bpe_from_counts
    from tokenizer.pattern import GPT2_PATTERN

    prefix = TrainingPrefix.find(raw_dir, n_train_docs, cfg["max_characters"], cfg["max_chars_per_doc"])
    log(f"tokenizer: training vocab {cfg['vocab_size']} on {prefix.total_chars:,} characters of "
        f"{prefix.documents} documents")
    t0 = time.perf_counter()
    counts = count_on_ray(prefix, cfg["max_chars_per_doc"], GPT2_PATTERN, log, progress_bar)
    # What Tokenizer.train does after counting: merges for the ordinary vocabulary, then the special
    # tokens after it, in the order given (duplicates dropped).
    specials = list(dict.fromkeys(cfg["special_tokens"]))
    result = train_bpe_from_counts(counts, cfg["vocab_size"] - len(specials), progress=progress_bar)
    vocab = result.vocab
    tok = Tokenizer({token: i for i, token in enumerate(vocab)}, {s: len(vocab) + k for k, s in enumerate(specials)},
                    GPT2_PATTERN, [(vocab[a], vocab[b]) for a, b in result.merges], name)
    return tok, prefix.documents, prefix.total_chars, time.perf_counter() - t0
