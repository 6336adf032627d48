"""The optimiser (one learning rate for the backbone, another for the head) and its schedule."""
from __future__ import annotations

import math

import torch

from network import EmbeddingNet


def make_optimizer(model: EmbeddingNet, loss_fn: torch.nn.Module, lr_backbone: float | str, lr_head: float,
                   weight_decay: float) -> torch.optim.AdamW:
    """AdamW with one learning rate for the backbone (auto: the backbone's own) and another for the head
    (and loss weights)."""
    head = model.head_parameters() + list(loss_fn.parameters())
    return torch.optim.AdamW([
        {"params": model.backbone_parameters(), "lr": model.lr_backbone if lr_backbone == "auto" else float(lr_backbone)},
        {"params": head, "lr": float(lr_head)},
    ], weight_decay=float(weight_decay))


def warmup_cosine(warmup_steps: int, total_steps: int, min_factor: float):
    """Learning-rate factor per step: linear warm-up to 1, then cosine decay to min_factor."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor
