"""The BPE merge loop for one pre-token, and the caches that make encoding fast in pure Python.

Reference: tokenizer/reference_bpe.py `merge_piece` is the loop below without any of the speed tricks
(tests/test_reference_bpe.py holds them equal on real text). Read first: `bpe_parts`; the heap, the
caches and the batches are how it is made fast, not what it computes.

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
pure function cache (the tokenizer is immutable), so it is exact by construction.

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

Misses, in batches
------------------
On text the caches have not seen, each new piece that is not a token already runs the merge loop,
~5 us of interpreter time for a short word. With GPT-2's regex, a batch of texts given to
Tokenizer.encode_to_arrays goes through chunk_table.py, which does the chunk cache's work in numpy
and hands its new pieces to `learn_pieces`, all at once. With other patterns (no chunks), a batch
goes through `packed_many` instead, which puts those merges off and does them all together at the end
(merge_batch.py: the same loop, run for thousands of pieces at once in numpy, ~1 us a piece):
  1. the texts' chunks are looked up exactly as on a hit, one `map(cache.__getitem__, ...)` per text;
     a new chunk is pre-tokenised and its pieces looked up by __missing__ as usual. A new piece
     that is a whole token is learned on the spot (one lookup); one that needs merging is put off:
     __missing__ returns an empty bytearray for it, the same one every time it is met again in the
     call, and so does a chunk that contains such a piece;
  2. `b"".join` accepts a bytearray wherever it accepts bytes and reads it when it joins, so the
     lists of looked-up ids are kept as they are until step 3 has filled the buffers;
  3. the put-off pieces are merged together, their buffers filled and stored, then the buffers of
     the waiting chunks (a join of their parts, now all filled), and only then each text is joined.
Nothing is looked up twice and no pass is added for text already seen. What it saves is bounded,
though: merging is a quarter to a third of the cost of new text (`make bench-encode-cost`), the rest
the chunk regex, the piece regex on each new chunk and the lookups; and waiting costs each waiting chunk
a little (BENCHMARKS.md has the figures: at best a few percent, and a loss on text full of URLs and
hashes, which is why encode_batch does not use it). A single text merges its new
pieces on the spot (`packed`), and so does a batch with fewer than MIN_BATCH pieces to merge.
Only the thread running `packed_many` puts anything off: another thread encoding with the same
tokenizer meanwhile merges on the spot, so no thread ever joins a buffer another has yet to fill.

Memory. The cache is emptied when it is full (cheaper than LRU bookkeeping on every hit, at the
cost of re-warming). "Full" has two measures, so that a stream of long distinct pieces cannot grow
a process however few entries it makes: at most `max_size` entries (checked once per miss, which
may then add a chunk and its new pieces), which bounds the short ones
(a key of up to SHORT_KEY_CHARS characters: ~150 bytes typically, ~250 at most for ASCII); and
for the longer keys, at most `max_bytes` counted as len(key) + len(packed ids) + ENTRY_OVERHEAD
(CPython's share of a str, a bytes and a dict slot) each. Counting bytes costs a few attribute
operations per entry, so it is done where it matters, for the few long keys. Keys longer than
MAX_CACHED_CHARS are never cached at all: a one-off 100,000-space run would otherwise empty the
cache for an entry nobody asks for again.
"""

from __future__ import annotations

import gc
import heapq
import struct
import threading
from array import array
from collections.abc import Callable, Iterable
from itertools import accumulate

