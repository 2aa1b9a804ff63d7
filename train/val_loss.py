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
    """[sum of per-window mean losses, number of windows] for `ids` (sum across ranks, then divide).

    Every window has the same number of targets (T), so the mean of window means is the token mean.
    """
    total = torch.zeros(2, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(ids), batch_size):
            chunk = ids[i:i + batch_size]
            x, y = windows.batch(chunk)
            with autocast():
                _, loss = model(x.to(device), y.to(device))
            total[0] += loss.item() * len(chunk)
            total[1] += len(chunk)
    finally:
        model.train(was_training)
    return total
