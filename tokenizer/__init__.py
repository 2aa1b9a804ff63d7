"""Pure-Python byte-level BPE tokenizer (GPT-2 / r50k_base compatible).

    from tokenizer import Tokenizer
    tok = Tokenizer.from_gpt2_files("encoder.json", "vocab.bpe")
    tok.encode("hello world")  # [31373, 995]

Modules: byte_order (the 256 base tokens), pattern (the pre-tokenisation regex and the proven
chunk boundaries of the fast path), unicode_classes + unicode_data (the character classes pinned
to tiktoken's Unicode version), bpe (merging one piece, caches), core (Tokenizer), formats (files),
openai_encodings (OpenAI's .tiktoken files with their patterns), parallel (encode_batch in worker
processes), learn_bpe (learning merges), chat (the chat format), atomic_write (how files are written).
"""

from .core import Tokenizer, compute_fingerprint
from .formats import TokenizerFileError

__all__ = ["Tokenizer", "TokenizerFileError", "compute_fingerprint"]
