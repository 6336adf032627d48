"""What a network sees of a crop, from its meta's input settings: resized to the input side with area interpolation,
normalised by the mean and standard deviation. The one evaluation preprocessing: dataset.eval_transform wraps it for
PyTorch, runtime.embed feeds it to ONNX Runtime, so both runtimes see the same numbers."""
from __future__ import annotations

import functools

import cv2
import numpy as np


@functools.lru_cache(maxsize=16)
def _table(mean: tuple, std: tuple, scale: float) -> np.ndarray:
    """(3, 256) float32: each channel's normalised value of every uint8 level, computed as model_input computes it
    (so a look-up gives the same bits as the arithmetic, at a fifth of its time on a 150-px chip)."""
    levels = np.arange(256, dtype=np.float32)[:, None]
    mean_, denominator = _norm(mean, std, scale)
    return np.ascontiguousarray(((levels - mean_) * denominator).T)


def _norm(mean, std, scale: float) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(mean, dtype=np.float32) * np.float32(scale),
            np.reciprocal(np.asarray(std, dtype=np.float32) * np.float32(scale), dtype=np.float32))


def _resized(image: np.ndarray, side: int) -> np.ndarray:
    if image.shape[:2] != (side, side):
        image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    return image


def model_input(image: np.ndarray, inp: dict) -> np.ndarray:
    """An RGB crop (H, W, 3, uint8) as the network's input: (size, size, 3) float32, resized and normalised as
    `inp` says (a model's meta['input']: size, mean, std, max_pixel_value)."""
    image = _resized(image, int(inp["size"]))
    mean, denominator = _norm(inp["mean"], inp["std"], float(inp.get("max_pixel_value", 255.0)))
    return (image.astype(np.float32) - mean) * denominator


def batch_input(images: list[np.ndarray], inp: dict, mirror: bool = False) -> np.ndarray:
    """Crops as one (N, 3, size, size) float32 batch (channels first, contiguous), each as model_input makes it;
    `mirror`: their mirror images. uint8 crops go through a look-up table straight into the batch."""
    side, scale = int(inp["size"]), float(inp.get("max_pixel_value", 255.0))
    out = np.empty((len(images), 3, side, side), dtype=np.float32)
    table = _table(tuple(inp["mean"]), tuple(inp["std"]), scale)
    for i, image in enumerate(images):
        image = _resized(image, side)
        image = image[:, ::-1] if mirror else image
        if image.dtype == np.uint8:
            for c in range(3):
                np.take(table[c], image[..., c], out=out[i, c])
        else:
            out[i] = model_input(np.ascontiguousarray(image), inp).transpose(2, 0, 1)
    return out
