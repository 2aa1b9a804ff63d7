"""Find one document in token shards, by id or by position, and read a page of its tokens.

`ShardReader.iter_documents` walks a whole split; a reader that wants document 1,234,567 (the shard
browser of the service, a notebook) must not. Two facts of the format make a direct look-up cheap:

- the manifest counts the documents that *begin* in each shard, so the shard holding document k of a
  split is found from the manifest alone, without opening a file;
- only a shard's first piece can continue a document (contract/shard_format.py), so within that shard
  document k is piece k, or k + 1 when the first piece is a continuation: one token read tells which.

A document is then a list of segments (shard, start, end): one, or more when it runs past the end of
its shard into the next ones. `read_page` copies only the tokens of the page asked for out of the
memory-mapped shards, so a page of a 100M-token shard costs a page, not the shard.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from contract.shard_format import ShardFormatError, ShardReader


def _no_check() -> None:
    return None


@dataclass(frozen=True)
class DocumentSpan:
    """Where one document lies: its split, position in the split, id, and (shard index, start, end) segments."""

    split: str
    position: int
    doc_id: str
    segments: tuple[tuple[int, int, int], ...]

    @property
    def length(self) -> int:
        """Tokens of the whole document, its leading end-of-text token included."""
        return sum(end - start for _, start, end in self.segments)

    @property
    def shard_indexes(self) -> list[int]:
        return [index for index, _, _ in self.segments]


def _continues(reader: ShardReader, entry: dict) -> bool:
    """Does this shard begin with the continuation of the previous shard's last document?"""
    return entry["tokens"] > 0 and reader.shard_tokens(entry)[0] != reader.eot_id


def _span(reader: ShardReader, split: str, position: int, shard: int, piece: int, ids: list[str],
          starts: np.ndarray) -> DocumentSpan:
    """The document whose first piece is `piece` of shard `shard`, followed into the next shards."""
    entries = reader.shards(split)
    end = int(starts[piece + 1]) if piece + 1 < len(starts) else entries[shard]["tokens"]
    segments = [(shard, int(starts[piece]), end)]
    doc_id = ids[piece]
    last_piece = piece == len(starts) - 1
    next_shard = shard + 1
    while last_piece and next_shard < len(entries) and _continues(reader, entries[next_shard]):
        next_ids, next_starts = reader.shard_pieces(entries[next_shard])
        if next_ids[0] != doc_id:
            raise ShardFormatError(f"{reader.root / entries[next_shard]['path']}: its first piece continues "
                                   f"{next_ids[0]!r}, but the shard before ends with {doc_id!r} (shards out of order?)")
        last_piece = len(next_starts) == 1   # the document fills this shard too: it may go on in the next
        end = int(next_starts[1]) if len(next_starts) > 1 else entries[next_shard]["tokens"]
        segments.append((next_shard, 0, end))
        next_shard += 1
    return DocumentSpan(split, position, doc_id, tuple(segments))


def documents_before(reader: ShardReader, split: str) -> list[int]:
    """For each shard of the split, how many documents begin in the shards before it (from the manifest)."""
    counts = [int(e["documents"]) for e in reader.shards(split)]
    return [0, *accumulate(counts)][:-1] if counts else []


def locate_position(reader: ShardReader, split: str, position: int) -> DocumentSpan:
    """Document number `position` (0-based) of `split`. IndexError when there is none."""
    total = reader.num_documents(split)
    if not 0 <= position < total:
        raise IndexError(f"split {split!r} has {total:,} documents: positions 0..{total - 1}, got {position}")
    before = documents_before(reader, split)
    shard = bisect_right(before, position) - 1
    # Shards in which no document begins (one long document fills them) have the same `before` as the
    # next shard; bisect_right picks the last of such a run, the one the document does begin in.
    entry = reader.shards(split)[shard]
    ids, starts = reader.shard_pieces(entry)
    piece = position - before[shard] + (1 if _continues(reader, entry) else 0)
    if piece >= len(ids):
        raise ShardFormatError(f"{reader.root / entry['path']}: the manifest counts {entry['documents']} documents "
                               f"beginning here, its index lists {len(ids)} pieces (damaged shard or manifest)")
    return _span(reader, split, position, shard, piece, ids, starts)


def locate_id(reader: ShardReader, doc_id: str, splits: list[str] | None = None,
              check: Callable[[], None] = _no_check) -> DocumentSpan | None:
    """The document with this id (the first one, in split order), or None. Reads the document index of each
    shard until it is found (the ids only, never the tokens); `check` runs before each shard."""
    for split in splits if splits is not None else reader.splits:
        before = documents_before(reader, split)
        for shard, entry in enumerate(reader.shards(split)):
            check()
            ids, starts = reader.shard_pieces(entry)
            try:
                piece = ids.index(doc_id)
            except ValueError:
                continue
            skip = 1 if _continues(reader, entry) else 0
            if piece < skip:   # the continuation of a document whose beginning was in no earlier shard
                raise ShardFormatError(f"{reader.root / entry['path']}: document {doc_id!r} continues here but "
                                       "does not begin in the shard before (shards out of order?)")
            return _span(reader, split, before[shard] + piece - skip, shard, piece, ids, starts)
    return None


def read_page(reader: ShardReader, span: DocumentSpan, offset: int, limit: int) -> np.ndarray:
    """Tokens [offset, offset + limit) of the document, copied out of the memory-mapped shards: only the
    pages of the files that hold them are read."""
    entries = reader.shards(span.split)
    wanted_end = offset + limit
    out, seen = [], 0
    for shard, start, end in span.segments:
        length = end - start
        lo, hi = max(offset, seen), min(wanted_end, seen + length)
        if lo < hi:
            tokens = reader.shard_tokens(entries[shard])
            out.append(np.array(tokens[start + lo - seen : start + hi - seen]))
        seen += length
        if seen >= wanted_end:
            break
    return np.concatenate(out) if out else np.zeros(0, dtype=reader.dtype)
