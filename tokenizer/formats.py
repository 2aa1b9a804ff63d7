"""Tokenizer files: GPT-2's originals, our own format, tiktoken's and Hugging Face's.

| format                  | stores                                   | read | write |
|-------------------------|------------------------------------------|------|-------|
| encoder.json+vocab.bpe  | GPT-2: token strings -> id, merge list   | yes  | no    |
| tokenizer.ljt.json      | ours: everything + fingerprint           | yes  | yes   |
| .tiktoken (or .gz)      | base64(token) rank per line (ranks only) | yes  | yes   |
| HF tokenizer.json       | vocab, merges, pre-tokenizer, specials   | yes* | yes   |

* byte-level BPE tokenizer.json files whose ids are tiktoken-style ranks (load_hf_tokenizer_json).

Our format is versioned JSON: {"format": "llm-journey-tokenizer", "version": 1, "name",
"pattern", "tokens": [base64 of the token with rank i, ...], "special_tokens": {name: id},
"merges": [[left_rank, right_rank], ...], "fingerprint"}. Loading recomputes the fingerprint from
the content: a truncated file fails to parse, an edited one fails the fingerprint check, and both
errors name the file. Every writer goes through atomic_write.py (a temporary file + os.replace), so a crash never
leaves a half-written tokenizer under the real name.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import sys
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic_write import write_bytes_atomic
from .byte_order import BYTE_ORDER, bytes_to_unicode_str, unicode_str_to_bytes
from .pattern import GPT2_PATTERN

if TYPE_CHECKING:
    from .core import Tokenizer

LJT_FORMAT = "llm-journey-tokenizer"
LJT_VERSION = 1


class TokenizerFileError(ValueError):
    """A tokenizer file that is unreadable, truncated, tampered with or of the wrong kind."""


# ---------------------------------------------------------------------------------- GPT-2's
def read_gpt2_files(encoder_json: Path, vocab_bpe: Path):
    """(ranks, specials, merges) from GPT-2's encoder.json and vocab.bpe, cross-checked."""
    try:
        encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TokenizerFileError(f"{encoder_json}: cannot read GPT-2 encoder.json: {err}") from None
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise TokenizerFileError(f"{encoder_json}: expected a JSON object token -> int id")
    try:
        lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise TokenizerFileError(f"{vocab_bpe}: cannot read GPT-2 vocab.bpe: {err}") from None
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges: list[tuple[bytes, bytes]] = []
    for lineno, line in enumerate(lines, start=2):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise TokenizerFileError(f"{vocab_bpe}:{lineno}: expected 'left right', got {line!r}")
        where = f"{vocab_bpe}:{lineno}"
        merges.append((unicode_str_to_bytes(parts[0], where=where), unicode_str_to_bytes(parts[1], where=where)))

    n_ranks = 256 + len(merges)
    ranks: dict[bytes, int] = {}
    specials: dict[str, int] = {}
    for text, ident in encoder.items():
        if ident >= n_ranks:
            specials[text] = ident  # ids after the last merge: <|endoftext|>
        else:
            ranks[unicode_str_to_bytes(text, where=str(encoder_json))] = ident
    # The two files must agree: byte ids in GPT-2 byte order, merge i creates token 256 + i.
    for i in range(256):
        if ranks.get(bytes([BYTE_ORDER[i]])) != i:
            raise TokenizerFileError(f"{encoder_json}: id {i} is not byte {BYTE_ORDER[i]} (GPT-2 byte order)")
    for i, (a, b) in enumerate(merges):
        if ranks.get(a + b) != 256 + i:
            raise TokenizerFileError(
                f"{vocab_bpe}: merge #{i} ({bytes_to_unicode_str(a)} {bytes_to_unicode_str(b)}) should create "
                f"token {256 + i} in {encoder_json.name}, but that token has id {ranks.get(a + b)}"
            )
    if len(ranks) != n_ranks:
        raise TokenizerFileError(f"{encoder_json}: {len(ranks)} BPE tokens, but {vocab_bpe.name} implies {n_ranks}")
    return ranks, specials, merges