# Larger than any rank: "this pair is not in the vocabulary".
NO_RANK = 1 << 62
# Pieces at least this long use the heap (O(n log n)) instead of the rescanning loop (O(n^2)).
# tiktoken uses 100 too; below it the simple loop's lower constant wins.
HEAP_THRESHOLD = 100
# Default cap on cache entries; an entry (key string, packed ids, dict slot) is ~150-200 bytes.
DEFAULT_CACHE_SIZE = 500_000
# Default cap on what the entries hold, counted as len(key) + len(packed ids) + ENTRY_OVERHEAD each.
DEFAULT_CACHE_BYTES = 128 * 2**20
# CPython's share of one entry beyond its characters and id bytes: a str (49 bytes for ASCII), a
# bytes (33), a dict slot with the table's spare room (~40-60), and allocator rounding.
ENTRY_OVERHEAD = 144
# Longer keys are encoded but never cached.
MAX_CACHED_CHARS = 512
# New pieces are merged by merge_batch.py (numpy) when at least this many need merging; fewer cost
# less one by one (a numpy round is a few dozen calls, whatever the number of pieces in it).
MIN_BATCH = 96
# Entries with keys up to this long are bounded by their number (max_size), longer ones by bytes.
SHORT_KEY_CHARS = 32


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
    """Token ids of one pre-token's bytes: the encoder's hot path on a miss of a small batch."""
    rank = ranks.get(piece)
    if rank is not None:  # the whole piece is a token: by far the most common case
        return [rank]
    if len(piece) >= HEAP_THRESHOLD:
        return [ranks[p] for p in _bpe_parts_heap(piece, ranks, NO_RANK)]
    return [ranks[p] for p in merge_parts([piece[i : i + 1] for i in range(len(piece))], ranks)]


def merge_parts(parts: list[bytes], ranks: dict[bytes, int]) -> list[bytes]:
    """bpe_parts' loop, from any list of parts (single bytes, or where merge_batch left a piece).

    No max_rank filter: ~25% faster than bpe_parts, and cold encoding is mostly this loop.
    """
    get = ranks.get
    pair_ranks = [get(a + b, NO_RANK) for a, b in zip(parts, parts[1:])]
    while pair_ranks:
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
    return parts


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


class _PutOff:
    """What one packed_many call has put off: new pieces to merge together at its end.

    pieces: {piece: the buffer its packed ids will be written to}; chunks: the same for the chunks
    waiting for some of those pieces, and `waiting` lists those with their parts (packed ids, or
    the buffers of their pieces). `thread`: only the thread that runs the call puts anything off.
    """

    __slots__ = ("thread", "pieces", "chunks", "waiting")

    def __init__(self):
        self.thread = threading.get_ident()
        self.pieces: dict[str, bytearray] = {}
        self.chunks: dict[str, bytearray] = {}
        self.waiting: list[tuple[str, bytearray, list]] = []


