"""HellaSwag, completion style: which of 4 endings does the model find most likely after the context?

A base model cannot answer "A, B, C or D", so each ending is scored as a continuation: the rows
`context + " " + ending_i` go through the model together, and the cross-entropy of the *ending* tokens
(the context only conditions) is averaged per row. acc_norm picks the ending with the lowest average
(length-normalised) loss -- the number GPT-2 124M is quoted with (~0.2955); acc, the lowest total loss,
favours short endings. Chance is 0.25.

The file is the official jsonl (one example per line: "ctx", "endings" (4 strings), "label" (0-3), among
other fields); `download` fetches the validation split (10,042 examples) when online. Its command line is
`python -m pipelines.hellaswag` (`make hellaswag`): commands live with the stages, whose error policy they share.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tokenizer.atomic_write import atomic_path

VAL_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
VAL_EXAMPLES = 10_042


class HellaSwagDownloadError(ValueError):
    """The validation file could not be fetched (no network, a proxy, a server error); says what to do."""


@dataclass(frozen=True)
class Example:
    ctx: str
    endings: tuple[str, str, str, str]
    label: int


def load_examples(path: str | Path, limit: int = 0) -> list[Example]:
    """Read and validate a HellaSwag jsonl; a malformed line is an error naming the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HellaSwag file {path} does not exist (make hellaswag downloads the official one)")
    examples = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object")
            ctx, endings, label = obj.get("ctx"), obj.get("endings"), obj.get("label")
            if not isinstance(ctx, str) or not ctx:
                raise ValueError(f"{where}: field 'ctx' must be a non-empty string")
            if not (isinstance(endings, list) and len(endings) == 4 and all(isinstance(e, str) and e for e in endings)):
                raise ValueError(f"{where}: field 'endings' must be a list of 4 non-empty strings")
            if isinstance(label, str) and label.isdigit():
                label = int(label)
            if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < 4:
                raise ValueError(f"{where}: field 'label' must be an integer 0-3, got {label!r}")
            examples.append(Example(ctx, tuple(endings), label))
            if limit and len(examples) >= limit:
                break
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def render(example: Example, encode: Callable[[str], list[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, mask), both (4, L): row i = context + " " + ending i, right-padded; mask 1 on ending tokens.

    The space goes in front of the ending because GPT-2-style tokenizers attach it to the next word
    (" dog" is one token). A context that would not fit max_len loses tokens from its *start*.
    """
    ctx = encode(example.ctx)
    rows = []
    for ending in example.endings:
        end = encode(" " + ending)
        if len(end) >= max_len:
            end = end[: max_len - 1]  # pathological: keep at least one context token to condition on
        keep = max_len - len(end)
        rows.append((ctx[-keep:], end))
    length = max(len(c) + len(e) for c, e in rows)
    tokens = torch.zeros((4, length), dtype=torch.long)
    mask = torch.zeros((4, length), dtype=torch.long)
    for i, (c, e) in enumerate(rows):
        tokens[i, : len(c) + len(e)] = torch.tensor(c + e, dtype=torch.long)
        mask[i, len(c) : len(c) + len(e)] = 1
    return tokens, mask


def ending_losses(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, mean) cross-entropy of the masked (ending) tokens per row; logits (4, L, V) predict tokens[:, 1:]."""
    shift_logits = logits[:, :-1, :].float()
    shift_tokens, shift_mask = tokens[:, 1:], mask[:, 1:].float()
    per_token = F.cross_entropy(shift_logits.transpose(1, 2), shift_tokens, reduction="none")  # (4, L-1)
    total = (per_token * shift_mask).sum(dim=1)
    return total, total / shift_mask.sum(dim=1)


@torch.no_grad()
def score(model: torch.nn.Module, examples: list[Example], encode: Callable[[str], list[int]], *, device: str,
          block_size: int, autocast=None, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """[n, correct (acc), correct_norm (acc_norm)] over this rank's share of examples (sum them across ranks)."""
    counts = torch.zeros(3, dtype=torch.float64)
    for i in range(rank, len(examples), world_size):
        ex = examples[i]
        tokens, mask = render(ex, encode, block_size)
        tokens, mask = tokens.to(device), mask.to(device)
        if autocast is not None:
            with autocast():
                logits, _ = model(tokens)
        else:
            logits, _ = model(tokens)
        total, mean = ending_losses(logits, tokens, mask)
        counts[0] += 1
        counts[1] += int(total.argmin().item() == ex.label)
        counts[2] += int(mean.argmin().item() == ex.label)
    return counts


# What a failed download raises, besides OSErrors of the local disk (which stay OSErrors: a full disk is
# not a network problem): urllib's URLError (HTTPError included) before the body, and a connection that
# breaks or stalls while the body arrives.
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


def download(dest: str | Path, url: str = VAL_URL) -> Path:
    """Fetch the official validation jsonl (thin on purpose: urllib, temp file, os.replace, sanity check).

    urllib honours HTTPS_PROXY / HTTP_PROXY / NO_PROXY. A network failure is a HellaSwagDownloadError
    naming the cause and the way around it; nothing is left at `dest` unless the whole file arrived
    and parsed."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:   # validated before it gets its final name
        try:
            urllib.request.urlretrieve(url, tmp)
        except NETWORK_ERRORS as exc:
            reason = getattr(exc, "reason", None) or exc
            raise HellaSwagDownloadError(
                f"cannot download HellaSwag from {url} ({reason}); with no network here, download it elsewhere "
                f"and copy it to {dest}, or point eval.hellaswag at a copy you have") from None
        n = len(load_examples(tmp))
        if url == VAL_URL and n != VAL_EXAMPLES:
            raise ValueError(f"{url}: expected {VAL_EXAMPLES} examples, got {n}")
    return dest
