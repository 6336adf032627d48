"""Pooling a backbone's feature map into one vector, chosen by name (model.pooling): GeM, average or R-MAC."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al. 2018) with a learned exponent p.

    Written here because torchvision and pytorch-metric-learning do not ship it; it is four lines.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def rmac_regions(h: int, w: int, levels: int = 3) -> list[tuple[int, int, int]]:
    """R-MAC's square regions (Tolias et al. 2016, as cnnimageretrieval-pytorch lays them out): at level l,
    squares of side floor(2·min(h, w)/(l+1)) on a grid with about 40% overlap, l of them along the short
    side and l plus a few more along the long one; (top, left, side) each."""
    short = min(h, w)
    steps = np.arange(2, 8)  # possible numbers of regions along the long side
    b = (max(h, w) - short) / (steps - 1)
    extra = int(np.argmin(np.abs((short ** 2 - short * b) / short ** 2 - 0.4))) + 1 if h != w else 0
    regions = []
    for level in range(1, levels + 1):
        side = int(2 * short // (level + 1))
        if side == 0:
            continue
        n_h, n_w = level + (extra if h > w else 0), level + (extra if w > h else 0)
        tops = [0] if n_h == 1 else [int(np.floor(i * (h - side) / (n_h - 1))) for i in range(n_h)]
        lefts = [0] if n_w == 1 else [int(np.floor(j * (w - side) / (n_w - 1))) for j in range(n_w)]
        regions += [(t, left, side) for t in tops for left in lefts]
    return regions


class RMAC(nn.Module):
    """Regional maximum activations of convolutions: the whole map's max and each region's max
    (rmac_regions), each L2-normalised, summed. Written here: torchvision and pytorch-metric-learning do
    not ship it."""

    def __init__(self, levels: int = 3, eps: float = 1e-6):
        super().__init__()
        self.levels, self.eps = levels, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def unit_max(t: torch.Tensor) -> torch.Tensor:
            v = t.amax(dim=(2, 3), keepdim=True)
            return v / (v.norm(dim=1, keepdim=True) + self.eps)

        out = unit_max(x)
        for top, left, side in rmac_regions(x.shape[2], x.shape[3], self.levels):
            out = out + unit_max(x[:, :, top:top + side, left:left + side])
        return out


POOLINGS = {  # model.pooling: a name -> the pooling module (its argument: model.gem_p, GeM's starting exponent)
    "gem": lambda p: GeM(p),
    "avg": lambda p: nn.AdaptiveAvgPool2d(1),
    "rmac": lambda p: RMAC(),
}
