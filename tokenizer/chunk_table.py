"""Encoding a whole batch of texts at once: the chunk cache, in numpy.

Read bpe.py's "Caches" first: with GPT-2's regex, text is cut into *chunks* (leading whitespace,
then a run of non-whitespace: " dog,"), and a dict maps each chunk seen before to its packed ids.
That dict is as fast as Python gets, yet every chunk still costs a string object (made by the
chunk regex), a hash, a dict probe and a join, and every new chunk a call of Python code that
splits it and looks up its pieces. A corpus has about one chunk per 7 bytes.

This table does the same work for a batch of texts (about a megabyte: Tokenizer.encode_to_arrays,
and so `make shards`) in a few dozen numpy calls, making no Python object per chunk:
  1. the texts are joined into one array of UTF-8 bytes; a chunk starts wherever whitespace
     follows non-whitespace, and wherever a text starts (the chunk regex, as one comparison);
  2. a chunk of at most MAX_KEY_BYTES bytes *is* its key: its bytes, zero-padded, read as
     KEY_WORDS little-endian uint64 words, plus its length. Two different chunks never share a
     key, so a lookup is exact: no string, no hash collision to worry about;
  3. the keys are looked up in an open-addressing hash table held in one numpy array (a
     multiplicative hash picks the slot; linear probing; at most half the slots in use), all at
     once: one gather per probe step, and most keys are found at the first step. A slot is 32
     bytes, the key's three words and a fourth saying where the chunk's ids are, so a lookup reads
     one cache line: in a table of some hundred thousand chunks, memory latency, not arithmetic,
     is what a lookup costs;
  4. what the table does not hold is learned (_learn), still in numpy as far as possible: the
     missed keys are sorted so that each distinct one is learned once; an ASCII chunk is cut into
     pieces by the rules GPT-2's regex comes down to on ASCII (_pieces), and the pieces are looked
     up in the table too, since a piece is a key like any other; only the pieces no one has seen
     reach Python, all at once (PieceCache.learn_pieces: BPE, merged in numpy when there are
     many). A chunk with other characters (Unicode classes) goes to the dict cache, one by one, as
     it would without the table;
  5. a chunk longer than a key (a URL, a path, a long identifier) is looked up in the dict cache,
     which keeps them (bpe.py, "Memory"); the new ones, if ASCII, are cut into pieces and learned
     from them like the short ones (only a piece longer than a key, rare, sends its chunk to the
     dict), then handed to the dict to keep;
  6. every chunk's ids are copied out with one gather (np.repeat of where each chunk's ids start),
     and the batch's ids are cut back into one packed bytes per text.

Why it is exact: what the table holds for a string is its ids encoded alone -- given by the dict
cache, or assembled from pieces, which pattern.py proves are pieces when encoded alone -- so, like
the dict, it caches a pure function, and the two need not be kept in step: either may be emptied
at any time. Chunk boundaries are the ones pattern.py proves are piece boundaries, and a text's
start is one too, so no chunk spans two texts. tests/test_chunk_table.py holds the piece rules to
the regex on every short ASCII chunk, the whitespace bytes to the character table, and the whole
to tiktoken.

Memory: the table is emptied at the start of a batch when it holds max_entries keys, like the dict
(bpe.py, "Memory"), so it holds at most that many plus one batch's. A key costs ~70 bytes (two
slots of 32 bytes, its ids): at the default 500,000 keys ~35 MB.

Threads: a batch changes the table, so one batch at a time uses it; another thread's batch
meanwhile takes the dict path (Tokenizer does this with `lock`).
"""

from __future__ import annotations

import threading
from itertools import compress
from operator import not_
from typing import TYPE_CHECKING

import numpy as np

from .pattern import REGEX_WHITESPACE

if TYPE_CHECKING:
    from .bpe import ChunkCache

