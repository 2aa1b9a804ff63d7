"""Token shards written straight from token arrays, without the data and tokenizer stages.

For measurements and tests that need real shards (the production reader, the production loader) but
not real text: the GPU check trains on random tokens at the real batch shape, and tests write tiny
shards of a few documents. Files come from pipelines.shard_format's ShardWriter; the manifest holds
what ShardReader checks (format, vocabulary, dtype, eot id, tokenizer fingerprint, shard list).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pipelines.shard_format import FORMAT_VERSION, MANIFEST_NAME, ShardWriter, dtype_for_vocab


def write_shards(out_dir: str | Path, splits: dict[str, Iterable[np.ndarray]], *, vocab_size: int, eot_id: int,
                 tokenizer_fingerprint: str, tokenizer_path: str | None = None, shard_tokens: int = 1 << 20,
                 fmt: str = "npy") -> Path:
    """Write each split's documents (token arrays WITHOUT the leading eot; it is added here) as shards.

    tokenizer_path is stored as given (relative paths are resolved against out_dir by the reader).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = dtype_for_vocab(vocab_size)
    manifest_splits = {}
    for split, docs in splits.items():
        entries: list[dict] = []
        writer = ShardWriter(out, split, fmt, shard_tokens, dtype, eot_id, on_shard=entries.append)
        n_docs = 0
        for i, doc in enumerate(docs):
            tokens = np.concatenate([np.array([eot_id], dtype=dtype), np.asarray(doc, dtype=dtype)])
            writer.add(f"{split}-{i}", tokens, i)
            n_docs += 1
        writer.close()
        manifest_splits[split] = {"shards": entries, "documents": n_docs,
                                  "tokens": sum(e["tokens"] for e in entries)}
    manifest = {"format_version": FORMAT_VERSION, "format": fmt, "vocab_size": vocab_size, "dtype": dtype.name,
                "eot_id": eot_id, "tokenizer": {"fingerprint": tokenizer_fingerprint, "path": tokenizer_path},
                "splits": manifest_splits}
    tmp = out / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / MANIFEST_NAME)  # last: its presence means the shards are complete
    return out


def random_documents(n_tokens: int, vocab_size: int, eot_id: int, doc_tokens: int = 1000,
                     seed: int = 0) -> Iterable[np.ndarray]:
    """Uniformly random ids (never eot) in documents of doc_tokens: the GPU check's stand-in for text."""
    rng = np.random.default_rng(seed)
    left = n_tokens
    while left > 0:
        n = min(doc_tokens, left)
        doc = rng.integers(0, vocab_size - 1, size=n, dtype=np.int64)
        doc[doc >= eot_id] += 1  # skip the eot id itself
        yield doc
        left -= n + 1
