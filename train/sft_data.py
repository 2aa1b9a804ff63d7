"""Conversations as training rows: rendered ids + loss masks, packed into rows of T+1 tokens.

Fine-tuning reuses the pretraining loop unchanged (train/trainer.py): the loader shuffles and deals
*rows* of T+1 tokens, the model computes next-token cross-entropy over targets that are not -1. So all
SFT needs is rows whose targets are -1 wherever the loss mask is 0:

    ids   <|endoftext|><|user_start|> What does json.dumps do? <|user_end|><|assistant_start|> Ser ... <|assistant_end|>
    mask        0            0         0    0      0     0  0       0              0             1  ...       1
    inputs  = ids[:-1]      targets = ids[1:] where mask[1:] == 1, else -1

**Packing.** Conversations are far shorter than the context, and a row per conversation padded to T+1 would
spend most of every forward pass on padding. Whole conversations are instead packed into rows, best fit
decreasing (longest first, each into the fullest row that still has room), then the rest of a row is
padding (<|endoftext|> with target -1). No conversation is ever split across rows, so an answer is always
seen with its question. As in pretraining, attention is causal over the whole row, so a conversation can
see the ones before it in its row; each one starts with <|endoftext|>, which the model already treats as a
fresh start. Every row holds at least one assistant token, so no micro-batch has an empty loss.

A conversation longer than the context cannot be packed whole; the SFT stage cuts it after its last
assistant reply that fits (`fit_to_context`) or skips it when even its first reply does not fit, and
counts both in its manifest.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tokenizer.atomic_write import atomic_open

ARRAYS_FORMAT = "llm-journey-conversations/1"


@dataclass
class ConversationArrays:
    """The rendered conversations of one split, end to end: ids, mask, and where each one starts.

    Conversation k is ids[offsets[k]:offsets[k+1]] (and the same slice of mask). Stored as one .npz per
    split, written atomically; ids take uint16 when the vocabulary allows it, like the shards.
    """

    ids: np.ndarray
    mask: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_lists(cls, conversations: list[tuple[list[int], list[int]]], vocab_size: int) -> ConversationArrays:
        dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
        lengths = np.array([len(ids) for ids, _ in conversations], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.fromiter((t for c, _ in conversations for t in c), dtype=dtype, count=int(offsets[-1]))
        mask = np.fromiter((m for _, ms in conversations for m in ms), dtype=np.uint8, count=int(offsets[-1]))
        return cls(ids, mask, offsets)

    @classmethod
    def from_arrays(cls, conversations: list[tuple[np.ndarray, np.ndarray]]) -> ConversationArrays:
        """From per-conversation arrays (what the SFT stage keeps while reading: compact, unlike lists of ints)."""
        if not conversations:
            return cls(np.zeros(0, np.uint16), np.zeros(0, np.uint8), np.zeros(1, np.int64))
        lengths = np.array([len(ids) for ids, _ in conversations], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return cls(np.concatenate([ids for ids, _ in conversations]),
                   np.concatenate([mask for _, mask in conversations]).astype(np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def conversation(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
        return self.ids[lo:hi], self.mask[lo:hi]

    @property
    def learned_tokens(self) -> int:
        return int(self.mask.sum())

    def save(self, path: Path) -> Path:
        with atomic_open(path, "wb") as f:
            np.savez(f, format=np.array(ARRAYS_FORMAT), ids=self.ids, mask=self.mask, offsets=self.offsets)
        return path

    @classmethod
    def load(cls, path: Path) -> ConversationArrays:
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["format"]) != ARRAYS_FORMAT:
                    raise ValueError(f"format {str(z['format'])!r}")
                arrays = cls(z["ids"], z["mask"], z["offsets"])
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a conversations file of this project ({exc}); "
                             "rerun `make sft` to rebuild it") from None
        if arrays.offsets[-1] != len(arrays.ids) or len(arrays.ids) != len(arrays.mask):
            raise ValueError(f"{path}: inconsistent conversation arrays; rerun `make sft` to rebuild it")
        return arrays


def fit_to_context(ids: list[int], mask: list[int], reply_ends: list[int], limit: int
                   ) -> tuple[list[int], list[int]] | None:
    """The longest prefix that ends right after an assistant reply and has at most `limit` tokens.

    None when even the first reply does not fit: a cut inside an answer would teach the model to stop
    answering mid-sentence (no <|assistant_end|> to learn), so such a conversation is skipped instead.
    """
    if len(ids) <= limit:
        return ids, mask
    fitting = [end for end in reply_ends if end <= limit]
    if not fitting:
        return None
    return ids[:fitting[-1]], mask[:fitting[-1]]


def pack_rows(lengths: np.ndarray, row_tokens: int) -> list[list[int]]:
    """Conversation indices per row, best fit decreasing: deterministic, and little padding.

    Longest first; each goes into the row with the least room that still fits it (a bisect over the rows
    sorted by free space), or opens a new row. Every length must be <= row_tokens.
    """
    order = sorted(range(len(lengths)), key=lambda k: (-int(lengths[k]), k))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, row index), sorted
    for k in order:
        n = int(lengths[k])
        if n > row_tokens:
            raise ValueError(f"conversation {k} has {n} tokens, more than a row of {row_tokens}")
        i = bisect.bisect_left(free, (n, -1))
        if i < len(free):
            room, r = free.pop(i)
            rows[r].append(k)
            bisect.insort(free, (room - n, r))
        else:
            rows.append([k])
            bisect.insort(free, (row_tokens - n, len(rows) - 1))
    for row in rows:
        row.sort()  # conversations in corpus order inside a row
    return rows


class PackedConversations:
    """Rows of T+1 tokens made of whole conversations: what the loader deals (train/loader.Windows)."""

    def __init__(self, arrays: ConversationArrays, seq_len: int, split: str, pad_id: int):
        if len(arrays) == 0:
            raise ValueError(f"the {split!r} conversations are empty: nothing to train or evaluate on")
        self.split, self.seq_len = split, seq_len
        row_tokens = seq_len + 1
        rows = pack_rows(arrays.lengths(), row_tokens)
        self.tokens = np.full((len(rows), row_tokens), pad_id, dtype=np.int64)
        # targets: the next token where the mask says "learn it", else -1 (ignored by the loss)
        self.targets = np.full((len(rows), seq_len), -1, dtype=np.int64)
        for r, members in enumerate(rows):
            pos = 0
            for k in members:
                ids, mask = arrays.conversation(k)
                n = len(ids)
                self.tokens[r, pos:pos + n] = ids
                learn = mask[1:].astype(bool)
                self.targets[r, pos:pos + n - 1][learn] = ids[1:][learn]
                pos += n
        self.num_windows = len(rows)
        self.num_conversations = len(arrays)
        self.real_tokens = int(arrays.offsets[-1])
        self.learned_tokens = int((self.targets != -1).sum())

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.tokens.size

    def batch(self, window_ids) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.asarray(list(window_ids), dtype=np.int64)
        x = torch.from_numpy(self.tokens[rows, :-1])
        y = torch.from_numpy(self.targets[rows])
        return x, y

    def describe(self) -> str:
        return (f"{self.num_conversations:,} conversations in {self.num_windows:,} rows of {self.seq_len + 1} "
                f"({100 * self.padding_fraction:.1f}% padding), {self.learned_tokens:,} assistant tokens learned")


def unigram_entropy_of_targets(windows: PackedConversations, vocab_size: int) -> float:
    """Entropy of the assistant tokens' frequencies: the loss of the best model that ignores context."""
    t = windows.targets[windows.targets != -1]
    counts = np.bincount(t, minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


class ConversationData:
    """Fine-tuning data for the trainer (the same members as train/trainer.ShardData).

    train/val: the rendered conversations of each split; tokenizer: the chat tokenizer they were rendered
    with; sampler(model, device, autocast) -> list of str: the answers logged at each evaluation;
    checkpoint_extra: what every checkpoint records about where the run started (the base model).
    """

    def __init__(self, train: ConversationArrays, val: ConversationArrays, tokenizer, *, pad_id: int,
                 sampler=None, checkpoint_extra: dict | None = None, source: str = "conversations"):
        self.arrays = {"train": train, "val": val}
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.n_vocab
        self.tokenizer_fingerprint = tokenizer.fingerprint
        self.pad_id = pad_id
        self.sampler = sampler
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.source = source
        self.packed: dict[str, PackedConversations] = {}
        self.train_tokens = 0

    def windows(self, split: str, seq_len: int) -> PackedConversations:
        if split not in self.packed or self.packed[split].seq_len != seq_len:
            self.packed[split] = PackedConversations(self.arrays[split], seq_len, split, self.pad_id)
        if split == "train":  # an epoch is every row once: what the banner's "epochs" divides by
            self.train_tokens = self.packed[split].num_windows * seq_len
        return self.packed[split]

    def load_tokenizer(self, required: bool):
        return self.tokenizer

    def unigram_entropy(self) -> float:
        return unigram_entropy_of_targets(self.packed["train"], self.vocab_size)

    def describe(self, train: PackedConversations, seq_len: int) -> str:
        val = self.packed.get("val")
        held_out = f"; held out: {val.num_conversations:,} ({val.learned_tokens:,} assistant tokens)" if val else ""
        return f"{self.source}: train {train.describe()}{held_out}"