KEY_WORDS = 3  # a key is this many uint64 words (and a length)
MAX_KEY_BYTES = 8 * KEY_WORDS  # ~98% of the chunks of English text are this short (benchmark corpora)
_WHITESPACE = bytes(c for c in REGEX_WHITESPACE.encode("utf-8") if c < 128)  # \s on ASCII: no U+001C..U+001F
# The other whitespace characters, as UTF-8 (two or three bytes each), and their first bytes.
_WIDE_SPACES = [c.encode("utf-8") for c in REGEX_WHITESPACE if ord(c) >= 128]
_WIDE_SPACE_LEADS = np.array(sorted({s[0] for s in _WIDE_SPACES}), dtype=np.uint8)
_IS_WHITESPACE = np.zeros(256, dtype=bool)
_IS_WHITESPACE[list(_WHITESPACE)] = True
# Character classes of GPT-2's regex on ASCII: whitespace, letters, digits, the rest.
_SPACE_CLASS = 0
_CLASS = np.full(256, 3, dtype=np.uint8)
_CLASS[list(_WHITESPACE)] = _SPACE_CLASS
_CLASS[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")] = 1
_CLASS[list(b"0123456789")] = 2
_SHORT_CONTRACTIONS = np.frombuffer(b"sdmt", dtype=np.uint8)
# _LOW_BYTES[k] keeps the first k bytes of a little-endian word: a key's padding is always zero.
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
# Odd 64-bit multipliers that mix a key's words into a slot number (the first: 2**64 / golden ratio).
_MULTIPLIERS = [np.uint64(m) for m in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)]
_MIN_SLOTS = 1 << 12
# The fourth word of a slot, its "_where" word: the key's length (0: a free slot), how many ids the chunk has, and
# where they start in the table's array of ids.
_LENGTH_BITS, _COUNT_BITS = 8, 8
_START_SHIFT = _LENGTH_BITS + _COUNT_BITS


