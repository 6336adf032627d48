"""runtime.FaceModel: every model, one network or a fusion, answers the same calls, so the photo path needs no type."""
from __future__ import annotations

import numpy as np
import torch

from conftest import FACES
from runtime import FaceModel, FaceNetwork


def test_a_network_and_a_fusion_answer_the_same_calls(tiny_cfg):
    from detection import crop_paths, list_images
    from network import FusedNet
    from settings import build_model

    torch.manual_seed(0)
    a, _ = build_model(tiny_cfg)
    b, _ = build_model(tiny_cfg)
    fused = FusedNet([a.eval(), b.eval()], [1.0, 3.0])
    assert isinstance(a, FaceNetwork) and isinstance(fused, FaceModel) and not isinstance(fused, FaceNetwork)
    assert a.networks() == [a] and fused.networks() == [a, b]
    crops = [c for c in crop_paths(list_images(FACES)[:3], a.crop_settings(), None)[0] if c is not None]
    parts = [net.embed_crops(crops, "auto", "flip", device="cpu") for net in fused.networks()]
    assert np.array_equal(a.fuse(parts[:1]), parts[0])
    joined = fused.fuse(parts)
    assert joined.shape == (len(crops), fused.embedding_size) and np.allclose(np.linalg.norm(joined, axis=1), 1, atol=1e-5)
    assert np.allclose(joined[:, :a.embedding_size], np.sqrt(0.25) * parts[0])
    assert len({a.content_fingerprint(), b.content_fingerprint(), fused.content_fingerprint()}) == 3
    assert a.crop_settings() == fused.crop_settings()
