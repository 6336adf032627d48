"""Shared test set-up: fixture paths and a tiny CPU config."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FACES = FIXTURES / "faces"
PEOPLE = FIXTURES / "people"
SHARED = ROOT.parent / "shared" / "data"


def needs_shared(sub: str):
    """Skip a test that needs more real photos than tests/fixtures holds."""
    return pytest.mark.skipif(not (SHARED / sub).is_dir(),
                              reason=f"needs ../shared/data/{sub} (not in a fresh clone; tests/fixtures has a few photos)")


# A resolved input section (what model.meta['input'] holds) for transforms tested without a model.
TINY_INPUT = {"size": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "max_pixel_value": 255.0}


@pytest.fixture
def tiny_cfg(tmp_path):
    """A config small enough to train in seconds on the CPU: ResNet18, 32-px inputs, random weights."""
    from settings import load_config

    return load_config(overrides=[
        f"data.train_dir={PEOPLE}", f"data.cache_dir={tmp_path / 'cache'}", "data.val_fraction=0.4",
        f"data.embedding_cache={tmp_path / 'embeddings.sqlite'}",
        "model.arch=resnet18", "model.weights=none", "model.embedding_size=16",
        "input.size=32", "crop.size=40", "device=cpu",
        "train.epochs=2", "train.P=3", "train.K=2", "train.batches_per_epoch=3", "train.patience=0",
        "train.lr_backbone=0.001", "train.lr_head=0.001", "train.batch_size_eval=8",
        f"train.out_dir={tmp_path / 'run'}", f"train.figure={tmp_path / 'curve.png'}",
        f"evaluate.figure={tmp_path / 'retrieval.png'}", "embedding.batch_size=8",
    ])


def net(arch: str, embedding_size: int = 512, pooling: str = "gem", head: str = "linear", weights=None, cfg=None):
    """An EmbeddingNet as a test builds one: these model settings on top of cfg's (default: the default
    config's), with cfg's input and crop settings."""
    from dataclasses import replace

    from network import EmbeddingNet, settings_of
    from settings import load_config

    model, inp, crop = settings_of(cfg or load_config())
    model = replace(model, arch=arch, embedding_size=embedding_size, pooling=pooling, head=head)
    return EmbeddingNet(model, inp, crop, weights)


def new_store(root, ckpt):
    """A new gallery store for a checkpoint, with its own retrieval and data settings (as `facematch store build`)."""
    from dataset import DataSettings
    from pipeline.store import GalleryStore
    from runtime import EmbeddingSettings
    from search.retrieval_settings import RetrievalSettings
    from settings import load_for_inference

    model, cfg, _ = load_for_inference(ckpt)
    return GalleryStore.create(root, ckpt, model, RetrievalSettings(**cfg["retrieval"]), DataSettings(**cfg["data"]),
                               EmbeddingSettings(**cfg["embedding"]))


def make_serve_recipe() -> list[str]:
    """The Makefile's QUICK_BEST, as `make serve` and `make demo` pass it: config/best.yaml's recipe, shortened."""
    import re
    import shlex

    line = re.search(r"^QUICK_BEST := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    return shlex.split(line.replace("$(comma)", ","))


# config/best_accurate.yaml's fusion with FaceRes as it is (its fine-tuning takes minutes): dlib's network fine-tuned and
# FaceRes, each on its own crop; the page, the store and the browser test run on one as on a single network's store.
FUSED_RECIPE = ["--config", "config/best_accurate.yaml", "model.members=[config/best_dlib.yaml,config/faceres.yaml]"]


def built_store(work: Path, recipe: list[str]) -> Path:
    """A checkpoint trained by `recipe` on the fixtures' people (work/best/best.pt), then a page's store of them
    (work/store), by the commands `make serve` runs."""
    from cli import main

    caches = [f"data.cache_dir={work / 'cache'}", f"data.embedding_cache={work / 'embeddings.sqlite'}"]
    assert main(["train", *recipe, f"data.train_dir={PEOPLE}", "data.val_fraction=0.4",
                 f"train.out_dir={work / 'best'}", f"train.figure={work / 'curve.png'}", *caches]) == 0
    assert main(["store", "build", "--store", str(work / "store"), "--checkpoint", str(work / "best" / "best.pt"),
                 str(PEOPLE), *caches]) == 0
    return work / "store"


def skip_without_weights(*archs: str) -> None:
    """Skip where a network's weights file is not installed (make venv runs `facematch weights`)."""
    from backbones import faceres, mobilefacenet

    files = {"faceres": faceres.models_dir() / "faceres.json",
             "mobilefacenet512": mobilefacenet.models_dir() / "fr_feature.onnx",
             "mobilefacenet192": mobilefacenet.models_dir() / "MobileFaceNet.tflite"}
    for arch in archs:
        if arch in files and not files[arch].is_file():
            pytest.skip(f"{arch}'s weights are not installed in {files[arch].parent} (make venv runs `facematch weights`)")


@pytest.fixture(scope="session")
def best_store(tmp_path_factory) -> Path:
    """What `make serve` builds, by its own commands and the Makefile's QUICK_BEST (config/best.yaml's recipe, shortened
    as the demo shortens it), on the fixtures' people instead of data/sample's; the checkpoint is the store's
    parent's best/best.pt. Copy it before changing it."""
    from settings import load_config

    recipe = make_serve_recipe()
    cfg = load_config([a for i, a in enumerate(recipe) if i and recipe[i - 1] == "--config"],
                      [a for a in recipe if "=" in a and not a.startswith("--")])
    skip_without_weights(cfg["model"]["arch"], *(load_config([m])["model"]["arch"] for m in cfg["model"]["members"]
                                                  if str(m).endswith(".yaml")))
    return built_store(tmp_path_factory.mktemp("best"), recipe)


@pytest.fixture(scope="session")
def fused_store(tmp_path_factory) -> Path:
    """A fusion's page store (FUSED_RECIPE: dlib's network fine-tuned, fused with FaceRes as it is; about 30 s)."""
    skip_without_weights("faceres")
    return built_store(tmp_path_factory.mktemp("fused"), FUSED_RECIPE)
