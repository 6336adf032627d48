"""The embedding network: a backbone from backbones/, GeM or average pooling, a head chosen by
name, and an L2-normalised output. The model carries its preprocessing (`model.meta`: crop and
input settings), saved in every checkpoint, so `embed(model, crops)` needs nothing else.

    model = EmbeddingNet(ModelSettings(arch="dlib_resnet", head="none", weights="pretrained"), InputSettings(size=150),
                         CropSettings(align="dlib", size=150), weights="pretrained")
"""
from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones import WeightsError, build_backbone, legacy_frozen_state
from detection import CROP_KEYS, CropSettings, landmark_net, load_crop
from runtime import Fusion, SingleNetwork, is_bundle, load_bundle
from utils import ConfigError, FacematchError, atomic_write, get_logger, lookup, progress, read_defaults

log = get_logger()


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


POOLINGS = {  # model.pooling: a name -> the pooling module (its argument: model.gem_p, GeM's starting exponent)
    "gem": lambda p: GeM(p),
    "avg": lambda p: nn.AdaptiveAvgPool2d(1),
    "rmac": lambda p: RMAC(),
}


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


def rmac_regions(h: int, w: int, levels: int = 3) -> list[tuple[int, int, int]]:
    """R-MAC's square regions (Tolias et al. 2016, as cnnimageretrieval-pytorch lays them out): at level l,
    squares of side floor(2·min(h, w)/(l+1)) on a grid with about 40% overlap, l of them along the short
    side and l plus a few more along the long one; (top, left, side) each."""
    short = min(h, w)
    steps = np.arange(2, 8)  # possible numbers of regions along the long side
    b = (max(h, w) - short) / (steps - 1)
    extra = int(np.argmin(np.abs((short ** 2 - short * b) / short ** 2 - 0.4))) + 1 if h != w else 0
    regions = []
    for level in range(1, levels + 1):
        side = int(2 * short // (level + 1))
        if side == 0:
            continue
        n_h, n_w = level + (extra if h > w else 0), level + (extra if w > h else 0)
        tops = [0] if n_h == 1 else [int(np.floor(i * (h - side) / (n_h - 1))) for i in range(n_h)]
        lefts = [0] if n_w == 1 else [int(np.floor(j * (w - side) / (n_w - 1))) for j in range(n_w)]
        regions += [(t, left, side) for t in tops for left in lefts]
    return regions


class RMAC(nn.Module):
    """Regional maximum activations of convolutions: the whole map's max and each region's max
    (rmac_regions), each L2-normalised, summed. Written here: torchvision and pytorch-metric-learning do
    not ship it."""

    def __init__(self, levels: int = 3, eps: float = 1e-6):
        super().__init__()
        self.levels, self.eps = levels, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def unit_max(t: torch.Tensor) -> torch.Tensor:
            v = t.amax(dim=(2, 3), keepdim=True)
            return v / (v.norm(dim=1, keepdim=True) + self.eps)

        out = unit_max(x)
        for top, left, side in rmac_regions(x.shape[2], x.shape[3], self.levels):
            out = out + unit_max(x[:, :, top:top + side, left:left + side])
        return out


# ---------------------------------------------------------------- heads: features -> embedding

def head_none(features: int, size: int) -> tuple[nn.Module, int]:
    """The pooled features themselves (a pretrained descriptor used as it is)."""
    return nn.Identity(), features


def head_linear(features: int, size: int) -> tuple[nn.Module, int]:
    """Linear projection and batch norm (the design's head)."""
    return nn.Sequential(nn.Linear(features, size), nn.BatchNorm1d(size)), size


def head_mlp(features: int, size: int) -> tuple[nn.Module, int]:
    """Two layers with a ReLU between: room to adapt a frozen descriptor to new people."""
    hidden = max(size, features)
    return nn.Sequential(nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, size), nn.BatchNorm1d(size)), size


HEADS = {"none": head_none, "linear": head_linear, "mlp": head_mlp}


# ---------------------------------------------------------------- preprocessing

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


# ---------------------------------------------------------------- the network