# ------------------------------------------------------------------------------ our format
def save_ljt(tok: Tokenizer, path: Path) -> Path:
    ranks = tok.mergeable_ranks
    tokens = [b""] * len(ranks)
    for token, rank in ranks.items():
        tokens[rank] = token
    doc = {
        "format": LJT_FORMAT,
        "version": LJT_VERSION,
        "name": tok.name,
        "pattern": tok.pattern,
        "n_vocab": tok.n_vocab,
        "special_tokens": tok.special_tokens,
        "fingerprint": tok.fingerprint,
        "tokens": [base64.b64encode(t).decode("ascii") for t in tokens],
        "merges": [[ranks[a], ranks[b]] for a, b in tok.merges],
    }
    return write_bytes_atomic(path, json.dumps(doc, ensure_ascii=False).encode("utf-8"))


def load_ljt(cls: type[Tokenizer], path: Path) -> Tokenizer:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise TokenizerFileError(f"{path}: cannot read tokenizer file: {err.strerror or err}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TokenizerFileError(f"{path}: not a valid tokenizer file (truncated or corrupt JSON: {err})") from None
    if not isinstance(doc, dict) or doc.get("format") != LJT_FORMAT:
        raise TokenizerFileError(f"{path}: not an {LJT_FORMAT} file (missing or wrong 'format' field)")
    if doc.get("version") != LJT_VERSION:
        raise TokenizerFileError(f"{path}: unsupported version {doc.get('version')!r} (this code reads {LJT_VERSION})")
    try:
        tokens = _decode_tokens(doc["tokens"])
        ranks = dict(zip(tokens, range(len(tokens))))  # token -> its index, the last one if repeated
        if len(ranks) != len(tokens):
            raise ValueError("duplicate token in 'tokens'")
        merges = [(tokens[a], tokens[b]) for a, b in doc["merges"]]
        tok = cls(ranks, doc["special_tokens"], doc["pattern"], merges, doc["name"])
    except (KeyError, TypeError, ValueError, IndexError, binascii.Error) as err:
        detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
        raise TokenizerFileError(f"{path}: invalid tokenizer file: {detail}") from None
    if tok.fingerprint != doc.get("fingerprint"):
        raise TokenizerFileError(
            f"{path}: fingerprint mismatch: the file says {doc.get('fingerprint')!r} but its content hashes to "
            f"{tok.fingerprint!r}; the file was modified or corrupted"
        )
    return tok


def _decode_tokens(encoded: list) -> list[bytes]:
    """The tokens of an ljt file's "tokens" list: base64.b64decode(t, validate=True) of each.

    On 3.11+, b64decode(t, validate=True) is binascii.a2b_base64(t, strict_mode=True) behind a
    Python-level wrapper that costs more than the decoding: called directly, GPT-2's 50k tokens
    decode ~2x faster, to the same bytes. Both refuse the same inputs, so on a failure the plain
    comprehension runs again, to raise the error it always raised.
    """
    if sys.version_info >= (3, 11):  # 3.10's b64decode checks the alphabet differently
        try:
            return [binascii.a2b_base64(t, strict_mode=True) for t in encoded]
        except (TypeError, ValueError):  # binascii.Error is a ValueError
            pass
    return [base64.b64decode(t, validate=True) for t in encoded]


# --------------------------------------------------------------------------------- tiktoken
def save_tiktoken(tok: Tokenizer, path: Path) -> Path:
    lines = [
        base64.b64encode(token) + b" %d" % rank
        for token, rank in sorted(tok.mergeable_ranks.items(), key=lambda kv: kv[1])
    ]
    return write_bytes_atomic(path, b"\n".join(lines) + b"\n")


def read_tiktoken(path: Path) -> dict[bytes, int]:
    return read_tiktoken_file(path)[0]


def read_tiktoken_file(path: Path) -> tuple[dict[bytes, int], str]:
    """(ranks, sha256 hex of the file's content) of a .tiktoken file, plain or gzipped (.tiktoken.gz,
    recognised by its magic bytes). The digest of the uncompressed content is the one tiktoken
    checks for OpenAI's files, which is how from_tiktoken recognises them."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        detail = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise TokenizerFileError(f"{path}: cannot read .tiktoken file: {detail}") from None
    return _parse_tiktoken(raw, path), hashlib.sha256(raw).hexdigest()


def _parse_tiktoken(raw: bytes, path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise TokenizerFileError(f"{path}:{lineno}: expected 'base64-token rank', got {line[:80]!r}") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise TokenizerFileError(f"{path}: ranks are not 0..{len(ranks) - 1} without gaps (truncated file?)")
    return ranks


# ------------------------------------------------------------------------------ HF tokenizers
def hf_tokenizer_json(tok: Tokenizer) -> dict:
    """The tokenizer.json document for HF `tokenizers` (BPE model, ByteLevel bytes)."""
    ranks = tok.mergeable_ranks
    vocab = {bytes_to_unicode_str(t): r for t, r in sorted(ranks.items(), key=lambda kv: kv[1])}
    for s, ident in tok.special_tokens.items():
        vocab[s] = ident
    merges = [[bytes_to_unicode_str(a), bytes_to_unicode_str(b)] for a, b in tok.merges]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if tok.pattern == GPT2_PATTERN:
        # ByteLevel's built-in regex is GPT-2's original, which splits identically (pattern.py).
        pre_tokenizer = byte_level
    else:
        # Any other regex: split with it first, then only map bytes to the byte-level alphabet.
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tok.pattern}, "behavior": "Isolated", "invert": False},
            {**byte_level, "use_regex": False},
        ]}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": ident, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for s, ident in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
        ],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {**byte_level, "trim_offsets": False},
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab, "merges": merges,
        },
    }


def load_hf_tokenizer_json(cls: type[Tokenizer], path: Path, name: str | None = None) -> Tokenizer:
    """A Tokenizer from an HF `tokenizers` tokenizer.json, when that file is a byte-level BPE this encoder
    computes the same ids for: what save_hf writes, GPT-2's, and most GPT-style ones.

    Conditions, each refused with the reason when not met: model BPE without normalizer, byte fallback or
    word affixes; a ByteLevel pre-tokenizer (GPT-2's regex), or a Split regex followed by ByteLevel without
    regex; the byte-level ids first (0..N-1, every byte present) and special tokens after them; and merge i
    creating a token ranked after merge i-1's, because HF applies merges by merge order and tiktoken-style
    BPE by token rank: only with that order do the two agree."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        detail = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise TokenizerFileError(f"{path}: cannot read tokenizer.json: {detail}") from None

    def refuse(why: str) -> TokenizerFileError:
        return TokenizerFileError(f"{path}: not a byte-level BPE tokenizer.json this tokenizer can read: {why}")

    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise refuse(f"model type {model.get('type') if isinstance(model, dict) else None!r}, not BPE")
    for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
        if model.get(key):
            raise refuse(f"model.{key} = {model[key]!r}")
    if model.get("byte_fallback"):
        raise refuse("model.byte_fallback is on (a SentencePiece-style BPE)")
    if doc.get("normalizer"):
        raise refuse(f"it has a normalizer ({doc['normalizer'].get('type')})")
    pattern = _hf_pattern(doc.get("pre_tokenizer"), refuse)

    specials = {t["content"]: t["id"] for t in doc.get("added_tokens") or [] if t.get("special")}
    try:
        ranks = {unicode_str_to_bytes(text, where=str(path)): ident
                 for text, ident in model["vocab"].items() if text not in specials}
        merges = []
        for pair in model.get("merges") or []:
            a, b = pair.split(" ") if isinstance(pair, str) else pair
            merges.append((unicode_str_to_bytes(a, where=str(path)), unicode_str_to_bytes(b, where=str(path))))
    except (KeyError, TypeError, ValueError) as err:
        raise refuse(f"unreadable vocab or merges ({err})") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise refuse("the byte-level tokens do not have the ids 0..N-1 (special tokens before them?)")
    last = -1
    for i, (a, b) in enumerate(merges):
        rank = ranks.get(a + b, -1)
        if rank <= last:
            raise refuse(f"merge #{i} ({bytes_to_unicode_str(a)} {bytes_to_unicode_str(b)}) creates a token ranked "
                         "before the previous merge's: HF and tiktoken-style BPE would encode differently")
        last = rank
    try:
        return cls(ranks, specials, pattern, merges, name or path.parent.name or "hf")
    except (TypeError, ValueError) as err:
        raise refuse(str(err)) from None


def _hf_pattern(pre: object, refuse) -> str:
    """The regex a tokenizer.json pre-tokenizer splits with: ByteLevel(use_regex) is GPT-2's; else a Split."""
    if isinstance(pre, dict) and pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        if pre.get("add_prefix_space"):
            raise refuse("ByteLevel.add_prefix_space is on (a space is added before every text)")
        return GPT2_PATTERN
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else None
    if (isinstance(steps, list) and len(steps) == 2 and steps[0].get("type") == "Split"
            and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex", True)
            and "Regex" in (steps[0].get("pattern") or {}) and steps[0].get("behavior") == "Isolated"
            and not steps[0].get("invert") and not steps[1].get("add_prefix_space")):
        return steps[0]["pattern"]["Regex"]
    kind = pre.get("type") if isinstance(pre, dict) else pre
    raise refuse(f"pre-tokenizer {kind!r}: expected ByteLevel, or Split(regex) then ByteLevel(use_regex=false)")


def save_hf(tok: Tokenizer, directory: Path, model_max_length: int | None = None) -> Path:
    """tokenizer.json + tokenizer_config.json for transformers' AutoTokenizer.

    model_max_length is the context of the model the tokenizer goes with: transformers truncates to it
    (`tok(text, truncation=True)`) and warns past it, so it must be the model's block_size, never more (a
    longer input makes the model index past its position embedding). A tokenizer exported alone
    (`make tokenizer`'s hf/, `python -m tokenizer convert --to hf`) knows no model: the key is left out,
    which transformers reads as "no limit known" (truncation=True then needs max_length=). `make
    export-hf` (model/hf.py: export_hf) writes the model's block_size into the directory's config.
    """
    directory.mkdir(parents=True, exist_ok=True)
    eot = tok.eot_id
    eot_text = next((s for s, i in tok.special_tokens.items() if i == eot), None)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **({"model_max_length": model_max_length} if model_max_length is not None else {}),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "bos_token": eot_text,
        "eos_token": eot_text,
        "unk_token": eot_text,
        "llm_journey_fingerprint": tok.fingerprint,
    }
    from .chat import has_chat_tokens, hf_chat_template

    if has_chat_tokens(tok):  # transformers' apply_chat_template then gives exactly tokenizer/chat.py's ids
        config["chat_template"] = hf_chat_template()
    write_bytes_atomic(directory / "tokenizer.json",
                 json.dumps(hf_tokenizer_json(tok), ensure_ascii=False).encode("utf-8"))
    write_bytes_atomic(directory / "tokenizer_config.json", json.dumps(config, indent=2).encode("utf-8"))
    return directory


def set_hf_model_max_length(directory: Path, model_max_length: int) -> bool:
    """Give the tokenizer_config.json in `directory` (if there is one) the context of the model saved
    beside it. False when the directory holds no tokenizer config."""
    path = directory / "tokenizer_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TokenizerFileError(f"{path}: cannot read the tokenizer config: {err}") from None
    if not isinstance(config, dict):
        raise TokenizerFileError(f"{path}: not a JSON object")
    config["model_max_length"] = model_max_length
    write_bytes_atomic(path, json.dumps(config, indent=2).encode("utf-8"))
    return True
