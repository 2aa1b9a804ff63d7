"""Train a byte-level BPE vocabulary: exact, HF-tokenizers-identical merges, in pure Python.

Reference: tokenizer/reference_bpe.py `train_merges` recounts every pair before every merge, in a few
lines; tests/test_reference_bpe.py and tests/test_learn_bpe.py hold this module to its merges. Read first:
`_merge_loop`; the packed ints, the heap and the index below are how it is made fast.

What BPE training computes
--------------------------
Start with the 256 byte tokens (ids 0..255 in GPT-2's byte order, see byte_order.py). Repeatedly
find the adjacent pair of tokens that occurs most often in the corpus, give the concatenation a new
id, and replace every occurrence of the pair by it. The list of merges in order *is* the tokenizer.

Tie rule (HF tokenizers' BpeTrainer): the highest count wins; among equal counts the smallest
(left_id, right_id) wins. Because ids 0..255 follow GPT-2's byte order and HF's ByteLevel alphabet
sorts its 256 characters into the same order, the pair ids -- and therefore every tie -- agree.

Why it is fast enough in pure Python
------------------------------------
1. Words, not text (pretokenize.py). Merges never cross a pre-token boundary, so the corpus
   becomes a table {word: frequency}; each distinct word is stored once, as a list of token ids.
2. Incremental pair counts. The count of every pair is computed once. A merge of (a, b) -> n only
   changes counts around each occurrence it rewrites: in  ... p a b q ...  the pairs (p, a) and
   (b, q) lose one occurrence times the word's frequency and (p, n) and (n, q) gain one. Nothing
   else in the corpus changes, so nothing else is recounted.
3. An index pair -> words. Each pair knows the words it occurs in, so a merge visits only those
   words, not all of them. The index is lazy: a word is never removed from a pair's list when the
   pair disappears from it; visiting it costs one scan that finds nothing. (HF keeps each word
   set inside the pair's heap entry; here it lives in a dict so that heap entries can be plain
   ints. A pair has one entry at a time, so the two layouts behave the same.)
4. A max-heap with lazy refresh. Finding the best pair by scanning all counts would be
   O(#pairs) per merge. Instead a heap holds (count, pair) entries, pushed when a pair is first
   seen. Counts change afterwards, so an entry may be stale: pop the top; if its stored count
   differs from the live count, push it back with the live count and pop again. Why this is exact:
   a pair only ever *gains* occurrences in the step that creates it (every pair a merge adds
   contains the token that merge created), and after that its count can only fall. So every
   stored count is >= its pair's live count, and once the top entry is up to date no other pair
   can beat it: each live count is at most its stored count, which is at most the top's (and a
   tie at equal count is decided by the packed pair, which the heap orders as the tie rule wants).

Merges that produce a token that already exists
-----------------------------------------------
HF's trainer appends such a merge but gives it the existing id, so the vocabulary does not grow
and there are more merges than new tokens; this loop does the same (`token_id.get(token)`). In the
configuration we train with -- the 256 bytes and nothing else at the start -- it provably never
happens: a stretch of a word that ends up covered by whole tokens is segmented the same way in
every word at every step (merges scan left to right, and a neighbour outside the stretch can only
take a boundary symbol away, which would split the stretch, never change how its inside is
grouped). So each string is built by one pair, in one step, and every merge is new. It does happen
when the vocabulary starts with longer tokens, as with HF's `special_tokens` at training time:
`train_bpe_from_counts(..., leading_tokens=...)` reproduces that, and the tests check both facts
against HF. The merges are reported as HF saves them (tokenizer.json): one rank per pair.
Training stops when the vocabulary reaches vocab_size, or when no pair occurs any more.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tokenizer.byte_order import BYTE_ORDER, BYTE_TO_ID
from tokenizer.pattern import GPT2_PATTERN
from tokenizer.pretokenize import count_pretokens

# A pair (left, right) is packed into one int, left << SHIFT | right: hashing and comparing one
# int is much cheaper than a tuple, and the packed order is the (left, right) tuple order, which
# is exactly the tie rule.
SHIFT = 32
MASK = (1 << SHIFT) - 1
MAX_VOCAB = 1 << SHIFT
# Heap entries pack (count, pair) into one int too; see _merge_loop.
PRIORITY = 1 << (2 * SHIFT)
KEY_MASK = PRIORITY - 1

# raw byte value -> token id, as a bytes.translate table (all ids < 256 fit in one byte).
_RAW_TO_ID = bytes(BYTE_TO_ID)


@dataclass
class BPETrainResult:
    vocab: list[bytes]  # vocab[id] = token bytes; ids 0..255 are the bytes in GPT-2 byte order
    merges: list[tuple[int, int]]  # (left_id, right_id) in rank order; may outnumber the new tokens


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    pattern: str = GPT2_PATTERN,
    workers: int | None = None,
    progress: bool = True,
    max_chars_per_doc: int | None = None,
) -> BPETrainResult:
    """Learn merges until the vocabulary (256 bytes + merged tokens) has vocab_size entries.

    vocab_size excludes special tokens (Tokenizer.train appends those). The vocabulary ends up
    smaller only if the corpus runs out of pairs. `workers` processes pre-tokenise (None: all
    cores; 1: in this process); `max_chars_per_doc` truncates each document first.
    """
    _check_vocab_size(vocab_size, 256)
    from .progress import progress_mode

    # The pre-tokeniser draws its own tqdm bar: only on a terminal, where its frames redraw in place
    # (in a log they would pile up in one line; progress.py).
    word_counts = count_pretokens(
        texts, pattern=pattern, workers=workers, max_chars_per_doc=max_chars_per_doc,
        progress=progress_mode(progress) == "bar",
    )
    return train_bpe_from_counts(word_counts, vocab_size, progress=progress)


def _check_vocab_size(vocab_size: object, minimum: int) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE vocabulary holds the 256 byte tokens "
            f"plus the merges, so vocab_size (excluding special tokens) must be at least {minimum}"
        )
    if vocab_size > MAX_VOCAB:
        raise ValueError(f"vocab_size={vocab_size} is too large (at most {MAX_VOCAB})")


def train_bpe_from_counts(
    word_counts: dict[bytes, int],
    vocab_size: int,
    *,
    progress: bool = False,
    leading_tokens: Sequence[bytes] = (),
) -> BPETrainResult:
    """The merge loop, on an already counted {pre-token bytes: frequency} table.

    `leading_tokens` reproduces what HF's BpeTrainer does with special tokens given at training
    time: they take ids 0..k-1, before the 256 bytes, and count toward vocab_size. A merge whose
    result equals one of them reuses its id. train_bpe never passes any (our ids 0..255 are always
    the bytes); the tests use it to show the duplicate-merge rule matches HF.
    """
    leading = [bytes(t) for t in leading_tokens]
    if any(len(t) < 2 for t in leading) or len(set(leading)) != len(leading):
        raise ValueError("leading_tokens must be distinct and at least 2 bytes long (bytes are always in the vocab)")
    k = len(leading)
    _check_vocab_size(vocab_size, 256 + k)
    words = []
    freqs = []
    for word, n in word_counts.items():
        if not isinstance(word, bytes) or isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"word_counts must map bytes to positive ints, got {word!r}: {n!r}")
        if len(word) < 2:  # a single byte has no pair to merge
            continue
        # Each distinct word becomes a mutable list of token ids (bytes.translate maps raw byte -> id in C).
        words.append(list(word.translate(_RAW_TO_ID)) if k == 0 else [BYTE_TO_ID[b] + k for b in word])
        freqs.append(n)
    vocab = leading + [bytes([BYTE_ORDER[i]]) for i in range(256)]
    merges, vocab = _merge_loop(words, freqs, vocab, vocab_size, progress)
    return BPETrainResult(vocab=vocab, merges=merges)


def _merge_loop(words, freqs, vocab, vocab_size, progress):
    # Initial pair counts, and the index: pair -> list of (indices of) words it occurs in.
    # Lists, not sets: most pairs occur in one or two words, and a small list costs a quarter of
    # a small set. Words are visited in order, so a repeat of the same word is always the last
    # element and `seen[-1] != i` keeps the lists free of duplicates.
    pair_counts: dict[int, int] = {}
    where: dict[int, list[int]] = {}
    for i, word in enumerate(words):
        f = freqs[i]
        for key in [x << SHIFT | y for x, y in zip(word, word[1:])]:
            pair_counts[key] = pair_counts.get(key, 0) + f
            seen = where.get(key)
            if seen is None:
                where[key] = [i]
            elif seen[-1] != i:
                seen.append(i)
    # The heap holds plain ints, key - count * PRIORITY: heapq is a min-heap, so the highest count
    # pops first, and on equal counts the smaller packed pair (the tie rule). One int per entry
    # makes every heap comparison a single int comparison instead of a tuple walk.
    heap = [key - count * PRIORITY for key, count in pair_counts.items()]
    heapq.heapify(heap)

    token_id = {tok: i for i, tok in enumerate(vocab)}
    merged_keys: list[int] = []  # packed pairs, in merge order
    bar = None
    if progress:
        from .progress import Progress

        bar = Progress(max(0, vocab_size - len(vocab)), desc="BPE merges", unit="tokens")

    heappush, heappop = heapq.heappush, heapq.heappop
    while len(vocab) < vocab_size and heap:
        entry = heappop(heap)
        key = entry & KEY_MASK
        live = pair_counts[key]
        if entry != key - live * PRIORITY:  # stale entry: refresh and try again (lazy refresh)
            if live > 0:
                heappush(heap, key - live * PRIORITY)
            else:  # a pair whose count fell to 0 never comes back: forget it
                del pair_counts[key]
                where.pop(key, None)
            continue
        a = key >> SHIFT
        b = key & MASK
        token = vocab[a] + vocab[b]
        new = token_id.get(token)
        if new is None:  # the usual case: a brand-new token
            new = len(vocab)
            vocab.append(token)
            token_id[token] = new
            if bar is not None:
                bar.update(1)
        merged_keys.append(key)

        # Rewrite every occurrence of (a, b) in the pair's words, left to right without overlap
        # (as HF does: "a a a" -> "aa a"), and update the counts of the neighbouring pairs. Like
        # HF, the merged pair's own count is left as it is: its heap entry and word list are used up.
        # Every pair a merge adds contains `new`, which occurs in no word yet, so new pairs are
        # counted locally: created[pair] = [count, word, word, ...], added to the tables at the end.
        # (Recording a created pair is written out twice below, for the left and the right neighbour,
        # rather than called as a helper: this is the innermost loop, and a call per rewrite costs
        # more than the duplication.)
        created: dict[int, list[int]] = {}
        new_shifted = new << SHIFT
        b_shifted = b << SHIFT
        used_per_match = 2 if a == b else 1  # how many a's one rewrite consumes
        for i in where.pop(key, ()):
            word = words[i]
            n_a = word.count(a)  # a's left to look at; the C-level scans replace a Python loop
            if not n_a:  # the lazy index: this word lost the pair in an earlier merge
                continue
            f = freqs[i]
            last = len(word) - 1
            j = word.index(a)
            while True:
                if j < last and word[j + 1] == b:
                    if j:  # left neighbour p: (p, a) loses, (p, new) gains
                        p = word[j - 1]
                        if p == new and new_shifted | a in created:  # "a b a b": the previous rewrite
                            created[new_shifted | a][0] -= f
                        else:
                            pair_counts[p << SHIFT | a] -= f
                        k = p << SHIFT | new
                        entry = created.get(k)
                        if entry is None:
                            created[k] = [f, i]
                        else:
                            entry[0] += f
                            if entry[-1] != i:
                                entry.append(i)
                    if j < last - 1:  # right neighbour q: (b, q) loses, (new, q) gains
                        q = word[j + 2]
                        pair_counts[b_shifted | q] -= f
                        k = new_shifted | q
                        entry = created.get(k)
                        if entry is None:
                            created[k] = [f, i]
                        else:
                            entry[0] += f
                            if entry[-1] != i:
                                entry.append(i)
                    word[j] = new
                    del word[j + 1]
                    last -= 1
                    n_a -= used_per_match
                else:
                    n_a -= 1
                if not n_a:
                    break
                j = word.index(a, j + 1)
        # New pairs enter the counts, the index and the heap (with their full count).
        for k, entry in created.items():
            count = entry[0] + pair_counts.get(k, 0)
            pair_counts[k] = count
            if count > 0:
                del entry[0]  # what is left is the pair's word list
                old = where.get(k)
                where[k] = entry if old is None else old + entry
                heappush(heap, k - count * PRIORITY)
    if bar is not None:
        bar.close()

    # As HF stores them: one rank per pair (a pair merged twice keeps its last rank).
    keys = merged_keys
    if len(set(keys)) != len(keys):  # a pair merged twice: never in our configuration (see above)
        last_rank = {key: rank for rank, key in enumerate(keys)}
        keys = sorted(last_rank, key=last_rank.__getitem__)
    merges = [(key >> SHIFT, key & MASK) for key in keys]
    return merges, vocab
