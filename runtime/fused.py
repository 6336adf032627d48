"""What a fusion of networks is, whatever runs them (network.FusedNet in PyTorch, runtime.OnnxFusion in ONNX Runtime):
each member on its own crops, their unit embeddings side by side, each scaled by the square root of its weight."""
from __future__ import annotations

import numpy as np

from detection import CropSettings


def fuse_embeddings(parts: list[np.ndarray], weights: list[float] | tuple[float, ...]) -> np.ndarray:
    """Unit embeddings of the same photos, one array per network, side by side, each scaled by the square root of its
    weight (weights summing to 1): unit vectors whose cosine is the weighted sum of the networks' cosines."""
    return np.concatenate([np.sqrt(w) * p for w, p in zip(weights, parts)], axis=1).astype(np.float32)


class Fusion:
    """The calls of runtime.FaceModel every fusion answers alike (a mixin: its class holds `members`, single networks
    of runtime.FaceNetwork, and answers content_fingerprint() itself)."""
    members: list

    def networks(self) -> list:
        """Its members, each embedding photos through its own crops."""
        return list(self.members)

    def fuse_members(self, weights: list[float]) -> None:
        """Set the fusion's weights (normalised to sum to 1), embedding size, arch and meta from its members."""
        self.weights = [float(w) / float(sum(weights)) for w in weights]
        self.embedding_size = sum(m.embedding_size for m in self.members)
        self.arch = "+".join(m.arch for m in self.members)
        self.meta = {"members": [m.meta for m in self.members], "weights": self.weights}

    def fuse(self, parts: list[np.ndarray]) -> np.ndarray:
        """The members' unit embeddings of the same photos (one array each, in member order) as fused unit vectors."""
        return fuse_embeddings(parts, self.weights)

    def crop_settings(self) -> CropSettings:
        """The first member's crop settings: the crop shown for a photo (the search page, figures)."""
        return self.members[0].crop_settings()

    def describe(self) -> dict:
        """What the fusion is: its members and their weights."""
        return {"arch": self.arch, "embedding_size": self.embedding_size, "weights": self.weights,
                "members": [m.describe() for m in self.members]}
