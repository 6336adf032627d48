"""The heads, chosen by name (model.head): the pooled features -> the embedding, each `(features, size) -> (module,
its output size)`."""
from __future__ import annotations

import torch.nn as nn


def head_none(features: int, size: int) -> tuple[nn.Module, int]:
    """The pooled features themselves (a pretrained descriptor used as it is)."""
    return nn.Identity(), features


def head_linear(features: int, size: int) -> tuple[nn.Module, int]:
    """Linear projection and batch norm (the design's head)."""
    return nn.Sequential(nn.Linear(features, size), nn.BatchNorm1d(size)), size


def head_mlp(features: int, size: int) -> tuple[nn.Module, int]:
    """Two layers with a ReLU between: room to adapt a frozen descriptor to new people."""
    hidden = max(size, features)
    return nn.Sequential(nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, size), nn.BatchNorm1d(size)), size


HEADS = {"none": head_none, "linear": head_linear, "mlp": head_mlp}
