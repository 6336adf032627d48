"""A frozen backbone computes its features once per view of each photo, and the head trains on them
(dlib's descriptor runs at a few photos/s on a CPU: once per photo and view, not once per step)."""
from __future__ import annotations

import torch

from dataset import AugmentSettings, FaceDataset, eval_transform, train_transform
from network import EmbeddingNet
from utils import progress


class _Views(torch.utils.data.Dataset):
    """Item j = view j % V of crop j // V: view 0 through the evaluation transform, the others
    through a draw of the training augmentation seeded by (seed, crop, view)."""

    def __init__(self, crops: list, augment: AugmentSettings, inp: dict, views: int, seed: int):
        self.plain = FaceDataset(crops, [0] * len(crops), eval_transform(inp))
        self.augmented = FaceDataset(crops, [0] * len(crops), train_transform(augment, inp))
        self.views, self.seed = views, seed

    def __len__(self) -> int:
        return len(self.plain) * self.views

    def __getitem__(self, j: int) -> torch.Tensor:
        i, v = divmod(j, self.views)
        if v == 0:
            return self.plain[i][0]
        return self.augmented[(i, (self.seed * 1_000_003 + i) * self.views + v)][0]


def frozen_features(model: EmbeddingNet, crops: list, views: int, device, what: str, *, augment: AugmentSettings,
                    batch_size: int, num_workers: int, seed: int) -> torch.Tensor:
    """The frozen backbone's outputs for `views` views of every crop, shaped (N, views, ...).
    A frozen backbone (dlib's descriptor) gives a view the same features at every step, so it runs
    once per view here instead of once per training step (dlib runs at a few photos/s on a CPU)."""
    loader = torch.utils.data.DataLoader(_Views(crops, augment, model.meta["input"], views, seed),
                                         batch_size=batch_size, num_workers=num_workers)
    with torch.inference_mode():
        out = [model.features(batch.to(device)).float().cpu()
               for batch in progress(loader, desc=f"backbone features, {what}", unit="batch")]
    features = torch.cat(out) if out else torch.zeros(0)
    return features.reshape(len(crops), views, *features.shape[1:])


class FeatureDataset(torch.utils.data.Dataset):
    """Stored backbone features (N, V, ...) with labels, indexed like FaceDataset by PKSampler's
    (position, draw_seed): each draw takes one of the photo's V views."""

    def __init__(self, features: torch.Tensor, labels: list[int]):
        self.features, self.labels = features, list(labels)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, item):
        index, draw_seed = item if isinstance(item, tuple) else (item, 0)
        return self.features[index, (draw_seed or 0) % self.features.shape[1]], self.labels[index]


class FromFeatures(torch.nn.Module):
    """What trains over stored features: the model after its frozen backbone."""

    def __init__(self, model: EmbeddingNet):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.from_features(features)
