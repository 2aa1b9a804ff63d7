"""Batches of training windows over one split of the token shards.

A split is the concatenation of its shards (every document starts with <|endoftext|>, so documents
simply follow each other). Cut it into windows of T+1 tokens that overlap by one token:

    window i = tokens[i*T : i*T + T + 1]      inputs = window[:-1], targets = window[1:]

so every token after the first is a target exactly once per epoch, and there are (N - 1) // T windows.

Order: epoch e visits the windows in the permutation drawn from a generator seeded with (seed, e) --
without replacement inside an epoch, a fresh order each epoch, and reproducible from two integers. The
epochs' permutations laid end to end form one infinite *global stream* of window ids; the loader's
whole state is `consumed`, how many windows of that stream have been handed out (over all processes).

Distribution: each micro-step takes the next B * world_size windows of the stream and rank r keeps the
r-th block of B. Ranks therefore never share a window, and the windows that make up one optimizer step
are the same whatever the number of processes -- 1 process x 8 micro-steps sees exactly the data that
8 processes x 1 micro-step see, which is what makes DDP runs comparable with single-process ones (and
lets a run resume on a different number of GPUs).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from contract.shard_format import ShardFormatError, ShardReader, damaged_files


class TokenSource(Protocol):
    """What the loader needs from contract.shard_format.ShardReader (a fake in tests is enough)."""

    def token_arrays(self, split: str) -> list[np.ndarray]: ...


class ContextTooLongError(ValueError):
    pass


class Windows(Protocol):
    """Rows of T+1 tokens the loader shuffles and deals: TokenWindows here, PackedConversations for SFT.
    `batch` gives (inputs, targets) of shape (B, T); a target of -1 is not learned (the loss ignores it)."""

    num_windows: int
    split: str

    def batch(self, window_ids) -> tuple[torch.Tensor, torch.Tensor]: ...


class VerifiedShards:
    """A ShardReader's token arrays, each shard checked once per run before any of its tokens is used.

    The trainer is the one consumer that cannot afford to trust its input: a shard edited in place keeps
    its size (which is all ShardReader checks when it opens a directory), so it would train silently, and
    an id >= the vocabulary indexes past the embedding, which is a raw IndexError on a CPU and a
    device-side assert that kills the process on CUDA. So the first time a split is asked for, every
    shard file is hashed against the manifest (`damaged_files`, the format's one sha256 check) and the
    largest id is compared with the vocabulary. Nothing about a check outlives the run: no "verified"
    mark on disk, keyed by size or mtime, could tell an edited shard from the original.

    Cost: the hash reads every byte once (about 1.5 s per GB on one core from the page cache; the max is
    ~20x cheaper), so FineWeb-Edu's 10B tokens (20 GB of uint16) add ~30 s to the start of a run that
    lasts hours; each DDP rank checks the shards it opens, in parallel with the others.
    What is not covered: a shard changed *while* the run reads it (the arrays are memory-mapped).
    """

    def __init__(self, reader: ShardReader, vocab_size: int):
        self.reader = reader
        self.vocab_size = vocab_size
        self._arrays: dict[str, list[np.ndarray]] = {}

    def token_arrays(self, split: str) -> list[np.ndarray]:
        if split not in self._arrays:
            self._arrays[split] = [self._verified(entry) for entry in self.reader.shards(split)]
        return self._arrays[split]

    def _verified(self, entry: dict[str, Any]) -> np.ndarray:
        damaged = damaged_files(self.reader.root, entry)
        if damaged:
            raise ShardFormatError(
                f"{self.reader.root / damaged[0]}: sha256 does not match the shards' manifest (the file changed "
                f"after `make shards` wrote it); rebuild the shards: make shards FORCE=1")
        tokens = self.reader.shard_tokens(entry)
        top = int(tokens.max()) if len(tokens) else -1
        if top >= self.vocab_size:
            raise ShardFormatError(
                f"{self.reader.root / entry['path']}: token id {top} is outside the vocabulary of {self.vocab_size} "
                f"ids, so no embedding row exists for it; the shards were not made by their tokenizer: "
                f"rebuild them with make shards FORCE=1")
        return tokens


class TokenWindows:
    """Random access to the overlapping (T+1)-token windows of a split, across shard boundaries."""

    def __init__(self, arrays: list[np.ndarray], seq_len: int, split: str = "train"):
        self.arrays = [a for a in arrays if len(a) > 0]
        self.seq_len = seq_len
        self.split = split
        lengths = np.array([len(a) for a in self.arrays], dtype=np.int64)
        # starts[k] = offset of shard k in the concatenated split; a window is located by binary search.
        self.starts = np.concatenate([[0], np.cumsum(lengths)])
        self.num_tokens = int(self.starts[-1])
        if self.num_tokens < seq_len + 1:
            raise ContextTooLongError(
                f"context longer than a shard split can supply: seq_len {seq_len} needs windows of {seq_len + 1} "
                f"tokens but the {split!r} split has only {self.num_tokens:,} tokens; use a shorter train.seq_len "
                f"(or model.block_size) or more data")
        self.num_windows = (self.num_tokens - 1) // seq_len

    def window(self, i: int) -> np.ndarray:
        """Tokens [i*T, i*T + T + 1) of the split, as int64 (a copy; the shards stay memory-mapped)."""
        lo = i * self.seq_len
        hi = lo + self.seq_len + 1
        k = int(np.searchsorted(self.starts, lo, side="right")) - 1
        offset = lo - int(self.starts[k])
        a = self.arrays[k]
        if offset + self.seq_len + 1 <= len(a):  # the common case: inside one shard
            return a[offset:offset + self.seq_len + 1].astype(np.int64)
        pieces, pos = [], lo
        while pos < hi:  # the window straddles one or more shard boundaries
            k = int(np.searchsorted(self.starts, pos, side="right")) - 1
            take = min(hi, int(self.starts[k + 1])) - pos
            off = pos - int(self.starts[k])
            pieces.append(self.arrays[k][off:off + take])
            pos += take
        return np.concatenate(pieces).astype(np.int64)

    def batch(self, window_ids) -> tuple[torch.Tensor, torch.Tensor]:
        buf = torch.from_numpy(np.stack([self.window(int(i)) for i in window_ids]))
        return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()


class ShuffledLoader:
    """Endless (inputs, targets) micro-batches of shape (B, T) for one rank; see the module docstring."""

    def __init__(self, source: TokenSource, split: str, batch_size: int, seq_len: int, *, seed: int,
                 rank: int = 0, world_size: int = 1, windows: Windows | None = None):
        """Windows of `source`'s split; or, given `windows`, any other rows of T+1 tokens (SFT's packed
        conversations), shuffled and dealt the same way (`source` and `split` are then unused)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.windows = windows if windows is not None else TokenWindows(source.token_arrays(split), seq_len, split)
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rank, self.world_size = rank, world_size
        self.consumed = 0  # windows of the global stream handed out so far, all ranks together
        self._perm_epoch, self._perm = -1, None

    @property
    def epoch(self) -> int:
        return self.consumed // self.windows.num_windows

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:  # one cached permutation (the stream rarely spans two per batch)
            rng = np.random.default_rng([self.seed, epoch])
            self._perm, self._perm_epoch = rng.permutation(self.windows.num_windows), epoch
        return self._perm

    def stream_ids(self, start: int, count: int) -> list[int]:
        """Window ids at positions [start, start + count) of the global stream."""
        n = self.windows.num_windows
        ids = []
        for pos in range(start, start + count):
            ids.append(int(self.permutation(pos // n)[pos % n]))
        return ids

    def next_batch(self, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The next micro-batch of this rank: `batch_size` windows (default B; smaller while the batch
        warms up, the same number in every rank so that the stream positions stay in step)."""
        b = batch_size or self.batch_size
        mine = self.consumed + self.rank * b
        ids = self.stream_ids(mine, b)
        self.consumed += b * self.world_size
        return self.windows.batch(ids)

    # The position is the only state; num_windows/seq_len/seed guard against resuming on other data.
    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.consumed, "seed": self.seed, "seq_len": self.seq_len,
                "num_windows": self.windows.num_windows}

    def load_state_dict(self, state: dict[str, int]) -> None:
        now = {"seed": self.seed, "seq_len": self.seq_len, "num_windows": self.windows.num_windows}
        mismatched = [k for k in now if int(state[k]) != now[k]]
        if mismatched:
            details = ", ".join(f"{k}: checkpoint {state[k]} vs now {now[k]}" for k in mismatched)
            raise ValueError(f"cannot resume the data order: the {self.windows.split!r} split or its settings changed "
                             f"since the checkpoint ({details})")
        self.consumed = int(state["consumed"])


def eval_window_ids(num_windows: int, val_tokens: int, seq_len: int, rank: int, world_size: int) -> list[int]:
    """The first ceil(val_tokens / T) windows of the val split (capped at all of them), dealt round-robin.

    Validation always measures the same windows, so curves from different steps and runs compare.
    """
    count = min(num_windows, max(1, -(-val_tokens // seq_len)))
    return list(range(rank, count, world_size))
