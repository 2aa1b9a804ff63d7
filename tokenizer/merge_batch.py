"""Merging thousands of pieces at once: bpe.py's merge loop, run in lock step over numpy arrays.

The reference to read first: reference_bpe.py `merge_piece` (one piece, lowest rank first, in plain
Python); tests/test_encode_batch_misses.py holds this module to it and to tiktoken.

Why. With warm caches encoding merges nothing (bpe.py, "Caches"). On text the caches have not
seen, every new piece runs the merge loop, and in Python one step of that loop costs about a
microsecond of interpreter overhead whatever the piece: a short word takes ~5 us, more than
tiktoken takes for a whole sentence. A batch of documents brings thousands of new pieces at once,
though (bpe.py, "Misses, in batches"), so they can be merged together: the per-piece Python
overhead becomes array work, a few dozen numpy calls per *round* for all the pieces together.

The algorithm. All pieces are laid end to end in one array of token ids (first one id per byte),
with `starts`/`lens` marking where each piece is. A second array holds, at every position, the
rank of the token that merging it with its right neighbour would create (NO_MERGE at the end of a
piece, or when the concatenation is not a token). Then, in rounds, until no piece can merge:
  1. for every piece, its lowest pair rank and the leftmost position holding it, in one segmented
     reduction (np.minimum.reduceat) over `rank << POSITION_BITS | position`: the smallest such
     number has the lowest rank and, among equal ranks, the smallest position;
  2. pieces whose lowest rank is NO_MERGE are finished: their ids are moved to the output;
  3. every other piece merges that one pair: the left token becomes the merged token, the right
     one is deleted, and only the two pair ranks touching the new token are looked up again.
Steps 1 and 3 are exactly one step of the reference loop (bpe.merge_parts: merge the lowest-rank
pair, leftmost on ties) for every unfinished piece. Pieces never interact, so each piece goes
through the very same states as it would alone and ends with the same tokens: nothing else is
claimed, which is why the equivalence needs no argument about how the vocabulary was trained.

A round costs a few dozen numpy calls however many pieces are in it, so when few pieces are left
(often the longest, which need the most merges) the Python loop finishes them from the state they
have reached, and a small batch is not worth the calls at all: bpe.py merges fewer than MIN_BATCH
pieces one by one.

Pair ranks. "The rank of the token a + b" for two token ids is a lookup in PairTable: every way of
cutting every token into two tokens, keyed by the int a * n_vocab + b. Every pair whose
concatenation is a token is in it (cut after the first part), so it answers exactly what
`ranks.get(bytes_a + bytes_b)` answers. The keys live in an open-addressing hash table in numpy
arrays (a multiplicative hash, linear probing, 4 slots per key): one gather finds most keys, and
the few collisions are resolved by probing again only for them. The first round, where every
token is a single byte, reads a dense 65,536-entry table of byte pairs instead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Positions within one batch take this many bits of the reduction key (so a batch holds less than
# 64 MiB of piece bytes); ranks take the bits above.
POSITION_BITS = 26
MAX_BATCH_BYTES = 1 << POSITION_BITS
# Unfinished pieces at or below this count are finished in Python: a round costs ~30 numpy calls.
PYTHON_TAIL = 8
_EMPTY = -1  # a free slot of the hash table (keys are >= 0)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio: Fibonacci hashing


class PairTable:
    """For token ids a, b: the id of the token whose bytes are bytes(a) + bytes(b), if any.

    Built once per vocabulary (~0.1 s for GPT-2's) by the first batch that needs it; ~6 MB."""

    def __init__(self, ranks: dict[bytes, int]):
        n = len(ranks)  # ids are 0..n-1 (Tokenizer checks it)
        self.n = n
        self.no_merge = n  # one more than any rank: "these two do not merge"
        keys, merged = [], []
        get = ranks.get
        for token, rank in ranks.items():
            for cut in range(1, len(token)):
                left = get(token[:cut])
                if left is not None:
                    right = get(token[cut:])
                    if right is not None:
                        keys.append(left * n + right)
                        merged.append(rank)
        self._build_hash_table(keys, merged)
        self.token_bytes = sorted(ranks, key=ranks.__getitem__)  # id -> bytes
        self.byte_id = np.array([ranks[bytes([b])] for b in range(256)], dtype=np.int64)
        byte_pairs = np.full(1 << 16, n, dtype=np.int64)
        for token, rank in ranks.items():
            if len(token) == 2:
                byte_pairs[token[0] << 8 | token[1]] = rank
        self.byte_pair = byte_pairs

    def _build_hash_table(self, keys: list[int], merged: list[int]) -> None:
        bits = max(8, (4 * len(keys) - 1).bit_length())  # 4 slots or more per key: short probes
        self._shift = np.uint64(64 - bits)
        self._mask = (1 << bits) - 1
        self._keys = np.full(1 << bits, _EMPTY, dtype=np.int64)
        self._merged = np.full(1 << bits, self.no_merge, dtype=np.int64)
        for key, rank, slot in zip(keys, merged, self._slots(np.array(keys, dtype=np.int64)).tolist()):
            while self._keys[slot] != _EMPTY:
                slot = (slot + 1) & self._mask
            self._keys[slot] = key
            self._merged[slot] = rank

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64) * _GOLDEN) >> self._shift).astype(np.int64)

    def merge_ranks(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Rank of the token left[i] + right[i] for every i (no_merge where it is not a token)."""
        query = left * self.n + right
        slots = self._slots(query)
        found = self._keys[slots]
        ranks = self._merged[slots]  # right if the key is there, and no_merge if the slot is free
        collided = np.flatnonzero((found != query) & (found != _EMPTY))
        while len(collided):  # linear probing, for the few queries that met another key
            slots[collided] = (slots[collided] + 1) & self._mask
            found = self._keys[slots[collided]]
            ranks[collided] = self._merged[slots[collided]]
            collided = collided[(found != query[collided]) & (found != _EMPTY)]
        return ranks


def merge_batch(pieces: list[bytes], table: PairTable,
                finish: Callable[[list[int]], list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of every piece, lowest rank first: (all ids end to end, number of ids per piece).

    `pieces`: non-empty byte strings, together under MAX_BATCH_BYTES. `finish(ids)` runs the
    reference loop from a list of token ids and returns the final ids (bpe.py passes it in).
    """
    n_pieces = len(pieces)
    no_merge = table.no_merge
    data = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    if len(data) >= MAX_BATCH_BYTES:
        raise ValueError(f"merge_batch: {len(data)} bytes in one batch, the most is {MAX_BATCH_BYTES - 1}")
    lens = np.fromiter(map(len, pieces), dtype=np.int64, count=n_pieces)
    ids = table.byte_id[data]
    pair_rank = np.empty(len(data), dtype=np.int64)
    pair_rank[:-1] = table.byte_pair[(data[:-1].astype(np.int64) << 8) | data[1:]]
    starts = np.cumsum(lens) - lens
    pair_rank[starts + lens - 1] = no_merge  # the last token of a piece has no right neighbour
    piece = np.arange(n_pieces)  # which input piece each unfinished piece is
    done_ids, done_piece, done_lens = [], [], []

    while len(piece) > PYTHON_TAIL:
        # 1. each piece's lowest pair rank, leftmost first
        lowest = np.minimum.reduceat((pair_rank << POSITION_BITS) | np.arange(len(ids)), starts)
        best = lowest >> POSITION_BITS
        # 2. finished pieces leave
        finished = best == no_merge
        keep = np.ones(len(ids), dtype=bool)
        if finished.any():
            finished_positions = np.repeat(finished, lens)
            done_ids.append(ids[finished_positions])
            done_piece.append(piece[finished])
            done_lens.append(lens[finished])
            keep[finished_positions] = False
            going = ~finished
            best, lowest, starts, lens, piece = best[going], lowest[going], starts[going], lens[going], piece[going]
            if not len(piece):
                break
        # 3. merge: the left token becomes the merged one, the right one goes
        at = lowest & ((1 << POSITION_BITS) - 1)
        ids[at] = best
        keep[at + 1] = False
        # New pairs: (merged, token after the deleted one) unless that one ended the piece, and
        # (token before, merged) unless the merged one starts the piece; one lookup for both.
        has_next = at + 2 < starts + lens
        has_previous = at > starts
        after, before = at[has_next], at[has_previous]
        new_ranks = table.merge_ranks(np.concatenate((ids[after], ids[before - 1])),
                                      np.concatenate((ids[after + 2], ids[before])))
        pair_rank[at] = no_merge
        pair_rank[after] = new_ranks[: len(after)]
        pair_rank[before - 1] = new_ranks[len(after) :]
        ids, pair_rank = ids[keep], pair_rank[keep]
        lens = lens - 1
        starts = np.cumsum(lens) - lens

    for start, length, index in zip(starts.tolist(), lens.tolist(), piece.tolist()):
        final = finish(ids[start : start + length].tolist())
        done_ids.append(np.array(final, dtype=np.int64))
        done_piece.append(np.array([index]))
        done_lens.append(np.array([len(final)]))
    return _in_input_order(done_ids, done_piece, done_lens, n_pieces)


def _in_input_order(done_ids, done_piece, done_lens, n_pieces: int) -> tuple[np.ndarray, np.ndarray]:
    """Pieces finish in any order; lay their ids out in the order of the input pieces."""
    if not done_ids:
        return np.empty(0, dtype=np.int64), np.zeros(n_pieces, dtype=np.int64)
    ids, piece, lens = np.concatenate(done_ids), np.concatenate(done_piece), np.concatenate(done_lens)
    counts = np.zeros(n_pieces, dtype=np.int64)
    counts[piece] = lens
    offsets = np.cumsum(counts) - counts  # where each input piece's ids go
    done_starts = np.cumsum(lens) - lens  # where they are now
    moved = np.empty_like(ids)
    moved[np.repeat(offsets[piece] - done_starts, lens) + np.arange(len(ids))] = ids
    return moved, counts
