"""Statistics of token shards, computed through ShardReader: document lengths, token counts, their histogram.

`make inspect` (pipelines/inspect.py) and the shard browser of the service (service/pages_shards.py) both
report them, so they are computed here, once, below both. Everything reads the memory-mapped shards in
bounded pieces; none of it loads a whole shard into memory:

- document lengths come from the document index alone (where each piece starts) plus ONE token per
  shard: a piece that does not begin with the end-of-text token is a continuation of the previous
  shard's last document, and by the format's invariant only a shard's first piece can be one
  (contract/shard_format.py). So the lengths of ten million documents cost a pass over the index
  files, not over the 20 GB of tokens behind them.
- token counts are a bincount in chunks of COUNT_CHUNK tokens; `per_shard` caps how many tokens of
  each shard are counted, for callers that want a sample spread over every shard rather than a pass
  over the whole split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from contract.shard_format import ShardFormatError, ShardReader

# Tokens per bincount. bincount works on an int64 copy of what it counts: 8 MB for this many tokens. The
# per-call cost is a pass over the vocabulary-sized result, negligible beside a million tokens.
COUNT_CHUNK = 1 << 20
HISTOGRAM_BINS = 50


def _no_check() -> None:
    return None


def document_lengths(reader: ShardReader, entries: Sequence[dict[str, Any]],
                     check: Callable[[], None] = _no_check) -> np.ndarray:
    """Tokens per document (eot included), in order, a document cut by shard boundaries counted once.

    `entries` are consecutive shards of one split. `check` is called before each shard (a caller's
    budget: it may raise to stop the work)."""
    parts: list[np.ndarray] = []   # per shard, the lengths of the documents that begin in it
    for entry in entries:
        check()
        _, starts = reader.shard_pieces(entry)
        n_tokens = int(entry["tokens"])
        if len(starts) == 0 or n_tokens == 0:
            continue
        pieces = np.diff(np.append(starts, n_tokens))
        continues = reader.shard_tokens(entry)[0] != reader.eot_id   # one token read per shard
        if continues:
            if parts:   # the last document begun so far is the one this piece continues
                parts[-1][-1] += pieces[0]
            # else: the entries start mid-document (inspect on one shard file): that piece has no document here
            pieces = pieces[1:]
        if len(pieces):
            parts.append(pieces.astype(np.int64))   # a fresh array: the += above never writes into the index
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def token_counts(reader: ShardReader, entries: Sequence[dict[str, Any]], per_shard: int | None = None,
                 check: Callable[[], None] = _no_check) -> tuple[np.ndarray, int]:
    """(how often each id occurs, how many tokens were counted), over the first `per_shard` tokens of each
    shard (all of them when None).

    An id outside the vocabulary means a damaged shard (nothing else may have looked, e.g. inspect
    --no-verify): said in one line naming the shard, before anything tries to decode it."""
    counts = np.zeros(reader.vocab_size, dtype=np.int64)
    counted = 0
    for entry in entries:
        tokens = reader.shard_tokens(entry)
        if per_shard is not None:
            tokens = tokens[:per_shard]
        for i in range(0, len(tokens), COUNT_CHUNK):
            check()
            chunk_counts = np.bincount(tokens[i : i + COUNT_CHUNK], minlength=reader.vocab_size)
            if len(chunk_counts) > reader.vocab_size:
                raise ShardFormatError(
                    f"{reader.root / entry['path']}: holds id {len(chunk_counts) - 1}, outside the vocabulary of "
                    f"{reader.vocab_size} (corrupt shard; `make shards VERIFY=1` re-encodes it)")
            counts += chunk_counts
        counted += len(tokens)
    return counts, counted


def log_bins(lengths: Sequence[np.ndarray], n_bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Bin edges equally wide on a log axis, from the shortest to the longest document of all splits.

    Document lengths span four orders of magnitude (a one-line docstring, a whole manual page); on a
    linear axis everything but the longest documents would sit in the first bin."""
    present = [v for v in lengths if len(v)]
    if not present:
        return np.array([1.0, 2.0])
    low = max(1, min(int(v.min()) for v in present))
    high = max(2, max(int(v.max()) for v in present))
    edges = np.logspace(np.log10(low), np.log10(high), n_bins)
    # 10 ** log10(x) can come back a hair below x: the longest document would fall outside the last bin
    edges[0], edges[-1] = low, high
    return edges


def length_histogram(lengths_by_split: dict[str, np.ndarray], n_bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """The histogram `make inspect` draws, as data: shared log bins and, per split, each bin's share of the
    split's documents (its shares sum to 1), so a 100-document split and a 4,000-document one compare
    directly; the counts are kept beside the shares."""
    edges = log_bins(list(lengths_by_split.values()), n_bins)
    splits = {}
    for split, lengths in lengths_by_split.items():
        counts = np.histogram(lengths, bins=edges)[0] if len(lengths) else np.zeros(len(edges) - 1, dtype=np.int64)
        n = max(1, len(lengths))
        splits[split] = {
            "documents": int(len(lengths)),
            "counts": counts.astype(int).tolist(),
            "shares": (counts / n).tolist(),
            "mean": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
            "max": int(lengths.max()) if len(lengths) else 0,
        }
    return {"edges": edges.tolist(), "splits": splits}
