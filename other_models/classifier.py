"""Classifier baselines: ResNet50, EfficientNet-Lite0 and VGG16 trained as identity classifiers
(softmax cross-entropy or ArcFace) and used for retrieval through their penultimate feature.

    python other_models/classifier.py --list
    python other_models/classifier.py --variant resnet50_softmax [--config extra.yaml] [key=value ...]

A baseline is the main pipeline's EmbeddingNet (backbone → pooling → head → L2-normalised
embedding) trained by train.py's loop with a classification loss whose class weights live in the
loss, not the model: the checkpoint is an ordinary facematch checkpoint, its embedding is the
penultimate feature, and `facematch evaluate`, request_send.py and `train.py --resume` take it as it is.

Configuration: config/default.yaml, then config/classifier.yaml, then the variant's settings, then
every --config file, then the key=value overrides. train.out_dir defaults to checkpoints/<variant>
and train.figure to figures/<variant>_training_curve.png unless the user sets them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from settings import load_config, run_command  # noqa: E402
from utils import ConfigError, get_logger  # noqa: E402

log = get_logger()
BASE_CONFIG = ROOT / "config" / "classifier.yaml"

# Variant name -> overrides on top of config/classifier.yaml. ResNet50 and VGG16 keep the user's
# model.weights (default imagenet: torchvision's file from the torch cache or the web; none: random);
# EfficientNet-Lite0 takes its offline ImageNet file (model.weights=pretrained).
VARIANTS: dict[str, list[str]] = {
    "resnet50_softmax": ["model.arch=resnet50", "loss.name=softmax"],
    "resnet50_arcface": ["model.arch=resnet50", "loss.name=arcface"],
    "efficientnet_lite0_softmax": ["model.arch=efficientnet_lite0", "model.weights=pretrained", "loss.name=softmax"],
    "efficientnet_lite0_arcface": ["model.arch=efficientnet_lite0", "model.weights=pretrained", "loss.name=arcface"],
    "vgg16_softmax": ["model.arch=vgg16", "loss.name=softmax"],
    "vgg16_arcface": ["model.arch=vgg16", "loss.name=arcface"],
}
# Defaults that depend on the variant, applied only where no config file or override set the key.
PER_VARIANT = {("train", "out_dir"): "checkpoints/{variant}",
               ("train", "figure"): "figures/{variant}_training_curve.png"}


def variant_config(variant: str, files: list[str] | None = None, overrides: list[str] | None = None) -> dict:
    """The configuration of a variant: default.yaml, classifier.yaml, the variant, the user's files
    and overrides, and the per-variant output paths where the user gave none."""
    if variant not in VARIANTS:
        raise KeyError(variant)
    base = load_config([BASE_CONFIG], VARIANTS[variant])
    for section, key in PER_VARIANT:
        base[section][key] = None  # a marker: still None after the user's layers means not given
    cfg = load_config(files, overrides, base=base)
    for (section, key), default in PER_VARIANT.items():
        value = cfg[section][key]
        cfg[section][key] = default.format(variant=variant) if value is None else str(value)
    return cfg


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", help="the baseline to train (--list shows them)")
    parser.add_argument("--list", action="store_true", help="print the variants and their settings, then exit")


def train_variant(args: argparse.Namespace) -> int:
    if args.list:
        for name, settings in VARIANTS.items():
            print(f"{name:28s} {' '.join(settings)}")
        return 0
    if not args.variant:
        raise ConfigError("give --variant NAME (one of: " + ", ".join(VARIANTS) + "), or --list")
    if args.variant not in VARIANTS:
        raise ConfigError(f"unknown variant '{args.variant}': use one of {', '.join(VARIANTS)}")
    import train  # here: --list and argument errors need no torch

    cfg = variant_config(args.variant, args.config, args.overrides)
    chosen = load_config([BASE_CONFIG], VARIANTS[args.variant])
    for section, key in (("model", "arch"), ("loss", "name")):
        if cfg[section][key] != chosen[section][key]:
            log.warning(f"{section}.{key}={cfg[section][key]} from your config replaces the variant's "
                        f"{chosen[section][key]}")
    log.info(f"classifier baseline {args.variant}: {cfg['model']['arch']}, loss {cfg['loss']['name']}, "
             f"weights {cfg['model']['weights']}, checkpoints in {cfg['train']['out_dir']}")
    state = train.train(cfg)
    if state["best"] is not None:
        print(f"{args.variant}: trained {state['epoch']} epochs; best {state['monitor']} {state['best']:.4f}; "
              f"checkpoints in {cfg['train']['out_dir']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(__doc__, arguments, train_variant, argv, config="the variant's config")


if __name__ == "__main__":
    sys.exit(main())
