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
    """The Makefile's QUICK_BEST, as `make serve` and `make demo` pass it: config/best.yaml with FaceRes as it is."""
    import re
    import shlex

    line = re.search(r"^QUICK_BEST := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    return shlex.split(line.replace("$(comma)", ","))


@pytest.fixture(scope="session")
def best_store(tmp_path_factory) -> Path:
    """What `make serve` builds, by its own commands, on the fixtures' people instead of data/sample's: config/best.yaml's
    fusion as the Makefile trains it (dlib's network fine-tuned, fused with FaceRes as it is), then the page's store
    (about 30 s). Copy it before changing it."""
    from cli import main
    from backbones.faceres import models_dir

    if not (models_dir() / "faceres.json").is_file():
        pytest.skip(f"FaceRes's weights are not installed in {models_dir()} (make venv runs `facematch weights`)")
    work = tmp_path_factory.mktemp("best")
    caches = [f"data.cache_dir={work / 'cache'}", f"data.embedding_cache={work / 'embeddings.sqlite'}"]
    assert main(["train", *make_serve_recipe(), f"data.train_dir={PEOPLE}", "data.val_fraction=0.4",
                 f"train.out_dir={work / 'best'}", f"train.figure={work / 'curve.png'}", *caches]) == 0
    assert main(["store", "build", "--store", str(work / "store"), "--checkpoint", str(work / "best" / "best.pt"),
                 str(PEOPLE), *caches]) == 0
    return work / "store"