class PieceCache(dict):
    """pre-token string -> its ids, packed (bytes of `typecode` items); a miss runs BPE once.

    Subclassing dict with __missing__ keeps the hit path entirely in C: `map(cache.__getitem__,
    pieces)` never enters Python code for a word seen before. A piece containing a lone surrogate
    cannot be UTF-8 encoded: the UnicodeEncodeError propagates (nothing is stored) and the caller
    repairs the text the way tiktoken does.

    Inside `packed_many`, a piece that needs merging is not merged on the spot: __missing__ hands
    out an empty bytearray instead, which `b"".join` reads like bytes, and all those pieces are
    merged together once every text has been looked up; then the buffers are filled and only then
    joined (see "Misses, in batches"). For that, packed_many switches the cache's class to its
    `_PutsOff` subclass for the duration of the call, so that the __missing__ of every other call
    stays free of any test for it.
    """

    def __init__(self, ranks: dict[bytes, int], typecode: str, max_size: int = DEFAULT_CACHE_SIZE,
                 max_bytes: int = DEFAULT_CACHE_BYTES):
        super().__init__()
        self.ranks = ranks
        self.typecode = typecode
        self.max_size = max_size
        self.max_bytes = max_bytes
        self.room = max_bytes  # max_bytes less what the long entries hold (see nbytes)
        self._pack_id = struct.Struct("=" + typecode).pack
        self._pair_table = None  # merge_batch.PairTable, built on the first batch that needs it
        self._put_off: _PutOff | None = None  # that of the packed_many call running now, if any
        self._putting_off = threading.Lock()  # one call at a time puts off; others merge on the spot

    # ------------------------------------------------------------------------------ the way in
    def packed(self, pieces: list[str]) -> bytes:
        """Packed ids of one text, given as its pieces (chunks, in ChunkCache); new pieces are merged
        on the spot: one text brings too few of them for putting them off to pay."""
        return b"".join(map(self.__getitem__, pieces))

    def packed_many(self, texts: Iterable[list[str]]) -> list[bytes]:
        """Packed ids of several texts, each given as its pieces; their new pieces are merged together.

        Texts are looked up one at a time (pass an iterator: then only one text's pieces exist at a
        time); what each lookup gives -- packed ids, or the buffer of something put off -- is kept
        until the put-off merges are done, then each text is joined.
        """
        if not self._putting_off.acquire(blocking=False):  # another thread is putting off: don't wait
            return [b"".join(map(self.__getitem__, pieces)) for pieces in texts]
        gc_was_enabled = gc.isenabled()
        gc.disable()  # what is made meanwhile holds only strings and bytes: no cycle to look for
        self._put_off = put_off = _PutOff()
        usual_class, self.__class__ = self.__class__, self._putting_off_class
        try:
            ids_per_text = [list(map(self.__getitem__, pieces)) for pieces in texts]
            if put_off.pieces:
                self._merge_put_off(put_off)
        finally:
            self.__class__ = usual_class
            self._put_off = None
            self._putting_off.release()
            if gc_was_enabled:
                gc.enable()
        return list(map(b"".join, ids_per_text))

    def __missing__(self, piece: str) -> bytes:
        if len(self) >= self.max_size:
            self.clear()
        ids = self._packed_bpe(piece)
        self._store(piece, ids)
        return ids

    def learn_pieces(self, pieces: list[str]) -> list[bytes]:
        """Packed ids of many distinct pieces (strings the pre-tokeniser gives whole), cached: the
        ones not cached yet that need merging are merged together (in numpy when there are
        MIN_BATCH or more, see _merge_many). chunk_table.py hands each batch's new pieces here."""
        out = list(map(self.get, pieces))
        new = [i for i, ids in enumerate(out) if ids is None]
        if not new:
            return out
        learned: dict[str, bytes] = {}
        to_merge: list[int] = []
        get_rank, pack_id = self.ranks.get, self._pack_id
        for i in new:
            rank = get_rank(pieces[i].encode("utf-8"))
            if rank is None:
                to_merge.append(i)
            else:  # the whole piece is a token
                out[i] = learned[pieces[i]] = pack_id(rank)
        if to_merge:
            for i, ids in zip(to_merge, self._merge_many([pieces[i].encode("utf-8") for i in to_merge])):
                out[i] = learned[pieces[i]] = ids
        self._store_many(learned)  # empties a full cache first
        return out

    def remember(self, new: dict[str, bytes]) -> None:
        """Keep entries learned elsewhere (chunk_table.py), within the limits (see "Memory")."""
        self._store_many(new)

    def clear(self) -> None:
        super().clear()
        self.room = self.max_bytes

    @property
    def nbytes(self) -> int:
        """What the long entries hold, as counted against max_bytes (see "Memory")."""
        return self.max_bytes - self.room

    # -------------------------------------------------------------------------------- learning
    def _packed_bpe(self, piece: str) -> bytes:
        """BPE of one piece on the spot, packed (UnicodeEncodeError on a lone surrogate: see the class)."""
        raw = piece.encode("utf-8")
        rank = self.ranks.get(raw)
        if rank is not None:  # the whole piece is a token: by far the most common case
            return self._pack_id(rank)
        return array(self.typecode, bpe_ids(raw, self.ranks)).tobytes()

    def _put_off_piece(self, piece: str, put_off: _PutOff) -> bytes | bytearray:
        """Packed ids of a new piece, stored; but one that needs merging gets a buffer instead, filled
        (and the piece stored) by _merge_put_off."""
        raw = piece.encode("utf-8")
        rank = self.ranks.get(raw)
        if rank is not None or len(raw) >= HEAP_THRESHOLD:  # a token already, or one long piece
            ids = self._pack_id(rank) if rank is not None else array(self.typecode, bpe_ids(raw, self.ranks)).tobytes()
            self._store(piece, ids)
            return ids
        buffer = put_off.pieces.get(piece)
        if buffer is None:
            buffer = put_off.pieces[piece] = bytearray()
        return buffer

    def _missing_put_off(self, piece: str, put_off: _PutOff) -> bytes | bytearray:
        if len(self) >= self.max_size:
            self.clear()
        return self._put_off_piece(piece, put_off)

    def _merge_put_off(self, put_off: _PutOff) -> None:
        """Merge the put-off pieces together, fill their buffers and those of the waiting chunks."""
        pieces = list(put_off.pieces)
        merged = self._merge_many(list(map(str.encode, pieces)))
        for buffer, ids in zip(put_off.pieces.values(), merged):
            buffer += ids
        learned = dict(zip(pieces, merged))
        for chunk, buffer, parts in put_off.waiting:  # their parts are filled now
            ids = learned[chunk] = b"".join(parts)
            buffer += ids
        self._store_many(learned)

    def _merge_many(self, pieces: list[bytes]) -> list[bytes]:
        """Packed ids of pieces that are not single tokens: in numpy if there are enough of them."""
        typecode, ranks = self.typecode, self.ranks
        if len(pieces) < MIN_BATCH:
            return [array(typecode, bpe_ids(p, ranks)).tobytes() for p in pieces]
        from . import merge_batch  # numpy: imported only when a batch is large enough to need it

        if self._pair_table is None:
            self._pair_table = merge_batch.PairTable(ranks)
        table = self._pair_table

        def finish(ids: list[int]) -> list[int]:
            return [ranks[p] for p in merge_parts(list(map(table.token_bytes.__getitem__, ids)), ranks)]

        itemsize = array(typecode).itemsize
        out: list[bytes] = []
        for batch in _batches(pieces, merge_batch.MAX_BATCH_BYTES - 1):
            ids, counts = merge_batch.merge_batch(batch, table, finish)
            data = ids.astype(typecode).tobytes()  # numpy reads 'H'/'I' as array does: native uint16/32
            ends = [n * itemsize for n in accumulate(counts.tolist())]
            out.extend(map(data.__getitem__, map(slice, [0, *ends[:-1]], ends)))
        return out

    # --------------------------------------------------------------------------------- storing
    def _store(self, key: str, ids: bytes) -> None:
        """Cache an entry. Callers empty a full cache first (`len(self) >= max_size`), once per miss;
        the bytes of a long key are counted here (see "Memory"), a key over MAX_CACHED_CHARS is not cached."""
        if len(key) > SHORT_KEY_CHARS:
            if len(key) > MAX_CACHED_CHARS:
                return
            self.room -= len(key) + len(ids) + ENTRY_OVERHEAD
            if self.room < 0:
                self.clear()
                self.room -= len(key) + len(ids) + ENTRY_OVERHEAD
        self[key] = ids

    def _store_many(self, new: dict[str, bytes]) -> None:
        """_store for many entries: the long ones one by one, the others in one dict.update."""
        if max(map(len, new), default=0) > SHORT_KEY_CHARS:
            for key in [key for key in new if len(key) > SHORT_KEY_CHARS]:
                self._store(key, new.pop(key))
        if len(self) + len(new) > self.max_size:
            self.clear()
            if len(new) > self.max_size:
                return  # more than the whole cache holds: used for this call only
        self.update(new)


