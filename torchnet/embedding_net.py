"""The embedding network: a backbone from backbones/, GeM or average pooling, a head chosen by
name, and an L2-normalised output. The model carries its preprocessing (`model.meta`: crop and
input settings), saved in every checkpoint, so `model.embed_crops(crops)` needs nothing else.

    model = EmbeddingNet(ModelSettings(arch="dlib_resnet", head="none", weights="pretrained"), InputSettings(size=150),
                         CropSettings(align="dlib", size=150), weights="pretrained")
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones import build_backbone
from detection import CROP_KEYS, CropSettings
from runtime import Fusion, SingleNetwork
from torchnet.embed_loop import EmbedsCrops
from torchnet.heads import HEADS
from torchnet.pooling import POOLINGS
from utils import ConfigError, lookup


@dataclass(frozen=True)
class ModelSettings:
    """The model section (config/default.yaml documents each field): the backbone, its weights, what of it
    is frozen, the pooling and the head."""
    arch: str = "resnet50"
    weights: str = "imagenet"
    freeze: int | str = 0
    pooling: str = "gem"
    gem_p: float = 3.0
    head: str = "linear"
    embedding_size: int = 512
    members: list[str] = field(default_factory=list)
    member_weights: list[float] | str = "auto"
    runtime: str = "torch"    # how the network runs (runtime/, deploy/), not what it is
    precision: str = "fp32"
    threads: int = 0


@dataclass(frozen=True)
class InputSettings:
    """The input section: the side the crops are resized to and their normalisation ('auto': the backbone's)."""
    size: int | str = 112
    mean: list[float] | str = "auto"
    std: list[float] | str = "auto"


def resolve_preprocessing(inp: InputSettings, crop_settings: CropSettings, backbone_meta: dict, arch: str,
                          fixed_size: bool) -> dict:
    """What the model sees: {'input': size, mean, std, max_pixel_value; 'crop': every crop
    setting}, 'auto' values taken from the backbone, its requirements checked."""
    meta = backbone_meta
    auto_norm = inp.mean == "auto" or inp.std == "auto"
    if (inp.mean == "auto") != (inp.std == "auto"):
        raise ConfigError("input.mean and input.std must both be auto or both be given")
    resolved = {
        "size": int(meta["input_size"] if inp.size == "auto" else inp.size),
        "mean": [float(v) for v in (meta["mean"] if auto_norm else inp.mean)],
        "std": [float(v) for v in (meta["std"] if auto_norm else inp.std)],
        "max_pixel_value": float(meta.get("max_pixel_value", 255.0) if auto_norm else 255.0),
    }
    for key in ("mean", "std"):
        if len(resolved[key]) != 3:
            raise ConfigError(f"input.{key} must hold 3 numbers (R, G, B), got {resolved[key]}")
    crop = {k: copy.deepcopy(getattr(crop_settings, k)) for k in CROP_KEYS}
    wrong = {k: v for k, v in meta.get("crop", {}).items() if crop.get(k) != v}
    if fixed_size and resolved["size"] != int(meta["input_size"]):
        wrong["input.size"] = meta["input_size"]
    if wrong:
        need = " ".join(f"{k if '.' in k else 'crop.' + k}={v}" for k, v in wrong.items())
        raise ConfigError(f"model.arch {arch} needs {need} (it was trained on such crops; "
                          f"config/dlib.yaml sets them for dlib_resnet)")
    return {"input": resolved, "crop": crop}


class EmbeddingNet(nn.Module, EmbedsCrops, SingleNetwork):
    """Backbone features → pooling → head → unit-length embedding, with its preprocessing in `meta` (a
    runtime.FaceNetwork)."""

    def __init__(self, settings: ModelSettings = ModelSettings(), inp: InputSettings = InputSettings(),
                 crop: CropSettings = CropSettings(), weights: str | None = None):
        """The network of `settings` with `weights` ('pretrained', 'none', a path, or None: a checkpoint's
        weights are loaded next, no pretrained file is read), seeing crops made as `crop` and `inp` say."""
        super().__init__()
        arch = settings.arch
        pooling = lookup(POOLINGS, settings.pooling, "model.pooling")
        head = lookup(HEADS, settings.head, "model.head")
        trunk = build_backbone(arch, weights)
        self.backbone = trunk.module
        self.frozen_parts = frozen_parts(trunk, arch, "all" if not trunk.trainable else settings.freeze)
        for part in self.frozen_parts:
            part.requires_grad_(False)
        self.trainable_backbone = any(p.requires_grad for p in self.backbone.parameters())
        self.pool = nn.Identity() if trunk.pooled else pooling(settings.gem_p)
        self.head, self.embedding_size = head(trunk.features, int(settings.embedding_size))
        self.arch, self.pooling, self.head_name = arch, settings.pooling, settings.head
        self.weights_source, self.fingerprint = trunk.source, trunk.fingerprint
        self.meta = resolve_preprocessing(inp, crop, trunk.meta, arch,
                                          not trunk.trainable or bool(trunk.meta.get("fixed_size")))
        self.lr_backbone = float(trunk.meta.get("lr_backbone", 1e-4))  # train.lr_backbone: auto

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's output, before pooling (no gradient through a frozen backbone)."""
        if self.trainable_backbone:
            return self.backbone(x)
        with torch.no_grad():
            return self.backbone(x)

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Pooling, head and normalisation over backbone outputs: what training a head on a
        frozen backbone's stored features runs (train.frozen_views)."""
        return F.normalize(self.head(self.pool(features).flatten(1)), dim=1)

    def train(self, mode: bool = True) -> "EmbeddingNet":
        super().train(mode)
        for part in self.frozen_parts:
            part.eval()  # frozen layers never update their batch-norm statistics
        return self

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything after the backbone: trained with the head learning rate."""
        return list(self.pool.parameters()) + list(self.head.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The backbone's trainable parameters (none for a frozen extractor)."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def content_fingerprint(self) -> str:
        """sha256 of the weights and preprocessing (torch_fingerprint)."""
        return torch_fingerprint(self)

    def describe(self) -> dict:
        """What the network is: enough to rebuild it and to tell it from another."""
        return {"arch": self.arch, "embedding_size": self.embedding_size, "pooling": self.pooling,
                "head": self.head_name, "fingerprint": self.fingerprint}


class FusedNet(nn.Module, Fusion):
    """Several embedding networks as one model (model.members; a runtime.FaceModel): each sees a photo through its own crop (detector
    chain, alignment, input), and the photo's embedding is their unit vectors side by side, each scaled by the
    square root of its weight (the weights sum to 1). The fused vector is a unit vector again and its cosine is
    the weighted sum of the members' cosines, so search, re-ranking and calibration work on it unchanged.
    Photos reach it through pipeline.embedding; a crop tensor has no meaning for it (forward refuses one)."""

    def __init__(self, members: list[EmbeddingNet], weights: list[float]):
        super().__init__()
        if len(members) < 2:
            raise ConfigError(f"model.members: a fusion needs two or more networks, got {len(members)}")
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"model.member_weights: one weight of 0 or more per member ({len(members)}), "
                              f"not all 0, got {list(weights)}")
        self.members = nn.ModuleList(members)
        self.fuse_members(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("a fused model embeds photos (pipeline.embedding.embed_paths): each member crops them its "
                        "own way, so one crop tensor cannot be fused")

    def content_fingerprint(self) -> str:
        """sha256 of every member's weights, the preprocessing and the weights (torch_fingerprint)."""
        return torch_fingerprint(self)


def frozen_parts(trunk, arch: str, freeze: int | str) -> list[nn.Module]:
    """The backbone parts model.freeze keeps as they are: 'all', or the first N of its levels
    (from the input end; 0: none). A backbone without levels is one part."""
    levels = trunk.levels or [trunk.module]
    if freeze == "all":
        return [trunk.module]
    if isinstance(freeze, bool) or not isinstance(freeze, int) or not 0 <= freeze <= len(levels):
        raise ConfigError(f"model.freeze must be all or a whole number from 0 to {len(levels)} "
                          f"(the levels of {arch}), got {freeze!r}")
    return list(levels[:freeze])


def settings_of(saved: dict) -> tuple[ModelSettings, InputSettings, CropSettings]:
    """The network's typed settings from a checkpoint's saved config (on today's keys: upgrade_config) or a
    loaded one: the one place a network's settings are read from a configuration's sections."""
    return ModelSettings(**saved["model"]), InputSettings(**saved["input"]), CropSettings(**saved["crop"])


def torch_fingerprint(model: nn.Module) -> str:
    """sha256 of a PyTorch model's description, preprocessing and weights: equal fingerprints embed every photo alike."""
    meta = {k: v for k, v in model.meta.items() if k != "calibration"}  # thresholds do not change an embedding
    digest = hashlib.sha256(repr((model.describe(), meta)).encode())
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
