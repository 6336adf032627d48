"""What every face model answers, whatever it is (one network or a fusion of several) and whatever runs it (PyTorch:
network.EmbeddingNet, FusedNet; ONNX Runtime: runtime.OnnxNet, OnnxFusion). The photo path (pipeline.embedding) asks
these calls and nothing of a model's type, so a new runtime or kind of network is one class.

    parts = [net.embed_crops(crops_of(net.crop_settings()), "auto", "flip") for net in model.networks()]
    embeddings = model.fuse(parts)
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from detection import CropSettings


@runtime_checkable
class FaceModel(Protocol):
    """A model as the pipeline sees it: the networks a photo goes through (each on its own crops), how their
    embeddings become the model's, and what tells it from another model."""
    arch: str
    embedding_size: int  # the length of the model's (fused) unit embeddings
    meta: dict           # preprocessing (a fusion's: its members'), weights, calibration

    def networks(self) -> list[FaceNetwork]:
        """The single networks a photo goes through, each on its own crops (a single network: itself)."""

    def fuse(self, parts: list[np.ndarray]) -> np.ndarray:
        """The networks' unit embeddings of the same photos (one array each, in networks() order) as the model's."""

    def crop_settings(self) -> CropSettings:
        """The crop settings of the crop shown for a photo (a fusion's: its first network's)."""

    def content_fingerprint(self) -> str:
        """sha256 of what decides an embedding (weights and preprocessing): equal fingerprints embed alike."""

    def describe(self) -> dict:
        """What the model is: enough to tell it from another."""


@runtime_checkable
class FaceNetwork(FaceModel, Protocol):
    """One network: a FaceModel that embeds its own crops."""

    def embed_crops(self, crops: list, batch_size: int | str = "auto", tta: str = "none", *, device=None,
                    desc: str = "embedding", num_workers: int = 0) -> np.ndarray:
        """Face crops (RGB arrays, or crop files read as they come) as an (N, D) float32 array of unit vectors,
        preprocessed as the network's meta says; batch_size a number or 'auto' (the runtime's choice), tta 'none' or
        'flip'."""


class SingleNetwork:
    """The calls every single network answers alike (a mixin beside its own embed_crops and content_fingerprint)."""
    meta: dict

    def networks(self) -> list:
        """Itself: a single network is a fusion of one."""
        return [self]

    def fuse(self, parts: list[np.ndarray]) -> np.ndarray:
        """Its own embeddings, as they are."""
        return parts[0]

    def crop_settings(self) -> CropSettings:
        """The crop settings the network was trained with (its meta's), typed."""
        return CropSettings.from_saved(self.meta["crop"])