class EmbeddingNet(nn.Module, SingleNetwork):
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

    def embed_crops(self, crops: list, batch_size: int | str = "auto", tta: str = "none", *,
                    device: torch.device | str | None = None, desc: str = "embedding", num_workers: int = 0) -> np.ndarray:
        """Crops embedded in PyTorch (runtime.FaceNetwork.embed_crops; batch_size auto: batch_size_for's, on `device`,
        None: where the weights are)."""
        device = torch.device(device) if device is not None else next(iter(self.parameters()), torch.empty(0)).device
        batch = batch_size_for(self, batch_size, device)
        return embed(self, crops, batch, device, desc=desc, tta=tta, num_workers=num_workers)

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


# ---------------------------------------------------------------- checkpoints

def landmark_net_sections(state: dict) -> list[dict]:
    """Every crop section of a checkpoint whose points come from a landmark network file (crop.landmarks: net):
    its meta's, its members' metas and configs, and its own config's."""
    meta, config = state.get("meta") or {}, state.get("config") or {}
    sections = [meta.get("crop"), config.get("crop"), *(m.get("crop") for m in meta.get("members", [])),
                *((m.get("config") or {}).get("crop") for m in state.get("members", []))]
    return [s for s in sections if isinstance(s, dict) and s.get("landmarks") == "net" and s.get("landmark_net")]


def landmark_net_cache() -> Path:
    """Where the landmark networks carried by checkpoints are written out to be read ($XDG_CACHE_HOME/facematch)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facematch" / "landmark_nets"


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous file intact. A model whose crops are
    aligned by a landmark network carries that network's file, so the checkpoint alone crops as it was trained to."""
    carried = dict(state.get("landmark_nets") or {})
    for section in landmark_net_sections(state):
        name = section["landmark_net"]
        if name not in carried:
            try:
                carried[name] = landmark_net.resolve(name).read_bytes()
            except OSError as exc:
                raise CheckpointError(f"{path}: cannot carry crop.landmark_net {name} ({exc.strerror})") from None
    if carried:
        state = {**state, "landmark_nets": carried}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def unpack_landmark_nets(ckpt: dict) -> dict:
    """A checkpoint whose crop sections name the landmark networks it carries, written out (once, by content) to
    landmark_net_cache(), so its crops need no file from the machine it was trained on."""
    carried = ckpt.get("landmark_nets") or {}
    for section in landmark_net_sections(ckpt):
        data = carried.get(section["landmark_net"])
        if data is None:
            continue  # written before checkpoints carried it: the file is looked for where it was
        out = landmark_net_cache() / f"{hashlib.sha256(data).hexdigest()}.pt"
        if not out.exists():
            atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
        section["landmark_net"] = str(out)
    return ckpt


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
    return unpack_landmark_nets(ckpt)


def upgrade_config(trained: dict) -> dict:
    """A checkpoint's config on today's keys: keys it lacks get today's defaults, except crop
    settings, which get what cropping did when it was written (CropSettings.from_saved); keys since
    removed are dropped."""
    cfg = read_defaults()

    def overlay(base: dict, old: dict) -> None:
        for key, value in old.items():
            if key in base and isinstance(base[key], dict) and isinstance(value, dict):
                overlay(base[key], value)
            elif key in base:
                base[key] = value
    overlay(cfg, trained)
    cfg["crop"] = CropSettings.from_saved(trained.get("crop", {})).to_dict()
    trained_model = trained.get("model", {})
    if "head" not in trained_model:
        cfg["model"]["head"] = "linear"
    for key in ("mean", "std"):
        cfg["input"].setdefault(key, "auto")
    return cfg


