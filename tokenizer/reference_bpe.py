"""Byte-level BPE in its simplest form: train, encode and decode in about a hundred lines. Read this first.

This is the tokenizer as Karpathy's minbpe (`RegexTokenizer`) writes it: no caches, no heaps, no worker
processes, every pair recounted before every merge. It is slow (seconds for what the fast tokenizer does
in milliseconds) and obviously right, which is its job: the tests train and encode real text with both
and require the same merges and the same ids (tests/test_reference_bpe.py). The fast modules, and what
each one does to the loops below:

    train_merges  -> tokenizer/learn_bpe.py   incremental pair counts, an index pair -> words, a lazy heap
    merge_piece   -> tokenizer/bpe.py         a heap for long pieces, caches of pieces and whole chunks
    encode        -> tokenizer/core.py        cached chunks joined as packed uint16 bytes, special tokens
                     tokenizer/parallel.py    the same over worker processes

Three choices differ from minbpe, so that the ids are GPT-2's and HF tokenizers' ids:
  - the 256 byte tokens are numbered in GPT-2's byte order (byte_order.py: "!" is 0, space is 220), not
    by byte value;
  - among equally frequent pairs the smallest (left_id, right_id) wins (HF's BpeTrainer rule), not the
    pair that happened to be counted first;
  - the corpus is counted as {pre-token: how often it occurs} before training, instead of keeping every
    pre-token of the text: merges never cross a pre-token, so this changes no count, only the time.

Encoding merges, inside one pre-token, the adjacent pair whose *concatenation* has the lowest id (its
rank), leftmost first. minbpe asks instead for the pair whose *merge* came first; the two agree, because
the i-th merge is exactly what creates token 256 + i (bpe.py's docstring has the argument). The rank form
needs only {token bytes: id}, so it also runs GPT-2's and tiktoken's vocabularies as they are shipped.

Left out on purpose: the Unicode tables are the exact but slow spelling of the pattern (pattern.py's
`compile_pattern`, 10-30x slower than what encoding uses); lone surrogates are not repaired (they raise
UnicodeEncodeError); nothing is cached.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import regex

from tokenizer.byte_order import BYTE_ORDER, BYTE_TO_ID
from tokenizer.pattern import GPT2_PATTERN, compile_pattern

EOT = "<|endoftext|>"


# ------------------------------------------------------------------------------------------ training
def pair_counts(words: Mapping[tuple[int, ...], int]) -> Counter:
    """How often each adjacent pair of ids occurs, every word weighted by its count."""
    counts: Counter = Counter()
    for ids, n in words.items():
        for pair in zip(ids, ids[1:]):
            counts[pair] += n
    return counts


def merge(ids: tuple[int, ...], pair: tuple[int, int], new_id: int) -> tuple[int, ...]:
    """Replace every occurrence of `pair` in `ids` by `new_id`, left to right ("aaa" -> "aa" "a")."""
    out, i = [], 0
    while i < len(ids):
        if ids[i : i + 2] == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return tuple(out)


def train_merges(
    word_counts: Mapping[bytes, int], vocab_size: int, verbose: bool = False
) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Learn merges until the vocabulary has `vocab_size` tokens (or no pair is left).

    word_counts: {pre-token bytes: count}. Returns (vocab, merges): vocab[id] is the token's bytes (ids
    0..255 the single bytes in GPT-2's order), merges[i] = (left_id, right_id) created token 256 + i.
    verbose=True prints every merge as it is learned.
    """
    vocab = [bytes([BYTE_ORDER[i]]) for i in range(256)]
    words = {tuple(BYTE_TO_ID[b] for b in word): n for word, n in word_counts.items()}
    merges = []
    while len(vocab) < vocab_size:
        counts = pair_counts(words)
        if not counts:
            break  # every word is a single token: nothing left to merge
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent, then smallest ids
        new_id = len(vocab)
        vocab.append(vocab[best[0]] + vocab[best[1]])
        merges.append(best)
        words = {merge(ids, best, new_id): n for ids, n in words.items()}  # no two words merge into one
        if verbose:
            left, right = vocab[best[0]], vocab[best[1]]
            print(f"merge {len(merges)}/{vocab_size - 256}: {best[0]} {left!r} + {best[1]} {right!r} "
                  f"-> {new_id} {vocab[new_id]!r} ({counts[best]:,} occurrences)")
    return vocab, merges


# ------------------------------------------------------------------------------------------ encoding
def merge_piece(piece: bytes, ranks: Mapping[bytes, int]) -> list[bytes]:
    """BPE on one pre-token: merge the adjacent pair whose concatenation has the lowest rank, leftmost on ties,
    until no adjacent pair is a token. Returns the parts (as bytes; ranks[part] is each one's id)."""
    parts = [bytes([b]) for b in piece]
    while len(parts) > 1:
        rank, i = min((ranks.get(a + b, float("inf")), i) for i, (a, b) in enumerate(zip(parts, parts[1:])))
        if rank == float("inf"):
            break  # no adjacent pair is in the vocabulary
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


class ReferenceTokenizer:
    """{token bytes: id} + special tokens + the pre-tokenisation regex: the whole definition of a tokenizer."""

    def __init__(self, ranks: Mapping[bytes, int], special_tokens: Mapping[str, int] | None = None,
                 pattern: str = GPT2_PATTERN):
        self.ranks = dict(ranks)
        self.special_tokens = dict(special_tokens or {})
        self.pattern = pattern
        self.split = compile_pattern(pattern).findall  # text -> pre-tokens
        self.vocab = {i: token for token, i in self.ranks.items()}  # id -> bytes, for decoding
        self.vocab.update({i: s.encode("utf-8") for s, i in self.special_tokens.items()})

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = (EOT,),
              pattern: str = GPT2_PATTERN, verbose: bool = False) -> ReferenceTokenizer:
        """vocab_size counts the 256 bytes, the merges and the special tokens (which take the last ids)."""
        split = compile_pattern(pattern).findall
        word_counts = Counter(piece.encode("utf-8") for text in texts for piece in split(text))
        vocab, _ = train_merges(word_counts, vocab_size - len(special_tokens), verbose)
        specials = {s: len(vocab) + k for k, s in enumerate(special_tokens)}
        return cls({token: i for i, token in enumerate(vocab)}, specials, pattern)

    def encode_ordinary(self, text: str) -> list[int]:
        """Special-token text is ordinary text here."""
        return [self.ranks[part] for piece in self.split(text) for part in merge_piece(piece.encode("utf-8"),
                                                                                        self.ranks)]

    def encode(self, text: str, allowed_special: str | Iterable[str] = ()) -> list[int]:
        """Allowed special tokens become their ids; any other special token in the text is refused, as tiktoken
        does, so a document cannot smuggle in a control token."""
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        for special in self.special_tokens.keys() - allowed:
            if special in text:
                raise ValueError(f"Encountered text corresponding to disallowed special token {special!r}")
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        # A capturing group keeps the separators: ordinary, special, ordinary, special, ..., ordinary.
        parts = regex.split("(" + "|".join(map(regex.escape, sorted(allowed, key=len, reverse=True))) + ")", text)
        for k, part in enumerate(parts):
            ids += [self.special_tokens[part]] if k % 2 else self.encode_ordinary(part)
        return ids

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Concatenate the tokens' bytes; a cut through a UTF-8 character becomes U+FFFD by default."""
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors=errors)
