"""The embedding network (ResNet backbone, GeM pooling, linear + batch-norm head, L2-normalised
output), its weights, checkpoints, and `embed` to turn face crops into embeddings."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from tqdm import tqdm

from dataset import CROP_KEYS, load_crop
from utils import ConfigError, FacematchError, atomic_write, get_device, get_logger, load_config

ARCHS = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1, 512),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V2, 2048),
}


log = get_logger()


class WeightsError(FacematchError, RuntimeError):
    """Pretrained weights that cannot be found, fetched or fitted to the backbone."""


class CheckpointError(FacematchError, RuntimeError):
    """A checkpoint that cannot be read or belongs to another model."""


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


class EmbeddingNet(nn.Module):
    """ResNet features → pooling → linear → batch norm → unit-length embedding."""

    def __init__(self, arch: str = "resnet50", embedding_size: int = 512, pooling: str = "gem",
                 gem_p: float = 3.0):
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError(f"model.arch '{arch}' is not one of {', '.join(ARCHS)}")
        if pooling not in ("gem", "avg"):
            raise ConfigError(f"model.pooling '{pooling}' is not one of gem, avg")
        build, _, features = ARCHS[arch]
        resnet = build(weights=None)
        self.backbone = nn.Sequential(*list(resnet.children())[:-2])  # drop avgpool and fc
        self.pool = GeM(gem_p) if pooling == "gem" else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(features, embedding_size)
        self.bn = nn.BatchNorm1d(embedding_size)
        self.arch, self.embedding_size = arch, embedding_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.backbone(x)).flatten(1)
        return F.normalize(self.bn(self.fc(x)), dim=1)

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything after the backbone: trained with the head learning rate."""
        return list(self.pool.parameters()) + list(self.fc.parameters()) + list(self.bn.parameters())


def _torchvision_state_dict(arch: str) -> dict:
    weights = ARCHS[arch][1]
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # network errors come in many types (URLError, OSError, HTTPError…)
        raise WeightsError(
            f"cannot load ImageNet weights for {arch}: not in the torch cache ({cache}) and the "
            f"download from {weights.url} failed ({exc.__class__.__name__}: {exc}). Copy that file "
            f"to {cache}, or set model.weights to a local state-dict file, or to 'none' to train "
            f"from random weights on purpose.") from None


def load_backbone_weights(model: EmbeddingNet, weights: str) -> str:
    """Load `weights` ('imagenet', 'none' or a file) into the backbone; returns what was loaded."""
    if weights in (None, "", "none"):
        return "random initialisation (model.weights=none)"
    if weights == "imagenet":
        state, source = _torchvision_state_dict(model.arch), f"torchvision ImageNet weights for {model.arch}"
    else:
        if not os.path.isfile(weights):
            raise WeightsError(f"model.weights: no such file '{weights}' (use imagenet, none or a path)")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"cannot read weights file {weights}: {exc}") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        source = f"weights file {weights}"
    # torchvision's ResNet keys (conv1, layer1…) map onto our nn.Sequential indices.
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    mapped = {}
    for key, value in state.items():
        head = key.split(".", 1)[0]
        if head in names:
            mapped[f"{names.index(head)}.{key.split('.', 1)[1]}"] = value
    try:
        missing, _ = model.backbone.load_state_dict(mapped, strict=False)
    except RuntimeError as exc:
        raise WeightsError(f"{source} do not fit a {model.arch} backbone: {exc}") from None
    if missing:
        raise WeightsError(f"{source} do not fit a {model.arch} backbone: "
                           f"{len(missing)} tensors missing (e.g. {missing[0]})")
    return source


def model_from_config(model_cfg: dict) -> EmbeddingNet:
    """The network the `model` config section describes, with random weights."""
    return EmbeddingNet(model_cfg["arch"], int(model_cfg["embedding_size"]), model_cfg["pooling"],
                        float(model_cfg["gem_p"]))


def build_model(model_cfg: dict) -> tuple[EmbeddingNet, str]:
    """Build the network from the `model` config section; returns (model, where weights came from)."""
    model = model_from_config(model_cfg)
    return model, load_backbone_weights(model, model_cfg["weights"])


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous file intact."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a facematch checkpoint onto `map_location` (CPU by default, whatever it was saved from)."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a facematch checkpoint (no 'model' and 'config' entries)")
    return ckpt


def load_model_state(model: EmbeddingNet, ckpt: dict, path: str | Path = "checkpoint") -> None:
    """Load a checkpoint's weights, refusing one made for another architecture or embedding size."""
    saved = ckpt["config"]["model"]
    if (saved["arch"], int(saved["embedding_size"]), saved["pooling"]) != \
            (model.arch, model.embedding_size, "gem" if isinstance(model.pool, GeM) else "avg"):
        raise CheckpointError(
            f"{path} holds a {saved['arch']} with {saved['embedding_size']}-d embeddings and "
            f"{saved['pooling']} pooling, but this model is a {model.arch} with "
            f"{model.embedding_size}-d embeddings: set model.* to match or use another checkpoint")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit this model: {str(exc).splitlines()[0]}") from None


def model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[EmbeddingNet, dict]:
    """Rebuild the network a checkpoint was trained with, in eval mode; returns (model, its config)."""
    ckpt = read_checkpoint(path)
    cfg = ckpt["config"]
    model = model_from_config(cfg["model"])
    load_model_state(model, ckpt, path)
    return model.to(device).eval(), cfg


def load_for_inference(checkpoint: str | Path, cfg_files: list[str] | None = None,
                       overrides: list[str] | None = None) -> tuple[EmbeddingNet, dict, torch.device]:
    """The checkpoint's model and config with the caller's config files and overrides on top,
    except the network and its preprocessing (model, input, crop parameters), which stay as
    trained so queries and gallery are seen exactly as validation saw them."""
    user = load_config(cfg_files, overrides)
    device = get_device(user["device"])
    model, trained = model_from_checkpoint(checkpoint, device)
    cfg = load_config(cfg_files, overrides, base=trained)
    cfg["device"] = user["device"]
    for section, keys in (("model", list(trained["model"])), ("input", list(trained["input"])), ("crop", CROP_KEYS)):
        for key in keys:
            if cfg[section][key] != trained[section][key]:
                log.warning(f"{section}.{key}={cfg[section][key]!r} ignored: {checkpoint} was trained with "
                            f"{trained[section][key]!r}")
                cfg[section][key] = trained[section][key]
    return model, cfg, device


@torch.no_grad()
def embed(model: EmbeddingNet, crops: list[np.ndarray | Path], transform, batch_size: int = 64,
          device: torch.device | str = "cpu", desc: str = "embedding") -> np.ndarray:
    """Embed face crops (RGB arrays or crop-cache files, read a batch at a time) with the
    evaluation transform: an (N, D) float32 array of unit vectors."""
    was_training = model.training
    model.eval()
    out = []
    starts = range(0, len(crops), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", leave=False,
                      disable=True if len(starts) < 5 else None):  # None: only on a terminal
        batch = torch.stack([transform(image=load_crop(c))["image"] for c in crops[start:start + batch_size]])
        out.append(model(batch.to(device)).float().cpu())
    model.train(was_training)
    if not out:
        return np.zeros((0, model.embedding_size), dtype=np.float32)
    return torch.cat(out).numpy()
