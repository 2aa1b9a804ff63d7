"""The BPE merge loop for one pre-token, and the caches that make encoding fast in pure Python.

Byte-level BPE in one paragraph
-------------------------------
A pre-token (one regex piece, see pattern.py) is turned into UTF-8 bytes and split into single
bytes: each of the 256 byte values is a token, so nothing is ever unknown. Then pairs of adjacent
parts are merged, one merge at a time, until no adjacent pair is in the vocabulary any more.

Ranks vs merges
---------------
GPT-2 ships an ordered list of *merges* ("a b" = merge token a with token b); the i-th merge
creates token 256 + i. tiktoken ships *ranks* instead: token bytes -> id, where the id of a
merged token is also its priority. The two views describe the same process: "apply the merge
with the lowest index first" is "create the token with the lowest rank first", because a merge
creates exactly the token whose rank is 256 + its index. So at every step we merge the adjacent
pair whose *concatenation* has the lowest rank (leftmost pair on ties: the same pair can appear
twice, as in "aaa"). No merge list is needed at encode time, only one dict lookup per pair.

Why lowest-rank-first reproduces GPT-2's merge order: GPT-2's own `bpe()` loop picks, at every
step, the adjacent pair with the smallest merge index and merges all its occurrences, left to
right. We merge one occurrence at a time, but the next-lowest pair is then the same pair again
(a merge only creates pairs involving the new, higher-rank token, and in a trained vocabulary a
token is always created after its parts), so we finish all occurrences of it before moving on;
overlapping occurrences ("aaa") are resolved leftmost-first by both. tiktoken relies on the same
equivalence, and the differential tests check it against tiktoken on real and random text.

Long pieces
-----------
The simple loop rescans every pair after every merge: O(n^2) for an n-byte piece, fine for the
typical 2-10 byte word but hopeless for "a" * 100_000 (a single regex piece). Pieces of
HEAP_THRESHOLD bytes or more use a heap of (rank, position) with a doubly linked list of parts
instead: each merge is O(log n), stale heap entries are recognised and skipped when popped.

Caches
------
Text repeats itself: the same few thousand words make most of any corpus. PieceCache maps a
pre-token string to its ids, so a repeated word costs one dict lookup and no BPE at all. It is a
pure function cache (the tokenizer is immutable), so it is exact by construction. Its size is
capped: when full it is emptied, which keeps memory bounded on endless streams at the cost of
re-warming (cheaper than LRU bookkeeping on every hit).

ChunkCache goes one level up (GPT-2's regex only): it maps a *chunk* -- leading whitespace plus
a run of non-whitespace, e.g. " dog," -- to its ids, so a chunk seen before skips the
pre-tokenisation regex as well as BPE. pattern.py proves that chunk boundaries are always piece
boundaries, which is what makes it exact.

The cached ids are *packed*: a bytes object holding them as native uint16 (uint32 for a
vocabulary over 65,536 ids), not a list of Python ints. So the ids of a whole text are one
`b"".join` of cached values, which touches one small object per chunk instead of a list and an
int object per token; memoryview(...).cast(...).tolist() then makes the list in one C loop. And
the packed form is what anything leaving the process needs anyway (a shard on disk, a worker's
result in shared memory), so that path never creates Python ints at all. With warm caches,
encoding a text is one cheap `re.findall`, one dict lookup per chunk and one join, all in C.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable

# Larger than any rank: "this pair is not in the vocabulary".
NO_RANK = 1 << 62
# Pieces at least this long use the heap (O(n log n)) instead of the rescanning loop (O(n^2)).
# tiktoken uses 100 too; below it the simple loop's lower constant wins.
HEAP_THRESHOLD = 100
# Default cap on cache entries; an entry (key string, packed ids, dict slot) is ~100-150 bytes,
# so ~50-75 MB at most.
DEFAULT_CACHE_SIZE = 500_000


def bpe_parts(piece: bytes, ranks: dict[bytes, int], max_rank: int = NO_RANK) -> list[bytes]:
    """Merge `piece` (raw bytes) into vocabulary tokens, lowest rank first; returns the parts.

    Only merges creating a token of rank < max_rank are applied (used to recover the merge that
    created a token from the ranks alone, see derive_merges).
    """
    if len(piece) >= HEAP_THRESHOLD:
        return _bpe_parts_heap(piece, ranks, max_rank)
    parts = [piece[i : i + 1] for i in range(len(piece))]
    get = ranks.get
    # pair_ranks[i] = rank of parts[i] + parts[i + 1]
    pair_ranks = [get(a + b, NO_RANK) for a, b in zip(parts, parts[1:])]
    pair_ranks = [r if r < max_rank else NO_RANK for r in pair_ranks]
    while pair_ranks:
        best = min(pair_ranks)
        if best == NO_RANK:
            break
        i = pair_ranks.index(best)  # leftmost occurrence: the tie rule
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        # Only the two pairs touching the merged part changed.
        if i > 0:
            r = get(parts[i - 1] + parts[i], NO_RANK)
            pair_ranks[i - 1] = r if r < max_rank else NO_RANK
        if i < len(parts) - 1:
            r = get(parts[i] + parts[i + 1], NO_RANK)
            pair_ranks[i] = r if r < max_rank else NO_RANK
    return parts


def _bpe_parts_heap(piece: bytes, ranks: dict[bytes, int], max_rank: int) -> list[bytes]:
    """Same result as the simple loop, O(n log n): linked list of parts + heap of candidate pairs.

    A part is named by the byte offset where it starts; nxt/prv link the live parts. A heap entry
    (rank, left, right, end) proposes merging the part [left, right) with the part [right, end).
    Entries are never removed when they go stale; instead, on pop, we check that the part at
    `left` is still alive and still spans exactly [left, right) followed by [right, end). Ties on
    rank pop the smallest `left` first: the leftmost-pair rule of the simple loop.
    """
    n = len(piece)
    nxt = list(range(1, n + 1))  # start of the next part (n = none)
    prv = list(range(-1, n - 1))  # start of the previous part (-1 = none)
    alive = [True] * n
    get = ranks.get
    heap = [(r, i, i + 1, i + 2) for i in range(n - 1) if (r := get(piece[i : i + 2], NO_RANK)) < max_rank]
    heapq.heapify(heap)
    heappop, heappush = heapq.heappop, heapq.heappush
    while heap:
        _, left, right, end = heappop(heap)
        if not alive[left] or nxt[left] != right or nxt[right] != end:
            continue  # stale: one of the two parts has been merged into something else since
        # Merge: the part at `left` now spans [left, end); the part at `right` dies. (An alive
        # `left` with nxt[left] == right implies `right` is alive: a dying part is unlinked.)
        alive[right] = False
        nxt[left] = end
        if end < n:
            prv[end] = left
            # new candidate pair: (merged part, next part)
            r = get(piece[left : nxt[end]], NO_RANK)
            if r < max_rank:
                heappush(heap, (r, left, end, nxt[end]))
        before = prv[left]
        if before >= 0:
            # new candidate pair: (previous part, merged part)
            r = get(piece[before:end], NO_RANK)
            if r < max_rank:
                heappush(heap, (r, before, left, end))
    parts = []
    i = 0
    while i < n:
        parts.append(piece[i : nxt[i]])
        i = nxt[i]
    return parts


def bpe_ids(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Token ids of one pre-token's bytes: the encoder's hot path on a cache miss."""
    rank = ranks.get(piece)
    if rank is not None:  # the whole piece is a token: by far the most common case
        return [rank]
    if len(piece) >= HEAP_THRESHOLD:
        return [ranks[p] for p in _bpe_parts_heap(piece, ranks, NO_RANK)]
    # bpe_parts without the max_rank filter: ~25% faster, and cold encoding is mostly this loop.
    parts = [piece[i : i + 1] for i in range(len(piece))]
    get = ranks.get
    pair_ranks = [get(piece[i : i + 2], NO_RANK) for i in range(len(piece) - 1)]
    while True:
        best = min(pair_ranks)
        if best == NO_RANK:
            break
        i = pair_ranks.index(best)
        merged = parts[i] + parts[i + 1]
        parts[i] = merged
        del parts[i + 1]
        del pair_ranks[i]
        if i:
            pair_ranks[i - 1] = get(parts[i - 1] + merged, NO_RANK)
        if i < len(pair_ranks):
            pair_ranks[i] = get(merged + parts[i + 1], NO_RANK)
        elif not pair_ranks:
            break
    return [ranks[p] for p in parts]


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Recover the merge list from ranks alone (e.g. after loading a .tiktoken file).

    The token of rank r was created by merging two tokens of lower rank. Running BPE on its bytes
    with only the merges below r stops exactly one merge short: the two remaining parts are the
    merge that created it. (HF tokenizer.json needs merges; tiktoken files only carry ranks.)
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = bpe_parts(token, ranks, max_rank=rank)
        if len(parts) != 2:
            raise ValueError(
                f"token {token!r} (rank {rank}) cannot be built by merging two lower-rank tokens: "
                "these ranks are not a byte-level BPE vocabulary"
            )
        merges.append((parts[0], parts[1]))
    return merges