class ChunkCache(PieceCache):
    """text -> packed ids for chunks (several pre-tokens, see pattern.py) *and* single pieces.

    A miss runs the pre-tokenisation regex on the chunk alone; each piece is then looked up in this
    same dict (BPE on a miss) and the chunk's ids are stored. Exact because chunk boundaries are
    proven pre-token boundaries. One dict serves both levels because the value stored under any
    string s is always "the ids of s encoded on its own": for a chunk by construction, for a piece
    because every piece is its own only piece when pre-tokenised alone (pattern.py). A one-piece
    chunk such as " dog" therefore costs one BPE and one entry, not two.
    """

    def __init__(self, ranks: dict[bytes, int], typecode: str, split_pieces: Callable[[str], list[str]],
                 max_size: int = DEFAULT_CACHE_SIZE, max_bytes: int = DEFAULT_CACHE_BYTES):
        super().__init__(ranks, typecode, max_size, max_bytes)
        self.split_pieces = split_pieces

    def __missing__(self, chunk: str) -> bytes:
        pieces = self.split_pieces(chunk)
        if len(self) >= self.max_size:
            self.clear()
        if len(pieces) == 1:
            ids = self._packed_bpe(chunk)
        else:
            parts = []
            get = self.get
            for piece in pieces:
                piece_ids = get(piece)
                if piece_ids is None:
                    piece_ids = self._packed_bpe(piece)
                    if len(piece) > SHORT_KEY_CHARS:  # self._store(piece, piece_ids), inlined for short keys
                        self._store(piece, piece_ids)
                    else:
                        self[piece] = piece_ids
                parts.append(piece_ids)
            ids = b"".join(parts)
        if len(chunk) > SHORT_KEY_CHARS:  # self._store(chunk, ids), inlined for short keys
            self._store(chunk, ids)
        else:
            self[chunk] = ids
        return ids

    def _missing_put_off(self, chunk: str, put_off: _PutOff) -> bytes | bytearray:
        """__missing__ inside packed_many: a chunk with a put-off piece waits for it, in a buffer."""
        buffer = put_off.chunks.get(chunk)
        if buffer is not None:  # met before in this call, and waiting
            return buffer
        pieces = self.split_pieces(chunk)
        if len(self) >= self.max_size:
            self.clear()
        if len(pieces) == 1:
            return self._put_off_piece(chunk, put_off)
        parts = []
        get = self.get
        for piece in pieces:
            piece_ids = get(piece)
            if piece_ids is None:
                piece_ids = self._put_off_piece(piece, put_off)
            parts.append(piece_ids)
        if bytearray in map(type, parts):
            buffer = put_off.chunks[chunk] = bytearray()
            put_off.waiting.append((chunk, buffer, parts))
            return buffer
        ids = b"".join(parts)
        self._store(chunk, ids)
        return ids


class _PutsOff:
    """Mixed into the cache's class while packed_many runs: __missing__ puts merges off.

    Only for the thread running packed_many: another thread encoding with the same tokenizer
    meanwhile merges on the spot, so no thread ever joins a buffer another one has yet to fill.
    """

    def __missing__(self, key: str) -> bytes | bytearray:
        put_off = self._put_off
        if put_off is None or put_off.thread != threading.get_ident():
            return super().__missing__(key)
        return self._missing_put_off(key, put_off)


class _PuttingOffPieceCache(_PutsOff, PieceCache):
    pass


class _PuttingOffChunkCache(_PutsOff, ChunkCache):
    pass


PieceCache._putting_off_class = _PuttingOffPieceCache
ChunkCache._putting_off_class = _PuttingOffChunkCache


def _batches(pieces: list[bytes], max_bytes: int):
    """Consecutive runs of `pieces` of at most max_bytes bytes each (a longer piece alone)."""
    start, size = 0, 0
    for i, piece in enumerate(pieces):
        if size and size + len(piece) > max_bytes:
            yield pieces[start:i]
            start, size = i, 0
        size += len(piece)
    if start < len(pieces):
        yield pieces[start:]
