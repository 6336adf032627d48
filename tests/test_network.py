"""The embedding network, its weights and its checkpoints."""
from __future__ import annotations

from conftest import net
import numpy as np
import pytest
import torch
import torchvision

import network
from backbones import WeightsError
from settings import build_model
from network import (CheckpointError, EmbeddingNet, load_model_state, model_from_checkpoint, read_checkpoint,
                     save_checkpoint)
from torchnet import embed_loop
from utils import ConfigError
from settings import load_config

CFG = load_config()  # the configuration every network below is built with


@pytest.mark.parametrize("arch,pooling", [("resnet18", "gem"), ("resnet34", "avg"), ("resnet50", "gem")])
def test_output_shape_and_unit_norm(arch, pooling):
    torch.manual_seed(0)
    model = net(arch, 24, pooling, cfg=CFG).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 24)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(out[0], out[1])


def test_gem_pooling_is_between_average_and_max():
    x = torch.rand(2, 4, 5, 5) + 0.01
    gem = network.GeM(p=3.0)(x)
    assert torch.all(gem >= x.mean(dim=(2, 3)) - 1e-6) and torch.all(gem <= x.amax(dim=(2, 3)) + 1e-6)
    assert torch.allclose(network.GeM(p=1.0)(x), x.mean(dim=(2, 3)), atol=1e-6)


def test_unknown_arch_or_pooling_is_a_config_error():
    with pytest.raises(ConfigError, match="resnet99"):
        net("resnet99", cfg=CFG)
    with pytest.raises(ConfigError, match="max"):
        net("resnet18", pooling="max", cfg=CFG)


def test_build_model_loads_the_configured_weights_and_says_where_from(tmp_path):
    # Weight files in depth are tested in test_backbones.py; here, that the config reaches them.
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    cfg = load_config(overrides=["model.arch=resnet18", f"model.weights={tmp_path / 'r18.pth'}"])
    model, source = build_model(cfg)
    assert str(tmp_path / "r18.pth") in source and model.weights_source == source
    assert torch.equal(model.backbone[0].weight, reference.conv1.weight)
    with pytest.raises(WeightsError, match="resnet50"):
        build_model(load_config(overrides=["model.arch=resnet50", f"model.weights={tmp_path / 'r18.pth'}"]))


def test_dlib_backbone_demands_its_own_chips():
    with pytest.raises(ConfigError, match="crop.align=dlib"):
        net("dlib_resnet", 128, head="mlp", weights="pretrained", cfg=load_config())
    cfg = load_config(["config/dlib.yaml"])
    with pytest.raises(ConfigError, match="input.size=150"):
        net("dlib_resnet", 128, head="mlp", weights="pretrained",
                     cfg=load_config(overrides=["input.size=112"], base=cfg))
    model, source = build_model(cfg)
    assert model.meta["input"]["size"] == 150 and model.meta["crop"]["align"] == "dlib"
    assert model.backbone_parameters() == [] and len(model.head_parameters()) > 0  # config/dlib.yaml: freeze all
    assert "dlib" in source and model.fingerprint == ""
    unfrozen = net("dlib_resnet", 128, head="mlp", weights="pretrained",
                            cfg=load_config(overrides=["model.freeze=0"], base=cfg))
    assert len(unfrozen.backbone_parameters()) == 117


def _tiny_checkpoint(tmp_path, arch="resnet18", size=16, overrides=()):
    cfg = load_config(overrides=[f"model.arch={arch}", "model.weights=none", f"model.embedding_size={size}",
                                 *overrides])
    torch.manual_seed(1)
    model, _ = build_model(cfg)
    path = tmp_path / f"{arch}_{size}.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg, "epoch": 3, "metrics": {"map": 0.5},
                           "meta": model.meta, "model_info": model.describe()})
    return model.eval(), path


def test_checkpoint_round_trip_gives_the_same_embeddings(tmp_path):
    model, path = _tiny_checkpoint(tmp_path)
    loaded, cfg = model_from_checkpoint(path, "cpu")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert cfg["model"]["embedding_size"] == 16 and read_checkpoint(path)["epoch"] == 3
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


