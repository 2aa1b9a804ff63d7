"""The Tokenizer: text <-> token ids with a byte-level BPE vocabulary (tiktoken-compatible API).

Encoding in three steps:
  1. special tokens ("<|endoftext|>") are cut out first, if allowed (tiktoken semantics: by
     default their text is *refused*, so user text can never forge a control token);
  2. the pre-tokenisation regex (pattern.py) cuts ordinary text into pieces: words with their
     leading space, number runs, punctuation runs, whitespace runs;
  3. each piece is UTF-8 encoded and merged into tokens by BPE (bpe.py).
Step 3 only ever sees one piece, so its result can be cached per piece; with GPT-2's regex,
step 2 can be skipped too for text seen before, by caching whole chunks such as " dog," (pattern.py
proves where chunks may be cut; bpe.ChunkCache holds chunks and pieces in one dict). The cache is
exact: it stores the output of a pure function of its key, and the tokenizer never changes.
Cached ids are packed into bytes (uint16 or uint32), so every encode first builds the packed ids
of the whole text with one join; encode() unpacks them into a list, encode_to_array() and
encode_batch()'s worker processes pass them on as they are (see bpe.py, parallel.py).
encode_to_arrays() encodes many texts in one call: with GPT-2's regex about a megabyte at a time
in numpy (chunk_table.py: chunks found, looked up and learned as arrays, Python only for pieces
never seen); with other patterns with the new words of all of them merged together at the end
(bpe.py, "Misses, in batches").

Ids: 0..255 are the single bytes (in GPT-2's byte order when trained here or loaded from GPT-2's
files), then merged tokens by rank, then special tokens. `n_vocab` is the largest id + 1.

Reference: tokenizer/reference_bpe.py `ReferenceTokenizer` computes the same ids with none of the speed
(tests/test_reference_bpe.py). Read first: `Tokenizer.encode` -> `_encode_packed` -> `_packed_ordinary`,
then bpe.py. Bookkeeping a first reading may skip: the `_validate_*` checks, the fingerprint, the files.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from base64 import b64encode
from binascii import b2a_base64
from collections.abc import Collection, Iterable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import regex

from .bpe import DEFAULT_CACHE_BYTES, DEFAULT_CACHE_SIZE, ChunkCache, PieceCache, bpe_parts, derive_merges, id_typecode
from .pattern import GPT2_PATTERN, chunk_splitter, piece_splitter
from .unicode_data import UNICODE_VERSION

EOT = "<|endoftext|>"
FINGERPRINT_VERSION = "ljt-fingerprint-v1"
# encode_to_arrays hands texts to the chunk table in batches of about this many characters: enough
# that its few dozen numpy calls per batch cost next to nothing per text and that a batch's new
# words are learned together, few enough that a batch's arrays (~100 bytes per chunk) stay small.
TABLE_BATCH_CHARS = 1 << 20
# The Unicode version of the character tables (unicode_data.py) that every fingerprint so far
# implies; see compute_fingerprint.
FINGERPRINT_UNICODE_BASELINE = "16.0.0"


def _check_str(value: object, func: str, arg: str = "text") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{func}() argument {arg!r} must be str, not {type(value).__name__}")
    return value


def _repair_surrogates(text: str) -> str:
    """What tiktoken does with a str that is not valid Unicode (lone surrogates).

    A surrogate *pair* written as two Python characters becomes the real character it encodes,
    and a lone surrogate becomes U+FFFD. Encoding such a text does not round-trip, by design.
    """
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def compute_fingerprint(pattern: str, mergeable_ranks: Mapping[bytes, int], special_tokens: Mapping[str, int]) -> str:
    """sha256 hex digest identifying an encoding: same fingerprint <=> same ids for every text.

    The hashed byte stream, all UTF-8, one item per line (stable; documented in the README):
        ljt-fingerprint-v1
        pattern <the regex>
        unicode <version>                   only if the tables are not Unicode 16.0.0 (see below)
        <base64(token bytes)> <rank>        one line per mergeable token, in rank order
        special <base64(name as UTF-8)> <id> one line per special token, in id order
    The token lines are exactly the body of a .tiktoken file. Merges and the name are not part of
    it: they do not change how text is encoded.

    The pattern's string alone does not say what \\p{L} matches: that is the Unicode version of
    the pinned character tables (unicode_classes.py), and regenerating them for another version
    changes the ids of texts with the characters the versions disagree on. So a version other
    than 16.0.0 is hashed too, and every fingerprint changes with it. 16.0.0 itself is not
    written, which keeps the fingerprints made before the tables were pinned: the ids they named
    depended on the installed `regex` module, and for GPT-2's regex differ from the pinned
    tables' only on characters that Unicode 17.0 added.
    """
    h = hashlib.sha256()
    h.update(f"{FINGERPRINT_VERSION}\npattern {pattern}\n".encode())
    if UNICODE_VERSION != FINGERPRINT_UNICODE_BASELINE:
        h.update(f"unicode {UNICODE_VERSION}\n".encode())
    # One update of all token lines, each made without b64encode's Python-level wrapper:
    # b2a_base64(t, newline=False) is b64encode(t).
    in_rank_order = sorted(mergeable_ranks.items(), key=itemgetter(1))
    h.update(b"".join([b"%s %d\n" % (b2a_base64(token, newline=False), rank) for token, rank in in_rank_order]))
    for name, ident in sorted(special_tokens.items(), key=lambda kv: kv[1]):
        h.update(b"special " + b64encode(name.encode("utf-8")) + b" %d\n" % ident)
    return h.hexdigest()


class Tokenizer:
    """Byte-level BPE tokenizer. Immutable after construction (which is what makes caching exact)."""

    def __init__(
        self,
        mergeable_ranks: Mapping[bytes, int],
        special_tokens: Mapping[str, int] | None = None,
        pattern: str = GPT2_PATTERN,
        merges: Sequence[tuple[bytes, bytes]] | None = None,
        name: str = "custom",
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        ranks = self._validate_ranks(mergeable_ranks)
        specials = self._validate_specials(special_tokens, len(ranks))
        _check_str(pattern, "Tokenizer", "pattern")
        _check_str(name, "Tokenizer", "name")
        self._ranks = ranks
        self._special_tokens = specials
        self._all_specials = frozenset(specials)
        self._pattern_str = pattern
        self._merges = self._validate_merges(merges, ranks) if merges is not None else None
        self.name = name
        self._fingerprint: str | None = None

        self._decoder: dict[int, bytes] = {rank: token for token, rank in ranks.items()}
        self._decoder.update({ident: s.encode("utf-8") for s, ident in specials.items()})
        # How packed ids are stored: 'H' (uint16) covers GPT-2's 50,257 ids, 'I' (uint32) anything larger.
        self._typecode = id_typecode(self.n_vocab)
        self._packed_specials = {s: array(self._typecode, [ident]).tobytes() for s, ident in specials.items()}
        self._special_regex = (
            regex.compile("|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)))
            if specials else None
        )

        self._split_pieces = piece_splitter(pattern)
        split_chunks = chunk_splitter(pattern)
        if split_chunks is not None:
            # Fast path: chunk -> ids; the regex runs only on chunks never seen (see pattern.py).
            self._cache: PieceCache = ChunkCache(ranks, self._typecode, self._split_pieces, cache_size, cache_bytes)
            self._split_text = split_chunks
            self._chunk_table_size: int | None = cache_size  # the table is made by the first batch
        else:
            self._cache = PieceCache(ranks, self._typecode, cache_size, cache_bytes)
            self._split_text = self._split_pieces
            self._chunk_table_size = None  # no chunks, no chunk table
        self._chunk_table = None

    # ----------------------------------------------------------------------------- validation
    @staticmethod
    def _validate_ranks(mergeable_ranks: Mapping[bytes, int]) -> dict[bytes, int]:
        if not isinstance(mergeable_ranks, Mapping):
            raise TypeError(f"mergeable_ranks must be a dict bytes -> int, not {type(mergeable_ranks).__name__}")
        ranks: dict[bytes, int] = {}
        for token, rank in mergeable_ranks.items():
            if not isinstance(token, bytes) or type(rank) is not int:
                raise TypeError(f"mergeable_ranks must map bytes to int, found {token!r}: {rank!r}")
            ranks[token] = rank
        if sorted(ranks.values()) != list(range(len(ranks))):
            raise ValueError("mergeable_ranks must use each rank 0..N-1 exactly once")
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ValueError(
                f"mergeable_ranks lacks {len(missing)} of the 256 single-byte tokens (e.g. byte {missing[0]}): "
                "byte-level BPE needs all of them so that every text can be encoded"
            )
        return ranks

    @staticmethod
    def _validate_specials(special_tokens: Mapping[str, int] | None, n_ranks: int) -> dict[str, int]:
        if special_tokens is None:
            return {}
        if not isinstance(special_tokens, Mapping):
            raise TypeError(f"special_tokens must be a dict str -> int, not {type(special_tokens).__name__}")
        specials: dict[str, int] = {}
        for s, ident in special_tokens.items():
            if not isinstance(s, str) or type(ident) is not int:
                raise TypeError(f"special_tokens must map str to int, found {s!r}: {ident!r}")
            if not s:
                raise ValueError("special_tokens: the empty string cannot be a special token")
            if ident < n_ranks:
                raise ValueError(f"special token {s!r} has id {ident}, which collides with the {n_ranks} BPE tokens")
            specials[s] = ident
        if len(set(specials.values())) != len(specials):
            raise ValueError(f"special_tokens: two special tokens share an id: {specials}")
        return specials

    @staticmethod
    def _validate_merges(merges: Sequence[tuple[bytes, bytes]], ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
        merges = list(merges)
        try:  # the common case, all valid, in one comprehension (~25% faster than the loop below)
            out = [(a, b) for a, b in merges
                   if type(a) is bytes and type(b) is bytes and a in ranks and b in ranks and a + b in ranks]
            if len(out) == len(merges):
                return out
        except (TypeError, ValueError):  # a malformed merge: the loop below raises what it always raised
            pass
        out = []  # some merge is not valid: the loop names the first one
        for i, pair in enumerate(merges):
            try:
                a, b = pair
                ok = type(a) is bytes and type(b) is bytes and a in ranks and b in ranks and a + b in ranks
            except (TypeError, ValueError):
                raise TypeError(f"merges[{i}] must be a pair of bytes, not {pair!r}") from None
            if not ok:
                if not (isinstance(a, bytes) and isinstance(b, bytes)):
                    raise TypeError(f"merges[{i}] must be a pair of bytes, not {pair!r}")
                raise ValueError(f"merges[{i}] = {pair!r}: both parts and their concatenation must be tokens")
            out.append((a, b))
        return out

    # -------------------------------------------------------------------------------- encoding
    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of `text`, treating special-token text like any other text. Fastest entry point."""
        _check_str(text, "encode_ordinary")
        return memoryview(self._packed_ordinary(text)).cast(self._typecode).tolist()

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Ids of `text`, with tiktoken's special-token rules.

        allowed_special: special tokens whose text becomes their id ("all" for every one).
        disallowed_special: special tokens whose text raises ValueError (default: all the ones not
        allowed, so a document can never smuggle in an <|endoftext|>); () encodes them as text.
        """
        packed = self._encode_packed(text, allowed_special, disallowed_special, "encode")
        return memoryview(packed).cast(self._typecode).tolist()

    def encode_to_array(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> array:
        """encode(), but the ids come as a compact `array.array` (typecode 'H' = uint16 when every id
        fits, else 'I' = uint32) instead of a list, and no Python int is ever made for them.

        The way to hand ids to numpy (np.frombuffer(ids, np.uint16), no copy) or to a file, like
        tiktoken's encode_to_numpy; `encode_to_array(text, disallowed_special=())` is
        encode_ordinary's semantics.
        """
        ids = array(self._typecode)
        ids.frombytes(self._encode_packed(text, allowed_special, disallowed_special, "encode_to_array"))
        return ids

    def encode_to_arrays(
        self,
        texts: Sequence[str],
        *,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[array]:
        """encode_to_array() of every text, in this process: the fast way to encode many texts.

        Without allowed special tokens and with GPT-2's regex, the texts go through the chunk table
        about TABLE_BATCH_CHARS characters at a time (chunk_table.py): a batch's chunks are looked
        up, and its new chunks cut into pieces, in numpy, and only the pieces none of them had seen
        reach Python. BENCHMARKS.md ("tokenizer-encode") measures it against one call per text.
        With other patterns, the new pieces of all the texts are merged together, in numpy (bpe.py,
        "Misses, in batches"). For parallel encoding see encode_batch().
        """
        if isinstance(texts, str):
            raise TypeError("encode_to_arrays() argument 'texts' must be a list of str, not a single str")
        out = []
        for packed in self._encode_packed_many(list(texts), allowed_special, disallowed_special, "encode_to_arrays"):
            ids = array(self._typecode)
            ids.frombytes(packed)
            out.append(ids)
        return out

    def _packed_ordinary(self, text: str) -> bytes:
        """The ids of `text` as ordinary text, packed (see bpe.py): the core of every encode."""
        try:
            # All C-level on cache hits: a regex findall, one dict lookup per chunk, one join.
            return self._cache.packed(self._split_text(text))
        except UnicodeEncodeError:
            return self._cache.packed(self._split_text(_repair_surrogates(text)))

    def _packed_ordinary_many(self, texts: list[str]) -> list[bytes]:
        """_packed_ordinary of every text: through the chunk table (chunk_table.py) in batches of
        about TABLE_BATCH_CHARS characters; without one, with their misses learned together (bpe.py)."""
        table = self._chunk_table
        if table is None and self._chunk_table_size is not None:
            from .chunk_table import ChunkTable  # numpy: imported by the first batch, not by loading

            table = self._chunk_table = ChunkTable(self._typecode, self._chunk_table_size)
        if table is None or not table.lock.acquire(blocking=False):  # another thread's batch has it
            return self._packed_dict_many(texts)
        try:
            out: list[bytes] = []
            start, size = 0, 0
            for end, text in enumerate(texts, 1):
                size += len(text)
                if size >= TABLE_BATCH_CHARS or end == len(texts):
                    out += self._packed_table_batch(texts[start:end])
                    start, size = end, 0
        finally:
            table.lock.release()
        return out

    def _packed_table_batch(self, texts: list[str]) -> list[bytes]:
        try:
            return self._chunk_table.encode(texts, self._cache)
        except UnicodeEncodeError:  # a lone surrogate in some text: the dict path repairs it
            return list(map(self._packed_ordinary, texts))

    def _packed_dict_many(self, texts: list[str]) -> list[bytes]:
        """_packed_ordinary of every text, with the misses of all of them learned together (bpe.py)."""
        try:
            return self._cache.packed_many(map(self._split_text, texts))
        except UnicodeEncodeError:  # a lone surrogate somewhere: repair the texts that need it
            return list(map(self._packed_ordinary, texts))

    def _encode_packed(self, text: str, allowed_special, disallowed_special, func: str) -> bytes:
        """encode()'s ids, packed; `func` names the public method in error messages."""
        _check_str(text, func)
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        if disallowed:
            _refuse_disallowed(text, disallowed)
        if not allowed:
            return self._packed_ordinary(text)
        return self._packed_allowing(text, allowed)

    def _encode_packed_many(self, texts: list[str], allowed_special, disallowed_special, func: str) -> list[bytes]:
        """_encode_packed of every text (the first bad text raises); without allowed special
        tokens, the misses of all the texts are learned together (bpe.py, "Misses, in batches")."""
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        for text in texts:
            _check_str(text, func)
            if disallowed:
                _refuse_disallowed(text, disallowed)
        if not allowed:
            return self._packed_ordinary_many(texts)
        return [self._packed_allowing(text, allowed) for text in texts]

    def _special_sets(self, allowed_special, disallowed_special) -> tuple[frozenset[str], frozenset[str]]:
        """(allowed, disallowed) special tokens, from encode()'s two arguments."""
        if allowed_special == "all":
            allowed = self._all_specials
        else:
            allowed = self._check_special_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = self._all_specials - allowed if allowed else self._all_specials
        else:
            disallowed = self._check_special_set(disallowed_special, "disallowed_special")
        return allowed, disallowed

    def _packed_allowing(self, text: str, allowed: frozenset[str]) -> bytes:
        try:
            return self._packed_with_specials(text, allowed)
        except UnicodeEncodeError:
            return self._packed_with_specials(_repair_surrogates(text), allowed)

    @staticmethod
    def _check_special_set(value: object, arg: str) -> frozenset[str]:
        if isinstance(value, str) or not isinstance(value, Collection):
            raise TypeError(f"encode() argument {arg!r} must be 'all' or a collection of str, not {value!r}")
        return frozenset(value)

    def _packed_with_specials(self, text: str, allowed: frozenset[str]) -> bytes:
        """Cut at allowed special tokens (like tiktoken: the next match of *any* special token; one
        that is not allowed is skipped by searching again one character later)."""
        parts: list[bytes] = []
        start = 0
        search = self._special_regex.search if self._special_regex is not None else None
        packed, split = self._cache.packed, self._split_text
        while True:
            match = None
            find_from = start
            while search is not None:
                match = search(text, find_from)
                if match is None or match.group() in allowed:
                    break
                find_from = match.start() + 1
            end = match.start() if match else len(text)
            if end > start:
                parts.append(packed(split(text[start:end])))
            if match is None:
                return b"".join(parts)
            parts.append(self._packed_specials[match.group()])
            start = match.end()

    def encode_batch(
        self,
        texts: Iterable[str],
        workers: int | None = None,
        *,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[list[int]]:
        """encode() every text, in parallel when that pays off; results in input order.

        workers: how many processes encode, this one included (default: all CPU cores), so
        workers=2 forks one child; workers=1 or a batch under two million characters runs in this
        process only (see parallel.py).
        """
        from .parallel import encode_batch

        return encode_batch(self, texts, workers, allowed_special=allowed_special,
                            disallowed_special=disallowed_special)

    def encode_single_piece(self, piece: bytes) -> list[int]:
        """BPE on raw bytes without pre-tokenisation (debugging and teaching aid)."""
        if not isinstance(piece, bytes):
            raise TypeError(f"encode_single_piece() argument 'piece' must be bytes, not {type(piece).__name__}")
        return [self._ranks[p] for p in bpe_parts(piece, self._ranks)]

    def clear_cache(self) -> None:
        """Forget cached pieces and chunks (only useful to measure a cold start)."""
        self._cache.clear()
        self._chunk_table = None  # the next batch makes a new one (another thread may be using this one)

    # -------------------------------------------------------------------------------- decoding
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of `ids` (may be invalid UTF-8 if cut in the middle of a character)."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(f"decode() argument 'ids' must be a sequence of int, not {type(ids).__name__}")
        try:
            return b"".join(map(self._decoder.__getitem__, ids))
        except (KeyError, TypeError) as err:  # TypeError: an unhashable id such as a list
            bad = err.args[0] if isinstance(err, KeyError) else next((i for i in ids if not isinstance(i, int)), None)
            if not isinstance(bad, int):
                raise TypeError(f"decode(): token ids must be int, found {bad!r}") from None
            raise ValueError(
                f"decode(): unknown token id {bad!r} (this vocabulary has ids 0..{self.n_vocab - 1})"
            ) from None

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Text of `ids`; invalid UTF-8 becomes U+FFFD by default (errors="strict" raises)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def decode_single_token_bytes(self, ident: int) -> bytes:
        try:
            return self._decoder[ident]
        except (KeyError, TypeError):
            raise ValueError(f"unknown token id {ident!r}") from None

    # ------------------------------------------------------------------------------ properties
    @property
    def n_vocab(self) -> int:
        return max(self._decoder) + 1

    @property
    def eot_id(self) -> int | None:
        """Id of <|endoftext|>, the document separator (None if this vocabulary has none)."""
        return self._special_tokens.get(EOT)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_tokens)

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self._special_tokens)

    @property
    def pattern(self) -> str:
        return self._pattern_str

    @property
    def mergeable_ranks(self) -> Mapping[bytes, int]:
        return MappingProxyType(self._ranks)

    @property
    def merges(self) -> list[tuple[bytes, bytes]]:
        """The merge list in order; recovered from the ranks when the source had none (.tiktoken)."""
        if self._merges is None:
            self._merges = derive_merges(self._ranks)
        return list(self._merges)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = compute_fingerprint(self._pattern_str, self._ranks, self._special_tokens)
        return self._fingerprint

    def __repr__(self) -> str:
        return f"<Tokenizer {self.name!r} n_vocab={self.n_vocab} fingerprint={self.fingerprint[:12]}>"

    def __reduce__(self):
        # Pickle (for spawn-started workers) the definition, not the caches.
        return (_rebuild, (self._ranks, self._special_tokens, self._pattern_str, self._merges, self.name))

    # ---------------------------------------------------------------------- construction, files
    @classmethod
    def from_gpt2_files(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike,
                        name: str = "gpt2") -> Tokenizer:
        """GPT-2's own vocabulary from its encoder.json and vocab.bpe (r50k_base)."""
        from .formats import read_gpt2_files

        ranks, specials, merges = read_gpt2_files(Path(encoder_json), Path(vocab_bpe))
        return cls(ranks, specials, GPT2_PATTERN, merges, name)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 4096,
        special_tokens: Sequence[str] = (EOT,),
        workers: int | None = None,
        progress: bool = True,
        max_chars_per_doc: int | None = None,
        pattern: str = GPT2_PATTERN,
        name: str = "custom",
    ) -> Tokenizer:
        """Train a byte-level BPE on `texts`; vocab_size counts the 256 bytes, the merges and the specials."""
        if type(vocab_size) is not int:
            raise TypeError(f"train() argument 'vocab_size' must be int, not {type(vocab_size).__name__}")
        if isinstance(special_tokens, str) or not all(isinstance(s, str) for s in special_tokens):
            raise TypeError("train() argument 'special_tokens' must be a sequence of str, e.g. ('<|endoftext|>',)")
        special_tokens = list(dict.fromkeys(special_tokens))
        minimum = 256 + len(special_tokens)
        if vocab_size < minimum:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: it must hold the 256 byte tokens plus "
                f"{len(special_tokens)} special token(s), so at least {minimum}"
            )
        from .learn_bpe import train_bpe  # lazily: encoding never needs the trainer

        result = train_bpe(texts, vocab_size - len(special_tokens), pattern=pattern, workers=workers,
                           progress=progress, max_chars_per_doc=max_chars_per_doc)
        vocab = result.vocab
        ranks = {token: i for i, token in enumerate(vocab)}
        merges = [(vocab[a], vocab[b]) for a, b in result.merges]
        specials = {s: len(vocab) + k for k, s in enumerate(special_tokens)}
        return cls(ranks, specials, pattern, merges, name)

    def save(self, path: str | os.PathLike) -> Path:
        """Our versioned JSON format (conventionally tokenizer.ljt.json); atomic."""
        from .formats import save_ljt

        return save_ljt(self, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a file written by save(); verifies format, version and fingerprint."""
        from .formats import load_ljt

        return load_ljt(cls, Path(path))

    def save_tiktoken(self, path: str | os.PathLike) -> Path:
        """tiktoken's .tiktoken file: base64(token) rank, one per line (specials and pattern are not stored)."""
        from .formats import save_tiktoken

        return save_tiktoken(self, Path(path))

    @classmethod
    def from_tiktoken(cls, path: str | os.PathLike, special_tokens: Mapping[str, int] | None = None,
                      pattern: str | None = None, name: str | None = None) -> Tokenizer:
        """Load a .tiktoken rank file (or a gzipped one, .tiktoken.gz).

        The file stores only the ranks. OpenAI's own files -- r50k_base, cl100k_base, o200k_base --
        are recognised by their sha256 and get their own regex, special tokens and name
        (openai_encodings.py), so `Tokenizer.from_tiktoken("o200k_base.tiktoken")` gives tiktoken's
        o200k_base ids. Any other file gets GPT-2's regex, {"<|endoftext|>": last rank + 1} and the
        file's stem. `special_tokens`, `pattern` and `name` override either; the merges are
        recovered from the ranks.
        """
        from .formats import read_tiktoken_file
        from .openai_encodings import BY_SHA256

        ranks, digest = read_tiktoken_file(Path(path))
        known = BY_SHA256.get(digest)
        if pattern is None:
            pattern = known.pattern if known else GPT2_PATTERN
        if special_tokens is None:
            special_tokens = dict(known.special_tokens) if known else {EOT: len(ranks)}
        if name is None:
            name = known.name if known else Path(Path(path).name.removesuffix(".gz")).stem
        return cls(ranks, special_tokens, pattern, None, name)

    def to_tiktoken(self):
        """This tokenizer as a `tiktoken.Encoding`: same ranks, regex and special tokens, same ids.

        Needs the tiktoken package (imported only here). tiktoken compiles the regex with Rust's
        regex engine, which reads tiktoken-style patterns (GPT-2's, cl100k's, o200k's) but not every
        construct of Python's `regex` module; it then raises ValueError.
        """
        try:
            import tiktoken
        except ImportError:
            raise ImportError("Tokenizer.to_tiktoken() needs the tiktoken package: pip install tiktoken") from None
        return tiktoken.Encoding(self.name, pat_str=self._pattern_str, mergeable_ranks=dict(self._ranks),
                                 special_tokens=dict(self._special_tokens))

    def save_hf(self, directory: str | os.PathLike) -> Path:
        """HF `tokenizers` tokenizer.json + transformers tokenizer_config.json into `directory`."""
        from .formats import save_hf

        return save_hf(self, Path(directory))


def _rebuild(ranks, specials, pattern, merges, name) -> Tokenizer:
    return Tokenizer(ranks, specials, pattern, merges, name)


def _refuse_disallowed(text: str, disallowed: frozenset[str]) -> None:
    """Raise if `text` holds a disallowed special token (the first one in the text, as tiktoken)."""
    # `in` is a C substring scan, far cheaper than a regex search over the whole text; only when
    # one is present do we work out which occurs first (what tiktoken reports).
    found = [s for s in disallowed if s in text]
    if found:
        raise_disallowed_special_token(min(found, key=lambda s: (text.find(s), -len(s))))


def raise_disallowed_special_token(token: str):
    raise ValueError(
        f"Encountered text corresponding to disallowed special token {token!r}.\n"
        f"To encode it as the special token, pass allowed_special={{{token!r}}} (or allowed_special='all').\n"
        f"To encode it as ordinary text, pass disallowed_special=() "
        f"(or leave {token!r} out of disallowed_special)."
    )