def id_typecode(n_vocab: int) -> str:
    """`array` typecode that holds every id below n_vocab: 'H' (uint16) or 'I' (uint32)."""
    return "H" if n_vocab <= 1 << 16 else "I"


class PieceCache(dict):
    """pre-token string -> its ids, packed (bytes of `typecode` items); a miss runs BPE once.

    Subclassing dict with __missing__ keeps the hit path entirely in C:
    `map(cache.__getitem__, pieces)` never enters Python code for a word seen before.
    A piece containing a lone surrogate cannot be UTF-8 encoded: the UnicodeEncodeError
    propagates (nothing is stored) and the caller repairs the text the way tiktoken does.
    """

    def __init__(self, ranks: dict[bytes, int], typecode: str, max_size: int = DEFAULT_CACHE_SIZE):
        super().__init__()
        self.ranks = ranks
        self.typecode = typecode
        self.max_size = max_size

    def packed_bpe(self, piece: str) -> bytes:
        return array(self.typecode, bpe_ids(piece.encode("utf-8"), self.ranks)).tobytes()

    def __missing__(self, piece: str) -> bytes:
        ids = self.packed_bpe(piece)
        if len(self) >= self.max_size:
            self.clear()
        self[piece] = ids
        return ids


class ChunkCache(PieceCache):
    """text -> packed ids for chunks (several pre-tokens, see pattern.py) *and* single pieces.

    A miss runs the pre-tokenisation regex on the chunk alone; each piece is then looked up in
    this same dict (BPE on a miss) and the chunk's ids are stored. Exact because chunk boundaries
    are proven pre-token boundaries. One dict serves both levels because the value stored under
    any string s is always "the ids of s encoded on its own": for a chunk by construction, for a
    piece because every piece is its own only piece when pre-tokenised alone (pattern.py). A
    one-piece chunk such as " dog" therefore costs one BPE and one entry, not two.
    """

    def __init__(self, ranks: dict[bytes, int], typecode: str, split_pieces: Callable[[str], list[str]],
                 max_size: int = DEFAULT_CACHE_SIZE):
        super().__init__(ranks, typecode, max_size)
        self.split_pieces = split_pieces

    def __missing__(self, chunk: str) -> bytes:
        pieces = self.split_pieces(chunk)
        if len(self) >= self.max_size:
            self.clear()
        if len(pieces) == 1:
            ids = self.packed_bpe(chunk)
        else:
            parts = []
            get = self.get
            for piece in pieces:
                piece_ids = get(piece)
                if piece_ids is None:
                    piece_ids = self[piece] = self.packed_bpe(piece)
                parts.append(piece_ids)
            ids = b"".join(parts)
        self[chunk] = ids
        return ids