def test_checkpoint_of_another_model_fails_clearly(tmp_path):
    _, path = _tiny_checkpoint(tmp_path, "resnet18", 16)
    for other in (net("resnet18", 32, cfg=CFG), net("resnet34", 16, cfg=CFG)):
        with pytest.raises(CheckpointError) as err:
            load_model_state(other, read_checkpoint(path), path)
        assert "resnet18 (linear head, 16-d" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(CheckpointError, match="mlp head"):
        load_model_state(net("resnet18", 16, head="mlp", cfg=CFG), read_checkpoint(path), path)
    ckpt = read_checkpoint(path)
    del ckpt["model"]["head.0.weight"]
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model_state(net("resnet18", 16, cfg=CFG), ckpt, path)


def test_not_a_checkpoint_fails_clearly(tmp_path):
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a facematch checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "missing.pt")


def test_interrupted_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    _, path = _tiny_checkpoint(tmp_path)
    before = path.read_bytes()

    def crash(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {}, "config": {}})
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_inference_keeps_the_trained_preprocessing(tmp_path):
    from settings import load_for_inference

    _, path = _tiny_checkpoint(tmp_path, overrides=["input.size=40", "input.mean=[0.5, 0.5, 0.5]",
                                                    "input.std=[0.2, 0.2, 0.2]", "crop.detector=mtcnn"])
    model, cfg, device = load_for_inference(path, [], ["input.size=200", "crop.margin=0.9", "retrieval.k=5",
                                                       "crop.detector=yunet", "input.mean=auto", "input.std=auto"])
    trained = read_checkpoint(path)
    assert cfg["input"] == trained["config"]["input"] and cfg["crop"]["margin"] == trained["config"]["crop"]["margin"]
    assert cfg["crop"]["detector"] == "mtcnn"
    assert model.meta == trained["meta"] and model.meta["input"]["size"] == 40
    assert model.meta["input"]["mean"] == [0.5] * 3 and model.meta["crop"]["detector"] == "mtcnn"
    assert cfg["retrieval"]["k"] == 5  # what is not preprocessing follows the caller
    assert model.embedding_size == 16 and not model.training


def test_the_checkpoint_not_todays_defaults_decides_the_preprocessing(tmp_path, monkeypatch):
    import utils

    _, path = _tiny_checkpoint(tmp_path, overrides=["crop.detector=mtcnn", "crop.align=similarity"])
    ckpt = read_checkpoint(path)
    # Next year's default config: another detector, alignment, input size and normalisation.
    text = (utils.ROOT / "config" / "default.yaml").read_text()
    for old, new in (("detector: haar", "detector: yunet"), ("align: none", "align: dlib"),
                     ("  size: 112", "  size: 96"), ("mean: auto", "mean: [0.1, 0.1, 0.1]"),
                     ("std: auto", "std: [0.9, 0.9, 0.9]")):
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "default.yaml").write_text(text)
    monkeypatch.setattr(utils, "DEFAULT_CONFIG", tmp_path / "default.yaml")
    model, _ = model_from_checkpoint(path)
    assert model.meta == ckpt["meta"]
    assert (model.meta["crop"]["detector"], model.meta["crop"]["align"]) == ("mtcnn", "similarity")
    assert model.meta["input"]["size"] == 112 and model.meta["input"]["mean"] == [0.485, 0.456, 0.406]
    # A checkpoint written before crop settings existed keeps the Haar, unaligned crops it was made with.
    old = read_checkpoint(path)
    for key in ("detector", "fallback", "align", "min_confidence"):
        del old["config"]["crop"][key]
    del old["meta"], old["model_info"]
    save_checkpoint(tmp_path / "old.pt", old)
    model, cfg = model_from_checkpoint(tmp_path / "old.pt")
    assert (model.meta["crop"]["detector"], model.meta["crop"]["align"]) == ("haar", "none")


@pytest.mark.parametrize("head,size,expected", [("none", 16, 512), ("linear", 16, 16), ("mlp", 24, 24)])
def test_heads_give_unit_embeddings_of_the_declared_size(head, size, expected):
    model = net("resnet18", size, head=head, cfg=CFG).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, expected) and model.embedding_size == expected
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    with pytest.raises(ConfigError, match="model.head"):
        net("resnet18", head="transformer", cfg=CFG)


