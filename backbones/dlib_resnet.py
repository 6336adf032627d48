"""dlib's face-recognition ResNet-29 as a PyTorch module that runs batched and fine-tunes (its weights
read by backbones.dlib_format), and the `dlib_resnet` backbone built from it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones.dlib_format import BLOCKS, CHIP, LEVEL_BLOCKS, LEVELS, DlibFormatError, read_dat
from backbones.weights import Backbone, WeightsError, sha256
from utils import FacematchError, package_file


class Affine(nn.Module):
    """dlib's affine layer: a learnable scale and shift per channel (batch norm folded in)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the larger size of each dimension, the smaller input zero-padded at the end."""
    if a.shape == b.shape:
        return a + b
    # Plain ints, also while torch.onnx traces: an exported graph's pads are then constants (deploy/export.py).
    c, h, w = (max(int(x), int(y)) for x, y in zip(a.shape[1:], b.shape[1:]))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - int(t.shape[3]), 0, h - int(t.shape[2]), 0, c - int(t.shape[1])))

    return pad(a) + pad(b)


class Block(nn.Module):
    """One residual block: conv, affine, relu, conv, affine, added to the input (average-pooled
    2x2/2 when the block down-samples), then relu."""

    def __init__(self, inputs: int, filters: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(inputs, filters, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.affine1 = Affine(filters)
        self.conv2 = nn.Conv2d(filters, filters, 3, padding=1)
        self.affine2 = Affine(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(add_padded(y, F.avg_pool2d(x, 2, 2) if self.down else x))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet-29: (B, 3, 150, 150) RGB chips holding 0..255 pixel values
    (dlib's get_face_chip, crop.align=dlib) -> (B, 128) descriptors, not normalised, as dlib's.
    Every layer is a plain PyTorch layer: it runs batched on CPU and GPU, and it trains."""

    def __init__(self, mean: tuple[float, float, float] = (122.782, 117.001, 104.298)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2), Affine(32), nn.ReLU(), nn.MaxPool2d(3, 2))
        blocks, inputs = [], 32
        for filters, down in BLOCKS:
            blocks.append(Block(inputs, filters, down))
            inputs = filters
        starts = np.cumsum((0,) + LEVEL_BLOCKS)
        for i, name in enumerate(LEVELS[1:-1]):
            self.add_module(name, nn.Sequential(*blocks[starts[i]:starts[i + 1]]))
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / 256.0
        x = self.stem(x)
        for name in LEVELS[1:-1]:
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))

    def load_dat(self, path: str | Path) -> "DlibResNet":
        """Fill every weight from dlib's .dat file (read_dat), checking each shape."""
        net = read_dat(path)
        if tuple(net["size"]) != (CHIP, CHIP):
            raise DlibFormatError(f"{path}: a network for {net['size']} chips, not {CHIP}x{CHIP}")
        convs = [self.stem[0]] + [c for b in self.blocks() for c in (b.conv1, b.conv2)]
        affines = [self.stem[1]] + [a for b in self.blocks() for a in (b.affine1, b.affine2)]
        with torch.no_grad():
            for conv, (w, b, stride, padding) in zip(convs, net["convs"]):
                if tuple(w.shape) != tuple(conv.weight.shape) or tuple(stride) != conv.stride \
                        or tuple(padding) != conv.padding:
                    raise DlibFormatError(f"{path}: a convolution {w.shape} stride {stride} padding {padding} "
                                          f"where this network has {tuple(conv.weight.shape)} {conv.stride} {conv.padding}")
                conv.weight.copy_(torch.from_numpy(w))
                conv.bias.copy_(torch.from_numpy(b))
            for affine, (gamma, beta) in zip(affines, net["affines"]):
                affine.weight.copy_(torch.from_numpy(gamma))
                affine.bias.copy_(torch.from_numpy(beta))
            self.fc.weight.copy_(torch.from_numpy(net["fc"]))
            self.mean.copy_(torch.tensor(net["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        return self

    def blocks(self) -> list[Block]:
        return [b for name in LEVELS[1:-1] for b in getattr(self, name)]

    def levels(self) -> list[nn.Module]:
        """The parts a fine-tuning freezes or trains, from the input end (LEVELS)."""
        return [getattr(self, name) for name in LEVELS]



DLIB_PACKAGE = ("face_recognition_models", "models", "dlib_face_recognition_resnet_model_v1.dat")
DLIB_CHIP = CHIP


def dlib_dat(weights: str | None = "pretrained") -> Path:
    """The path of dlib's face-recognition .dat: the copy in PyPI face-recognition-models for
    'pretrained' (or None), else the given file; a WeightsError naming it when it is missing."""
    if weights in (None, "pretrained"):
        try:
            return package_file(*DLIB_PACKAGE)
        except FacematchError as exc:
            raise WeightsError(f"cannot load dlib_resnet's weights: {exc}") from None
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"model.weights: no such file '{path}' (dlib_resnet takes pretrained, none or "
                           f"the path to a dlib face-recognition .dat)")
    return path


def dlib_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of DlibResNet read from a dlib .dat, or a WeightsError naming the file."""
    try:
        return DlibResNet().load_dat(path).state_dict()
    except (OSError, DlibFormatError) as exc:
        raise WeightsError(f"cannot read dlib face-descriptor model {path} ({exc})") from None


def dlib_resnet(weights: str | None) -> Backbone:
    """dlib's 128-d face descriptor (ResNet-29, 99.38% on LFW pairs) as a PyTorch network that runs
    batched and fine-tunes; weights: its .dat (pretrained), none (random, on purpose) or a .dat path.
    Its input is 0..255 RGB of dlib's 150-px chips; it subtracts dlib's mean and divides by 256 itself."""
    if weights == "imagenet":
        raise WeightsError("dlib_resnet has no ImageNet weights: use model.weights=pretrained (dlib's "
                           "face descriptor), none, or the path to a dlib face-recognition .dat")
    module = DlibResNet()
    source = "random weights (model.weights=none)" if weights == "none" else "none yet (a checkpoint follows)"
    if weights not in (None, "none"):
        path = dlib_dat(weights)
        module.load_state_dict(dlib_state(path))
        source = (f"dlib face descriptor (PyPI face-recognition-models, {path})" if weights == "pretrained"
                  else f"dlib face descriptor {path}")
    meta = {"input_size": DLIB_CHIP, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "max_pixel_value": 1.0,
            "crop": {"align": "dlib", "size": DLIB_CHIP}, "fixed_size": True, "lr_backbone": 1e-6}
    return Backbone(module, 128, True, True, meta, source, levels=module.levels())


def legacy_frozen_state(arch: str, fingerprint: str) -> dict[str, torch.Tensor]:
    """The backbone weights of a checkpoint written when dlib's descriptor was a frozen extractor
    outside the state dict (only its .dat's sha256 was kept): read from that .dat, if it is the same file."""
    if arch != "dlib_resnet":
        raise WeightsError(f"a {arch} checkpoint names frozen weights outside its state dict: only dlib_resnet had those")
    path = dlib_dat("pretrained")
    if sha256(path) != fingerprint:
        raise WeightsError(f"the checkpoint was made with another dlib .dat (sha256 {fingerprint[:12]}…) than {path} "
                           f"(sha256 {sha256(path)[:12]}…)")
    return dlib_state(path)
