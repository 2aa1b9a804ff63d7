"""AdamW as GPT-2-style models are trained with it, and its learning-rate schedule.

Weight decay only on tensors with >= 2 dimensions (the matmul weights and the embeddings): decaying
biases and LayerNorm gains pulls them toward 0, which only fights the normalisation and buys nothing.
On CUDA the fused kernel updates all parameters in a few launches instead of a loop of small ones.

The schedule (`lr_at`) is build-nanogpt's: a linear warm-up, then half a cosine down to min_lr. For GPT-2
124M that is 715 warm-up steps (375M tokens) up to 6e-4, then down to 6e-5 at step 19,073.
"""

from __future__ import annotations

import math

import torch

from train.config import TrainSection


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # shared tensors (tied wte/lm_head) are listed once
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, train: TrainSection, device_type: str) -> torch.optim.AdamW:
    groups = param_groups(model, train.weight_decay)
    return torch.optim.AdamW(groups, lr=train.max_lr, betas=(train.beta1, train.beta2), eps=train.eps,
                             fused=device_type == "cuda")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def lr_at(step: int, train: TrainSection, max_steps: int) -> float:
    """Linear warmup over `warmup_steps`, then half a cosine from max_lr down to min_lr at max_steps.

    Why warm up at all: at initialisation the gradients are large and AdamW's second-moment estimates are
    still poor, so full-size steps would throw the weights far; a few hundred small steps let both settle.
    Warmup starts at max_lr / warmup (not 0, which would waste the first step); the learning rate
    after max_steps stays at min_lr, so a run extended by resuming with a larger budget is well defined.
    """
    if step < train.warmup_steps:
        return train.max_lr * (step + 1) / train.warmup_steps
    if step >= max_steps:
        return train.min_lr
    progress = (step - train.warmup_steps) / max(1, max_steps - train.warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return train.min_lr + coeff * (train.max_lr - train.min_lr)