def test_preprocessing_comes_from_the_backbone_when_auto():
    model = net("resnet18", 16, cfg=load_config(overrides=["input.size=auto"]))
    assert model.meta["input"]["size"] == 224 and model.meta["input"]["mean"] == [0.485, 0.456, 0.406]
    given = load_config(overrides=["input.mean=[0.5, 0.5, 0.5]", "input.std=[0.5, 0.5, 0.5]"])
    assert net("resnet18", 16, cfg=given).meta["input"]["mean"] == [0.5] * 3
    with pytest.raises(ConfigError, match="both"):
        net("resnet18", 16, cfg=load_config(overrides=["input.mean=[0.5, 0.5, 0.5]"]))


def test_embed_needs_no_transform_from_its_caller(tmp_path):
    from dataset import eval_transform
    from network import embed

    model, path = _tiny_checkpoint(tmp_path, overrides=["input.size=40", "input.mean=[0.5, 0.5, 0.5]",
                                                        "input.std=[0.2, 0.2, 0.2]"])
    crops = [np.random.default_rng(i).integers(0, 255, (50, 50, 3), dtype=np.uint8) for i in range(3)]
    by_hand = eval_transform({"size": 40, "mean": [0.5] * 3, "std": [0.2] * 3})
    with torch.no_grad():
        expected = model(torch.stack([by_hand(image=c)["image"] for c in crops])).numpy()
    assert np.allclose(embed(model, crops), expected, atol=1e-5)


def test_batch_size_auto_follows_the_free_memory(monkeypatch):
    import utils
    from network import activation_bytes, batch_size_for

    cfg = load_config(overrides=["input.size=32"])
    model = net("resnet18", 16, head="linear", weights=None, cfg=cfg)
    per_image = activation_bytes(model)
    assert per_image > 0
    big = net("resnet18", 16, head="linear", weights=None, cfg=load_config(overrides=["input.size=64"]))
    assert 3.5 < activation_bytes(big) / per_image < 4.5  # activations grow with the pixel count
    for free, expected in ((2 * per_image * 4 * 16, 16), (2 * per_image * 4 * 3, 2), (10, 1), (10**15, 256)):
        monkeypatch.setattr(utils, "available_memory", lambda device, free=free: free)
        assert batch_size_for(model, "auto") == expected, (free, expected)
    assert batch_size_for(model, 12) == 12 and batch_size_for(model, "12") == 12
    for bad in ("big", 0, -3):
        with pytest.raises(ConfigError, match="embedding.batch_size"):
            batch_size_for(model, bad)


def test_batch_size_auto_measures_a_model_once(monkeypatch):
    from network import batch_size_for

    model = net("resnet18", 16, head="linear", weights=None, cfg=load_config(overrides=["input.size=32"]))
    calls = []
    real = embed_loop.activation_bytes
    monkeypatch.setattr(embed_loop, "activation_bytes", lambda *a: calls.append(1) or real(*a))
    first = batch_size_for(model, "auto")
    assert batch_size_for(model, "auto") == first and len(calls) == 1
    model.meta["input"]["size"] = 64  # another input size is measured again
    batch_size_for(model, "auto")
    assert len(calls) == 2


def test_rmac_regions_and_pooling_by_hand():
    from network import RMAC, rmac_regions

    square = rmac_regions(4, 4)  # level 1: the whole map; level 2: 2×2 squares of side 2; level 3: 3×3 of side 2
    assert square[0] == (0, 0, 4) and len(square) == 1 + 4 + 9
    assert sorted(set(r[:2] for r in square[1:5])) == [(0, 0), (0, 2), (2, 0), (2, 2)]
    wide = rmac_regions(3, 6)  # the long side gets 2 more regions at every level
    assert wide[:3] == [(0, 0, 3), (0, 1, 3), (0, 3, 3)]
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0] = 1.0  # channel 0 everywhere, channel 1 only at the top-left corner
    x[0, 1, 0, 0] = 1.0
    # The corner lies in the whole map, the level-1 square and one square of each finer level: 4 regions
    # give (1, 1)/√2, the other 11 give (1, 0).
    out = RMAC()(x).flatten()
    assert torch.allclose(out, torch.tensor([4 / 2 ** 0.5 + 11, 4 / 2 ** 0.5]), atol=1e-4)
    model = net("resnet18", 16, "rmac", cfg=CFG).eval()
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 16)