def load_model_state(model: EmbeddingNet, ckpt: dict, path: str | Path = "checkpoint") -> None:
    """Load a checkpoint's weights, refusing one made for another network (backbone, head,
    embedding size, pooling, or the frozen weights outside the state dict)."""
    saved = ckpt.get("model_info") or {**upgrade_config(ckpt["config"])["model"], "fingerprint": ""}
    mine = model.describe()
    if "members" in ckpt:
        raise CheckpointError(f"{path} holds a fusion of several networks ({saved.get('arch')}), but this model is one "
                              f"{mine['arch']}: use the checkpoint as it is, or one of its members' checkpoints")
    keys = ("arch", "embedding_size", "pooling", "head")
    if tuple(str(saved.get(k)) for k in keys) != tuple(str(mine[k]) for k in keys):
        raise CheckpointError(
            f"{path} holds a {saved.get('arch')} ({saved.get('head', 'linear')} head, {saved.get('embedding_size')}-d "
            f"embeddings, {saved.get('pooling')} pooling), but this model is a {mine['arch']} ({mine['head']} head, "
            f"{mine['embedding_size']}-d, {mine['pooling']} pooling): set model.* to match or use another checkpoint")
    state = ckpt["model"]
    if saved.get("fingerprint", "") != mine["fingerprint"]:
        if mine["fingerprint"]:
            raise CheckpointError(f"{path} was trained on other frozen {mine['arch']} weights "
                                  f"(sha256 {str(saved.get('fingerprint'))[:12]}…, here {mine['fingerprint'][:12]}…)")
        try:  # written when the backbone's weights lived outside the state dict (dlib's .dat, read again)
            state = {**{f"backbone.{k}": v for k, v in legacy_frozen_state(mine["arch"], saved["fingerprint"]).items()},
                     **state}
        except WeightsError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit this model: {str(exc).splitlines()[0]}") from None


def model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu",
                          ckpt: dict | None = None, threads: int | None = None) -> tuple[EmbeddingNet, dict]:
    """Rebuild the network a checkpoint was trained with, in eval mode, with the preprocessing it
    was trained with; returns (model, its config on today's keys). `ckpt`: the file, already read. An exported model
    (a folder `facematch export` wrote) is loaded to run in ONNX Runtime (runtime.load_bundle) with `threads`."""
    if ckpt is None and is_bundle(path):
        model, trained = load_bundle(path, threads or None)
        return model, upgrade_config(trained)
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    cfg = upgrade_config(ckpt["config"])
    if "members" in ckpt:
        return fused_from_checkpoint(ckpt, path).to(device).eval(), cfg
    model = EmbeddingNet(*settings_of(cfg))
    load_model_state(model, ckpt, path)
    if "meta" in ckpt:
        model.meta = saved_meta(ckpt["meta"])
    return model.to(device).eval(), cfg


def saved_meta(meta: dict) -> dict:
    """A checkpoint's meta with its crop settings on today's fields."""
    meta = copy.deepcopy(meta)
    meta["crop"] = {k: v for k, v in CropSettings.from_saved(meta["crop"]).to_dict().items() if k in CROP_KEYS}
    return meta


def fused_checkpoint(model: FusedNet, saved: dict, members_saved: list[dict]) -> dict:
    """A fused model's checkpoint: every member's weights in one state dict, each member's saved config (its model,
    input and crop sections: what rebuilds it) and model_info, the fusion's meta (the members' preprocessing, the
    weights, the calibration) and the config it was made with (`saved`)."""
    return {"config": saved, "model": model.state_dict(), "model_info": model.describe(), "meta": model.meta,
            "members": [{"config": c, "model_info": m.describe()} for c, m in zip(members_saved, model.members)]}


