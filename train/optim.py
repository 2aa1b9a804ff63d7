"""AdamW as GPT-2-style models are trained with it.

Weight decay only on tensors with >= 2 dimensions (the matmul weights and the embeddings): decaying
biases and LayerNorm gains pulls them toward 0, which only fights the normalisation and buys nothing.
On CUDA the fused kernel updates all parameters in a few launches instead of a loop of small ones.
"""

from __future__ import annotations

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
