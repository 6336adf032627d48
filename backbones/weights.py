"""Reading and fitting pretrained weights honestly, shared by every backbone: a state dict from a file,
fitted key by key (every backbone tensor filled, every file tensor used, or a `WeightsError` naming the
keys: never a silent random start), and what a built backbone is (`Backbone`)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn as nn

from utils import FacematchError

class WeightsError(FacematchError, RuntimeError):
    """Pretrained weights that cannot be found, fetched or fitted to the backbone."""


@dataclass
class Backbone:
    module: nn.Module     # normalised images (B,3,H,W) -> feature map (B,C,h,w), or (B,C) when pooled
    features: int         # C
    pooled: bool          # True when module already returns (B, C) vectors (dlib)
    trainable: bool       # False for a frozen feature extractor: no parameters to train
    meta: dict            # the preprocessing the backbone expects (module docstring)
    source: str           # where the weights came from, in words (for logs and checkpoints)
    fingerprint: str = "" # sha256 of weights that are NOT in the module's state_dict, else "" (all today)
    levels: list[nn.Module] | None = None  # the parts model.freeze counts, from the input end (None: one part)


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
KEYWORDS = ("pretrained", "imagenet", "none")


def imagenet_meta(size: int = 224) -> dict:
    return {"input_size": size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "max_pixel_value": 255.0, "crop": {}}


# ---------------------------------------------------------------- reading and fitting weights

def few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (", …" if len(keys) > n else "")


def sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def check_hash_prefix(path: Path) -> None:
    """A file named like torchvision's (`name-<sha256 prefix>.pth`) must have that hash."""
    match = re.search(r"-([0-9a-f]{8,64})\.pth$", path.name)
    if match and not sha256(path).startswith(match.group(1)):
        raise WeightsError(f"weights file {path} is damaged or not the original: its sha256 does not "
                           f"start with {match.group(1)}, as its name says (reinstall its package)")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file (or from the 'state_dict' entry of a training checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model.weights: no such file '{path}' (use pretrained, imagenet, none or a path)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise WeightsError(f"cannot read weights file {path} ({exc.__class__.__name__}: {reason})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        hint = (" (a facematch checkpoint: give it to --resume or --checkpoint instead)"
                if isinstance(obj, Mapping) and "model" in obj and "config" in obj else "")
        raise WeightsError(f"weights file {path} is not a state dict (a mapping of tensor names to "
                           f"tensors){hint}")
    return dict(obj)


def fit_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str, arch: str,
                   rename: Callable[[str], str | None], drop: tuple[str, ...] = (),
                   file_key: Callable[[str], str] = lambda key: key) -> None:
    """Load `state` into `module` through `rename` (file key -> module key, None: not ours),
    ignoring the keys that start with `drop`; every module tensor must be filled and every other
    file tensor used, with the right shape, or a WeightsError names the keys (missing ones as the
    file should have named them: `file_key`, module key -> file key)."""
    target = module.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, value in state.items():
        if drop and key.startswith(drop):
            continue
        name = rename(key)
        if name is None or name not in target or name in mapped:
            unused.append(key)
        else:
            mapped[name] = value
    missing = [file_key(k) for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    wrong = [f"{file_key(k)} {tuple(mapped[k].shape)} for {tuple(target[k].shape)}"
             for k in mapped if mapped[k].shape != target[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} backbone tensor(s) missing ({few(missing)})")
    if unused:
        problems.append(f"{len(unused)} tensor(s) the backbone does not use ({few(unused)})")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape ({few(wrong, 3)})")
    if problems:
        raise WeightsError(f"{source} do not fit a {arch} backbone: {'; '.join(problems)}. Use weights "
                           f"made for {arch}, or model.weights=none to start from random weights on purpose")
    module.load_state_dict(mapped, strict=False)  # only num_batches_tracked may be left out
