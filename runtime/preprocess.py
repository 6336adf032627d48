"""What a network sees of a crop, from its meta's input settings: resized to the input side with area interpolation,
normalised by the mean and standard deviation. The one evaluation preprocessing: dataset.eval_transform wraps it for
PyTorch, runtime.embed feeds it to ONNX Runtime, so both runtimes see the same numbers."""
from __future__ import annotations

import cv2
import numpy as np


def model_input(image: np.ndarray, inp: dict) -> np.ndarray:
    """An RGB crop (H, W, 3, uint8) as the network's input: (size, size, 3) float32, resized and normalised as
    `inp` says (a model's meta['input']: size, mean, std, max_pixel_value)."""
    side, scale = int(inp["size"]), float(inp.get("max_pixel_value", 255.0))
    if image.shape[:2] != (side, side):
        image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    mean = np.asarray(inp["mean"], dtype=np.float32) * scale
    denominator = np.reciprocal(np.asarray(inp["std"], dtype=np.float32) * scale, dtype=np.float32)
    return (image.astype(np.float32) - mean) * denominator


def batch_input(images: list[np.ndarray], inp: dict, mirror: bool = False) -> np.ndarray:
    """Crops as one (N, 3, size, size) float32 batch (channels first, contiguous); `mirror`: their mirror images."""
    batch = np.stack([model_input(im, inp) for im in images]).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch[..., ::-1] if mirror else batch)