def fused_from_checkpoint(ckpt: dict, path: str | Path) -> FusedNet:
    """The fusion a checkpoint holds (fused_checkpoint), each member rebuilt from its own config, with its meta."""
    members = []
    for saved, meta in zip(ckpt["members"], ckpt["meta"]["members"]):
        member = EmbeddingNet(*settings_of(upgrade_config(saved["config"])))
        member.meta = saved_meta(meta)
        members.append(member)
    model = FusedNet(members, ckpt["meta"]["weights"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit its members: {str(exc).splitlines()[0]}") from None
    if "calibration" in ckpt["meta"]:
        model.meta["calibration"] = copy.deepcopy(ckpt["meta"]["calibration"])
    return model


def torch_fingerprint(model: nn.Module) -> str:
    """sha256 of a PyTorch model's description, preprocessing and weights: equal fingerprints embed every photo alike."""
    meta = {k: v for k, v in model.meta.items() if k != "calibration"}  # thresholds do not change an embedding
    digest = hashlib.sha256(repr((model.describe(), meta)).encode())
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


TTA = ("none", "flip")
AUTO_BATCH_MOST, AUTO_BATCH_SHARE = 256, 0.25


def activation_bytes(model: EmbeddingNet, device: torch.device | str = "cpu") -> int:
    """Bytes of every layer's output for one crop at the model's input size: an upper bound of
    the activations an inference pass holds per image (each is freed once the next layer used it)."""
    side = int(model.meta["input"]["size"])
    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        for t in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, 3, side, side, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


def batch_size_for(model: EmbeddingNet, setting: int | str, device: torch.device | str = "cpu") -> int:
    """retrieval.batch_size resolved: a number as it is; 'auto' the largest power of two up to
    AUTO_BATCH_MOST whose activations (activation_bytes, plus the TTA mirror's) fit in a quarter
    of the memory free on the device now."""
    if str(setting) == "auto":
        from utils import available_memory

        # One measuring pass per model and input size, not one per call (the search page embeds each upload).
        key = (int(model.meta["input"]["size"]), str(device))
        if getattr(model, "_activation_bytes", (None, 0))[0] != key:
            model._activation_bytes = (key, activation_bytes(model, device))
        per_image = 2 * max(1, model._activation_bytes[1])  # flip TTA holds a second pass
        fits = int(available_memory(device) * AUTO_BATCH_SHARE // per_image)
        return max(1, min(AUTO_BATCH_MOST, 1 << max(0, fits.bit_length() - 1)))
    if str(setting).isdigit() and int(setting) > 0:
        return int(setting)
    raise ConfigError(f"retrieval.batch_size must be a positive number or auto, got {setting!r}")


class CropDataset(torch.utils.data.Dataset):
    """Face crops (arrays or crop-cache files) through a transform: decoding happens in the
    DataLoader's workers when it has some."""

    def __init__(self, crops: list, transform):
        self.crops, self.transform = crops, transform

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(image=load_crop(self.crops[i]))["image"]


def embed(model: EmbeddingNet, crops: list[np.ndarray | Path], batch_size: int = 64,
          device: torch.device | str | None = None, desc: str = "embedding", tta: str = "none",
          num_workers: int = 0, mirror: bool = False) -> np.ndarray:
    """Embed face crops (RGB arrays or crop-cache files, read a batch at a time) with the model's
    own evaluation preprocessing: an (N, D) float32 array of unit vectors; the one path from crops to
    embeddings (pipeline.embedding, validation, calibration and distillation's targets all come here).
    tta='flip' averages the embeddings of each crop and its mirror image, then normalises again;
    mirror=True embeds the mirror images instead (distillation's second view).

    Decoding and transforms run in `num_workers` DataLoader workers; convolutions run
    channels-last (about 1.1–2× faster on this CPU, bench/RESULTS.md), and on CUDA under bf16
    (or fp16) autocast; the output is float32 either way.
    """
    from dataset import eval_transform

    lookup(dict.fromkeys(TTA), tta, "retrieval.tta")
    device = torch.device(device) if device is not None else next(iter(model.parameters()), torch.empty(0)).device
    if not crops:
        return np.zeros((0, model.embedding_size), dtype=np.float32)
    loader = torch.utils.data.DataLoader(CropDataset(crops, eval_transform(model.meta["input"])), batch_size=batch_size,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    was_training = model.training
    model.eval()
    if not was_training:
        # Not while training (a resumed run must compute exactly as an uninterrupted one), and
        # outside inference mode (weights converted there would become inference tensors).
        model.to(memory_format=torch.channels_last)
    out = []
    with torch.inference_mode():
        for batch in progress(loader, desc=desc, unit="batch", disable=len(loader) < 5):
            batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            if mirror:  # the evaluation transform has no geometry: flipping the tensor = flipping the crop
                batch = batch.flip(-1)
            with torch.autocast(device.type, dtype=dtype, enabled=cuda):
                emb = model(batch).float()
                if tta == "flip":  # the evaluation transform has no geometry: flipping the tensor = flipping the crop
                    emb = F.normalize(emb + model(batch.flip(-1)).float(), dim=1)
            out.append(emb.cpu())
    model.train(was_training)
    return torch.cat(out).numpy()
