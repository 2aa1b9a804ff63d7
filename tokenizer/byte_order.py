"""GPT-2's byte order: which token id (0..255) stands for which raw byte.

Byte-level BPE starts from the 256 possible byte values, so *every* string (any language, any
emoji, even invalid UTF-8) is representable and there is never an unknown token. GPT-2 did not
number those 256 base tokens by byte value, though. It first lists the 188 "printable" bytes
(0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF) in ascending order, then the remaining 68 bytes (control
characters, space, 0x7F-0xA0, 0xAD) in ascending order. So "!" is id 0, "0" is id 15 and the
space byte is id 220.

The same table gives GPT-2's *byte-to-unicode* alphabet used in its vocabulary files
(encoder.json, vocab.bpe) and in HF tokenizer.json: a printable byte is written as the character
with the same code point, and the n-th non-printable byte as chr(256 + n). That is why a leading
space shows up as "Ġ" (chr(256 + 32)) in GPT-2's vocabulary.
"""

from __future__ import annotations

PRINTABLE_BYTES: tuple[int, ...] = (
    *range(ord("!"), ord("~") + 1),
    *range(ord("¡"), ord("¬") + 1),
    *range(ord("®"), ord("ÿ") + 1),
)
_printable = set(PRINTABLE_BYTES)
OTHER_BYTES: tuple[int, ...] = tuple(b for b in range(256) if b not in _printable)

# BYTE_ORDER[token_id] == raw byte value, for token ids 0..255.
BYTE_ORDER: tuple[int, ...] = PRINTABLE_BYTES + OTHER_BYTES
# BYTE_TO_ID[raw byte value] == token id.
BYTE_TO_ID: tuple[int, ...] = tuple(sorted(range(256), key=lambda i: BYTE_ORDER[i]))

# GPT-2's printable stand-in character for every byte, and the inverse.
BYTE_TO_UNICODE: dict[int, str] = {b: chr(b) for b in PRINTABLE_BYTES}
BYTE_TO_UNICODE.update({b: chr(256 + n) for n, b in enumerate(OTHER_BYTES)})
UNICODE_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_UNICODE.items()}


def bytes_to_unicode_str(token: bytes) -> str:
    """Write token bytes in GPT-2's vocabulary alphabet (b" the" -> "Ġthe")."""
    return "".join(BYTE_TO_UNICODE[b] for b in token)


# str.translate table for the inverse: alphabet characters become the latin-1 character of their
# byte (so .encode("latin-1") yields the bytes in one C call); the 68 characters below 256 that
# are *not* in the alphabet become U+FFFF, which latin-1 cannot encode, so they are caught too.
_TO_LATIN1 = {ord(c): chr(b) for c, b in UNICODE_TO_BYTE.items()}
_TO_LATIN1.update({b: "\uffff" for b in OTHER_BYTES})


def unicode_str_to_bytes(text: str, *, where: str = "vocabulary") -> bytes:
    """Inverse of bytes_to_unicode_str; a character outside the alphabet is a corrupt file."""
    try:
        return text.translate(_TO_LATIN1).encode("latin-1")
    except UnicodeEncodeError:
        bad = next(c for c in text if c not in UNICODE_TO_BYTE)
        raise ValueError(
            f"{where}: token {text!r} contains {bad!r}, which is not in GPT-2's byte alphabet"
        ) from None


assert len(BYTE_ORDER) == 256 and len(set(BYTE_ORDER)) == 256
assert BYTE_ORDER[0] == ord("!") and BYTE_ORDER[15] == ord("0") and BYTE_ORDER[220] == ord(" ")