class ChunkTable:
    """Chunk (up to MAX_KEY_BYTES bytes of UTF-8) -> packed ids, for whole batches of texts at a time.

    `encode(texts, cache)`: the packed ids of every text. What the table does not hold comes from
    `cache`, the dict cache (bpe.ChunkCache): cache[chunk] is a chunk's packed ids (learned if
    need be), cache.get(chunk) those of a chunk it holds, cache.learn_pieces(pieces) those of each
    of a list of pieces, and cache.remember(new) keeps chunks learned here.
    """

    def __init__(self, typecode: str, max_entries: int):
        self.dtype = np.dtype(np.uint16 if typecode == "H" else np.uint32)
        self.max_entries = max_entries
        self.lock = threading.Lock()
        self.clear()

    def __len__(self) -> int:
        return self._n_keys

    def clear(self) -> None:
        self._make_slots(_MIN_SLOTS)
        self._n_keys = 0
        self._ids = np.zeros(4096, dtype=self.dtype)
        self._n_ids = 0

    def _make_slots(self, n_slots: int) -> None:
        self._slots = np.zeros((n_slots, KEY_WORDS + 1), dtype=np.uint64)  # key words, then _where
        self._shift = np.uint64(64 - (n_slots.bit_length() - 1))
        self._mask = n_slots - 1

    # ------------------------------------------------------------------------------ the batch
    def encode(self, texts: list[str], cache: ChunkCache) -> list[bytes]:
        encoded = [text.encode("utf-8") for text in texts]  # UnicodeEncodeError: a lone surrogate
        blob = b"".join(encoded)
        if not blob:
            return [b""] * len(texts)
        if self._n_keys >= self.max_entries:  # full: start again, like the dict (module doc)
            self.clear()
        starts, lengths, text_first_chunk = _chunks(blob, np.cumsum([0, *map(len, encoded)]))
        where = np.zeros(len(starts), dtype=np.uint64)  # each chunk's _where word; 0: not found
        short = np.flatnonzero(lengths <= MAX_KEY_BYTES)
        words = _key_words(blob, starts[short], lengths[short])
        where[short] = self._find(words, lengths[short])
        if not where[short].all():
            self._learn(blob, starts, lengths, short, words, where, cache)
        counts, sources = _count(where), _source(where)  # how many ids each chunk has, and where
        if len(short) < len(starts):
            self._learn_long(blob, starts, lengths, counts, sources, cache)

        # One gather for all the batch's ids.
        out = self._ids[_spans(sources, counts)].tobytes()
        ends = np.cumsum(counts)
        firsts = ends - counts  # where each chunk's ids are in `out`

        # Cut the output back into texts: a text's ids start where its first chunk's do.
        bounds = (np.append(firsts, ends[-1])[text_first_chunk] * self.dtype.itemsize).tolist()
        return [out[a:b] for a, b in zip(bounds, bounds[1:])]

    def _learn(self, blob, starts, lengths, short, words, where, cache: ChunkCache) -> None:
        """Find the ids of the short chunks the table missed, and keep them in the table.

        Repeats first: a new word is usually met several times in a batch, so the missed keys are
        sorted and only the distinct ones are learned. An ASCII one is learned from its pieces
        (_learn_by_pieces); one with other characters by the dict cache, which knows the Unicode
        classes (pattern.py).
        """
        missed = short[where[short] == 0]
        order, first = _distinct(words[np.searchsorted(short, missed)], lengths[missed])
        missed = missed[order]
        new = missed[first]  # one chunk for each distinct missed key
        new_words = words[np.searchsorted(short, new)]

        data = np.frombuffer(blob, dtype=np.uint8)
        if blob.isascii():
            ascii_new = np.ones(len(new), dtype=bool)
        else:  # a chunk with a byte over 127 is not ASCII: the dict cache knows its Unicode classes
            high_before = np.concatenate(([0], np.cumsum(data >= 0x80)))
            ascii_new = high_before[starts[new] + lengths[new]] == high_before[starts[new]]
        new_where = np.zeros(len(new), dtype=np.uint64)
        by_pieces = np.flatnonzero(ascii_new)
        if len(by_pieces):
            new_where[by_pieces] = self._learn_by_pieces(data, starts[new[by_pieces]], lengths[new[by_pieces]],
                                                         new_words[by_pieces], cache.learn_pieces)
        whole = np.flatnonzero(~ascii_new)
        if len(whole):
            ids = [cache[blob[a : a + k].decode("utf-8")]
                   for a, k in zip(starts[new[whole]].tolist(), lengths[new[whole]].tolist())]
            new_where[whole] = self._keep(new_words[whole], lengths[new[whole]], ids)
        where[missed] = new_where[np.cumsum(first) - 1]

    def _learn_by_pieces(self, data, starts, lengths, words, learn_pieces) -> np.ndarray:
        """_where words for new ASCII chunks, learned from their pieces.

        The chunks are cut into pieces here, in numpy (_pieces: on ASCII, GPT-2's regex comes down to
        a few rules about classes of characters), and the pieces looked up in the table too: a
        piece is a key like any other, since what the table holds for a string is its ids encoded
        alone, and a piece encoded alone is that one piece (pattern.py). Only the distinct pieces
        the table does not hold either reach Python, in one call of learn_pieces (BPE); a chunk's
        ids are then its pieces' ids, end to end."""
        # The chunks' bytes, end to end, and their pieces.
        packed = data[_spans(starts, lengths)]
        firsts = np.cumsum(lengths) - lengths  # where each chunk starts in `packed`
        piece_starts = _pieces(packed, firsts)
        piece_where, pieces_per_chunk = self._piece_where(packed, firsts, piece_starts, learn_pieces)

        # A chunk of one piece *is* that piece, kept as such by _piece_where. A chunk of several gets
        # its pieces' ids end to end, copied in one gather, kept under its own key.
        where = piece_where[np.cumsum(pieces_per_chunk) - pieces_per_chunk]
        several = np.flatnonzero(pieces_per_chunk > 1)
        if len(several):
            theirs = piece_where[np.repeat(pieces_per_chunk > 1, pieces_per_chunk)]
            where[several] = self._keep_packed(*self._end_to_end(theirs, pieces_per_chunk[several]),
                                               lengths[several])
            self._place(words[several], where[several])
        return where

    def _piece_where(self, packed, firsts, piece_starts, learn_pieces) -> tuple[np.ndarray, np.ndarray]:
        """The _where word of every piece of ASCII chunks laid end to end in `packed` (from `firsts`
        on, cut at `piece_starts`, every piece at most MAX_KEY_BYTES long), learning the pieces the
        table does not hold: the distinct ones, in one call of learn_pieces, then kept in the table.
        And how many pieces each chunk has."""
        piece_lengths = np.diff(piece_starts, append=len(packed))
        piece_words = _key_words(packed.tobytes(), piece_starts, piece_lengths)
        piece_where = self._find(piece_words, piece_lengths)
        pieces_per_chunk = np.diff(np.searchsorted(piece_starts, firsts), append=len(piece_starts))

        missing = np.flatnonzero(piece_where == 0)
        if len(missing):
            order, first = _distinct(piece_words[missing], piece_lengths[missing])
            missing = missing[order]
            new = missing[first]
            text = packed.tobytes()
            ids = learn_pieces([text[a : a + k].decode("ascii")
                                for a, k in zip(piece_starts[new].tolist(), piece_lengths[new].tolist())])
            piece_where[missing] = self._keep(piece_words[new], piece_lengths[new], ids)[np.cumsum(first) - 1]
        return piece_where, pieces_per_chunk

    def _end_to_end(self, piece_where: np.ndarray, pieces_per_chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids of chunks made of the given pieces (in order, `pieces_per_chunk` each), end to end
        in one gather from the table's ids, and how many each chunk has."""
        counts = _count(piece_where)
        return (self._ids[_spans(_source(piece_where), counts)],
                np.add.reduceat(counts, np.cumsum(pieces_per_chunk) - pieces_per_chunk))

    def _keep(self, words: np.ndarray, lengths: np.ndarray, ids: list[bytes]) -> np.ndarray:
        """Keep new keys with their packed ids; their _where words."""
        where = self._keep_packed(*self._flat(ids), lengths)
        self._place(words, where)
        return where

    def _learn_long(self, blob, starts, lengths, counts, sources, cache: ChunkCache) -> None:
        """Chunks longer than a key: looked up in the dict cache; the distinct ones it misses learned
        together (_learn_new_long) and handed to it. Their ids are written after the table's, for
        this batch only (the next batch writes over them)."""
        rows = np.flatnonzero(lengths > MAX_KEY_BYTES)
        chunks = [blob[a : a + k].decode("utf-8") for a, k in zip(starts[rows].tolist(), lengths[rows].tolist())]
        ids = list(map(cache.get, chunks))
        if not all(ids):  # packed ids are never empty: a falsy one is a miss (None)
            learned = self._learn_new_long(list(dict.fromkeys(compress(chunks, map(not_, ids)))), cache)
            ids = list(map(learned.get, chunks, ids))
        flat, n = self._flat(ids)  # after _learn_new_long, which may add ids to the table's
        counts[rows] = n
        sources[rows] = self._write_ids(flat, n)

    def _learn_new_long(self, chunks: list[str], cache: ChunkCache) -> dict[str, bytes]:
        """Packed ids of distinct long chunks the dict cache does not hold. The ASCII ones are cut
        into pieces in numpy and learned from them (_piece_where: the pieces are short keys like
        any other), then handed to the dict to keep; a chunk with other characters, or with a piece
        too long to be a key (a row of 30 dashes), is learned by the dict itself, one by one."""
        by_dict = [chunk for chunk in chunks if not chunk.isascii()]
        by_pieces = [chunk for chunk in chunks if chunk.isascii()]
        learned: dict[str, bytes] = {}
        packed, firsts, piece_starts = _ascii_pieces(by_pieces)
        too_long = piece_starts[np.diff(piece_starts, append=len(packed)) > MAX_KEY_BYTES]
        if len(too_long):  # their chunks go to the dict; the others are cut again without them
            has_long = np.zeros(len(by_pieces), dtype=bool)
            has_long[np.searchsorted(firsts, too_long, side="right") - 1] = True
            by_dict += [by_pieces[i] for i in np.flatnonzero(has_long).tolist()]
            by_pieces = [by_pieces[i] for i in np.flatnonzero(~has_long).tolist()]
            packed, firsts, piece_starts = _ascii_pieces(by_pieces)
        if by_pieces:
            piece_where, pieces_per_chunk = self._piece_where(packed, firsts, piece_starts, cache.learn_pieces)
            flat, chunk_counts = self._end_to_end(piece_where, pieces_per_chunk)
            data = flat.tobytes()
            ends = (np.cumsum(chunk_counts) * self.dtype.itemsize).tolist()
            learned = dict(zip(by_pieces, map(data.__getitem__, map(slice, [0, *ends[:-1]], ends))))
            cache.remember(dict(learned))
        learned.update(zip(by_dict, map(cache.__getitem__, by_dict)))
        return learned

    def _flat(self, ids: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Packed ids of several strings: all of them end to end, and how many each has."""
        counts = np.array([len(b) // self.dtype.itemsize for b in ids], dtype=np.int64)
        return np.frombuffer(b"".join(ids), dtype=self.dtype), counts

    def _write_ids(self, flat: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Write ids after the table's (growing its array as needed); where each string's ids start."""
        self._ids = _grown(self._ids, self._n_ids + len(flat))
        self._ids[self._n_ids : self._n_ids + len(flat)] = flat
        return self._n_ids + np.cumsum(counts) - counts

    def _keep_packed(self, flat: np.ndarray, counts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Append ids (`counts` per key, end to end in `flat`) to the table's; the keys' _where words."""
        starts = self._write_ids(flat, counts)
        self._n_ids += len(flat)
        # Every id stands for at least one byte, so a key's chunk (at most MAX_KEY_BYTES bytes) has
        # at most that many ids: its length and count both fit in 8 bits.
        return (lengths.astype(np.uint64) | (counts.astype(np.uint64) << np.uint64(_LENGTH_BITS))
                | (starts.astype(np.uint64) << np.uint64(_START_SHIFT)))

    # ------------------------------------------------------------------------------ the table
    def _slot(self, words: np.ndarray) -> np.ndarray:
        mixed = words[:, 0] * _MULTIPLIERS[0]
        for j in range(1, KEY_WORDS):
            mixed ^= words[:, j] * _MULTIPLIERS[j]
        return ((mixed * _MULTIPLIERS[0]) >> self._shift).astype(np.int64)

    def _find(self, words: np.ndarray, length: np.ndarray) -> np.ndarray:
        """The _where word of each key, 0 where the table does not hold it (linear probing, all
        keys at once). A key is its words *and* its length: "a" and "a\\0" have the same words."""
        where = np.zeros(len(length), dtype=np.uint64)
        slot = self._slot(words)
        todo = np.arange(len(length))
        while len(todo):
            held = self._slots[slot[todo]]  # one 32-byte row per key: the only random read
            found = (held[:, KEY_WORDS] & np.uint64(0xFF)) == length[todo]
            for j in range(KEY_WORDS):
                found &= held[:, j] == words[todo, j]
            where[todo[found]] = held[found, KEY_WORDS]
            todo = todo[~found & (held[:, KEY_WORDS] != 0)]  # a slot holding another key: probe on
            slot[todo] = (slot[todo] + 1) & self._mask
        return where

    def _place(self, words: np.ndarray, where: np.ndarray) -> None:
        """Put new, distinct keys in free slots, all at once: where several want the same free
        slot, the first takes it and the others probe on, as they would one after another."""
        if 2 * (self._n_keys + len(where)) > len(self._slots):  # keep at most half the slots in use
            held = self._slots[self._slots[:, KEY_WORDS] != 0]
            self._make_slots(1 << (2 * (self._n_keys + len(where)) - 1).bit_length())
            self._n_keys = 0
            self._place(held[:, :KEY_WORDS], held[:, KEY_WORDS])
        self._n_keys += len(where)
        slot = self._slot(words)
        todo = np.arange(len(where))
        while len(todo):
            at = slot[todo]
            free = self._slots[at, KEY_WORDS] == 0
            taken, first = np.unique(at[free], return_index=True)
            winners = todo[free][first]
            self._slots[taken, :KEY_WORDS] = words[winners]
            self._slots[taken, KEY_WORDS] = where[winners]
            placed = np.zeros(len(where), dtype=bool)
            placed[winners] = True
            todo = todo[~placed[todo]]
            slot[todo] = (slot[todo] + 1) & self._mask


def _spans(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Indices that read counts[i] items from starts[i] on, for each i in turn: the spans end to end.

    One np.repeat instead of a loop: item j of the output, in span i, is at starts[i] + (j - where
    span i begins in the output)."""
    ends = np.cumsum(counts)
    return np.repeat(starts - (ends - counts), counts) + np.arange(int(ends[-1]) if len(ends) else 0)


def _count(where: np.ndarray) -> np.ndarray:
    return ((where >> np.uint64(_LENGTH_BITS)) & np.uint64((1 << _COUNT_BITS) - 1)).astype(np.int64)


def _source(where: np.ndarray) -> np.ndarray:
    return (where >> np.uint64(_START_SHIFT)).astype(np.int64)


def _distinct(words: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort keys so that equal ones are together: (the order, and a mask of the first of each run)."""
    order = np.lexsort((*words.T, lengths))
    words, lengths = words[order], lengths[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (words[1:] != words[:-1]).any(axis=1) | (lengths[1:] != lengths[:-1])
    return order, first


def _pieces(data: np.ndarray, chunk_starts: np.ndarray) -> np.ndarray:
    """Where GPT-2's regex starts a piece in ASCII chunks (each encoded alone), laid end to end in
    `data` from `chunk_starts` on.

    On ASCII the regex's alternatives come down to a few rules. A piece is a run of letters, of
    digits or of other symbols, taking one space in front of it ( ?\\p{L}++, ...); so a piece starts
    where the class of character changes. Whitespace is cut before its last character when
    something follows, since \\s+(?!\\S) stops short of it: in the k leading whitespace characters
    of a chunk, a piece starts at k - 1 (when k >= 2), and the rest at k unless character k - 1 is a
    space, which then joins the rest's first run. Whitespace alone (the last chunk of a text) is one
    piece (\\s++$). Last, the contractions: an apostrophe where a piece starts, followed by s, d, m,
    t, ll, ve or re, is a piece of its own ('(?:[sdmt]|ll|ve|re) is the first alternative); an
    apostrophe that does not start a piece (after a symbol, or after the space that a run took)
    never starts one. The new piece after a contraction starts with a letter after a letter, so it
    is marked by hand; nothing else moves.
    """
    kind = _CLASS[data]
    starts = np.ones(len(data), dtype=bool)
    np.not_equal(kind[1:], kind[:-1], out=starts[1:])
    starts[chunk_starts] = True
    chunk_ends = np.append(chunk_starts[1:], len(data))
    # Leading whitespace: the first non-whitespace position of each chunk (or its end).
    positions = np.where(kind != _SPACE_CLASS, np.arange(len(data)), len(data))
    rest = np.minimum(np.minimum.reduceat(positions, chunk_starts), chunk_ends)
    led = (rest > chunk_starts) & (rest < chunk_ends)  # some whitespace, then something else
    last_space = rest[led] - 1  # the last whitespace character before the rest
    starts[last_space[last_space > chunk_starts[led]]] = True
    starts[rest[led][data[last_space] == ord(" ")]] = False
    # Contractions, at the apostrophes that start a piece.
    quotes = np.flatnonzero(starts & (data == ord("'")))
    if len(quotes):
        end = chunk_ends[np.searchsorted(chunk_starts, quotes, side="right") - 1]
        padded = np.append(data, np.zeros(2, dtype=np.uint8))
        one, two = padded[quotes + 1], padded[quotes + 2]
        long_form = (((one == ord("l")) & (two == ord("l"))) | ((one == ord("v")) & (two == ord("e")))
                     | ((one == ord("r")) & (two == ord("e")))) & (quotes + 3 <= end)
        short_form = np.isin(one, _SHORT_CONTRACTIONS) & (quotes + 2 <= end) & ~long_form
        for size, at in ((2, quotes[short_form]), (3, quotes[long_form])):
            for inside in range(1, size):
                starts[at + inside] = False
            after = at + size
            starts[after[after < end[short_form if size == 2 else long_form]]] = True
    return np.flatnonzero(starts)


def _ascii_pieces(chunks: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ASCII chunks end to end as bytes, where each starts, and where their pieces start (_pieces)."""
    if not chunks:
        return np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    packed = np.frombuffer("".join(chunks).encode("ascii"), dtype=np.uint8)
    lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
    firsts = np.cumsum(lengths) - lengths
    return packed, firsts, _pieces(packed, firsts)


def _chunks(blob: bytes, text_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each chunk starts and how long it is (in UTF-8 bytes); and for each text its first
    chunk's number (one more at the end: the number of chunks): text i is chunks [f[i], f[i+1])."""
    data = np.frombuffer(blob, dtype=np.uint8)
    space = _whitespace(data, blob.isascii())
    is_start = np.empty(len(data), dtype=bool)
    is_start[0] = True
    np.greater(space[1:], space[:-1], out=is_start[1:])  # whitespace after non-whitespace
    is_start[text_starts[:-1][text_starts[:-1] < len(data)]] = True
    starts = np.flatnonzero(is_start)
    lengths = np.diff(starts, append=len(data))
    return starts, lengths, np.searchsorted(starts, text_starts)


def _whitespace(data: np.ndarray, is_ascii: bool) -> np.ndarray:
    """Which bytes of UTF-8 text belong to a whitespace character (pattern.REGEX_WHITESPACE).

    The ASCII ones by a table; the others are two or three bytes long, and found by their first
    byte (a UTF-8 lead byte only ever starts a character) and then compared in full."""
    space = _IS_WHITESPACE[data]
    if is_ascii:
        return space
    padded = np.append(data, np.zeros(2, dtype=np.uint8))
    leads = np.flatnonzero(np.isin(data, _WIDE_SPACE_LEADS))
    for sequence in _WIDE_SPACES:
        at = leads
        for offset, byte in enumerate(sequence):
            at = at[padded[at + offset] == byte]
        for offset in range(len(sequence)):
            space[at + offset] = True
    return space


def _key_words(blob: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each chunk's bytes as KEY_WORDS little-endian words (rows), the bytes past its end zeroed."""
    padded = np.frombuffer(blob + bytes(MAX_KEY_BYTES), dtype=np.uint8)
    # A view of the bytes as a uint64 starting at *every* byte offset (stride 1): word[i] is bytes
    # i..i+7, so one gather reads every chunk's first 8 bytes, another the next 8, and so on.
    word = np.ndarray((len(blob) + MAX_KEY_BYTES - 8,), dtype="<u8", buffer=padded, strides=(1,))
    words = np.empty((len(starts), KEY_WORDS), dtype=np.uint64)
    for j in range(KEY_WORDS):
        words[:, j] = word[starts + 8 * j] & _LOW_BYTES[np.clip(lengths - 8 * j, 0, 8)]
    return words


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    """`array`, or a copy at least twice as long when it cannot hold `size` items."""
    if size <= len(array):
        return array
    bigger = np.zeros(max(size, 2 * len(array)), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger
