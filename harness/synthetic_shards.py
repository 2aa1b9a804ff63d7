"""Token shards written straight from token arrays, without the data and tokenizer stages.

For measurements and tests that need real shards (the production reader, the production loader) but
not real text: the GPU check trains on random tokens at the real batch shape, and tests write tiny
shards of a few documents. Files come from the format's own ShardWriter and the manifest from its own
`shards_manifest`, so these shards are exactly what the shards stage would write for the same tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from contract.manifest import write_manifest
from contract.shard_format import ShardWriter, dtype_for_vocab, shards_manifest


def write_shards(out_dir: str | Path, splits: dict[str, Iterable[np.ndarray]], *, vocab_size: int, eot_id: int,
                 tokenizer_fingerprint: str, tokenizer_path: str | None = None, shard_tokens: int = 1 << 20,
                 fmt: str = "npy") -> Path:
    """Write each split's documents (token arrays WITHOUT the leading eot; it is added here) as shards.

    tokenizer_path is stored as given (relative paths are resolved against out_dir by the reader).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = dtype_for_vocab(vocab_size)
    entries: dict[str, list[dict]] = {}
    for split, docs in splits.items():
        entries[split] = []
        writer = ShardWriter(out, split, fmt, shard_tokens, dtype, eot_id, on_shard=entries[split].append)
        for i, doc in enumerate(docs):
            tokens = np.concatenate([np.array([eot_id], dtype=dtype), np.asarray(doc, dtype=dtype)])
            writer.add(f"{split}-{i}", tokens, i)
        writer.close()
    manifest = shards_manifest(fmt=fmt, vocab_size=vocab_size, eot_id=eot_id, shard_tokens=shard_tokens,
                               tokenizer={"fingerprint": tokenizer_fingerprint, "path": tokenizer_path},
                               splits=entries)
    write_manifest(out, manifest)  # last: its presence means the shards are complete
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
