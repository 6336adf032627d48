"""A model from its file, whichever install runs it: an export folder (`facematch export`) in ONNX Runtime, with no
PyTorch imported; a checkpoint (.pt) rebuilt in PyTorch, which only the full install has (`pip install -e .[train]`),
else one line saying how to export it.

    model, cfg = model_from_file("exports/best")         # OnnxNet or OnnxFusion, the config it was trained with
"""
from __future__ import annotations

from pathlib import Path

from runtime import is_bundle, load_bundle, upgrade_config
from utils import TRAIN_INSTALL, FacematchError, has_torch


class NeedsPyTorch(FacematchError):
    """A PyTorch checkpoint given to the inference install, which runs exported models only."""


def model_from_file(path: str | Path, device="cpu", threads: int | None = None):
    """(model, its trained config on today's keys) from an export folder or its model.json (ONNX Runtime, `threads`
    intra-op threads; `device` unused) or a checkpoint (network.model_from_checkpoint, on `device`); a checkpoint where
    PyTorch is not installed is a NeedsPyTorch naming the file, `facematch export` and the full install."""
    if Path(path).is_file() and not is_bundle(path) and not has_torch():
        raise NeedsPyTorch(f"{path} is a PyTorch checkpoint and this install runs exported models only: export it where "
                           f"PyTorch is (`facematch export --checkpoint {path} --out DIR`) and give DIR, or install "
                           f"the full set ({TRAIN_INSTALL})")
    if is_bundle(path) or not has_torch():  # without PyTorch, anything else is a missing export, said by load_bundle
        model, trained = load_bundle(path, threads or None)
        return model, upgrade_config(trained)
    from network import model_from_checkpoint

    return model_from_checkpoint(path, device, threads=threads)
