"""Validation loss: the mean next-token cross-entropy over a fixed set of val windows.

Shared by the training loop (every eval.every steps) and `make eval` (from a checkpoint), so both
report the same number for the same weights.
"""

from __future__ import annotations

import contextlib

import torch

from train.loader import TokenWindows


@torch.no_grad()
def window_loss(model: torch.nn.Module, windows: TokenWindows, ids: list[int], batch_size: int, device: str,
                autocast=contextlib.nullcontext) -> torch.Tensor:
    """[sum of token losses, number of tokens] for `ids` (sum across ranks, then divide).

    Counts only targets that are learned (not -1): every target of a pretraining window, the assistant's
    tokens of a packed SFT conversation. Each chunk's mean is weighted by its number of targets, so the
    result is the mean over tokens however they fall into chunks (and ranks).
    """
    total = torch.zeros(2, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(ids), batch_size):
            chunk = ids[i:i + batch_size]
            x, y = windows.batch(chunk)
            counted = int((y != -1).sum())
            if counted == 0:
                continue  # nothing to score (the mean of no targets would be NaN)
            with autocast():
                _, loss = model(x.to(device), y.to(device))
            total[0] += loss.item() * counted
            total[1] += counted
    finally:
        model.train(was_training)
    return total
