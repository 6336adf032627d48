"""The embedding network, its weights and its checkpoints."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

import network
from network import (CheckpointError, EmbeddingNet, WeightsError, build_model, load_model_state,
                     model_from_checkpoint, read_checkpoint, save_checkpoint)
from utils import ConfigError, load_config


@pytest.mark.parametrize("arch,pooling", [("resnet18", "gem"), ("resnet34", "avg"), ("resnet50", "gem")])
def test_output_shape_and_unit_norm(arch, pooling):
    torch.manual_seed(0)
    model = EmbeddingNet(arch, 24, pooling).eval()
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
        EmbeddingNet("resnet99")
    with pytest.raises(ConfigError, match="max"):
        EmbeddingNet("resnet18", pooling="max")


def test_imagenet_weights_unavailable_fail_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    # Where torchvision fetches from: no test may depend on (or use) the network.
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    cfg = load_config(overrides=["model.arch=resnet18"])["model"]
    with pytest.raises(WeightsError) as err:
        build_model(cfg)
    message = str(err.value)
    assert "resnet18" in message and str(tmp_path) in message and "model.weights" in message


def test_imagenet_weights_load_from_the_torch_cache(monkeypatch, tmp_path):
    # A file already in torch's cache is used without any download (stand-in weights, real code path).
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    reference = torchvision.models.resnet18(weights=None).state_dict()
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference, tmp_path / "checkpoints" / weights.url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    model, source = build_model(load_config(overrides=["model.arch=resnet18"])["model"])
    assert "ImageNet" in source
    assert torch.equal(model.backbone[0].weight, reference["conv1.weight"])


def test_weights_from_a_file_fill_the_backbone(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model, source = build_model(load_config(overrides=["model.arch=resnet18", f"model.weights={tmp_path / 'r18.pth'}"])["model"])
    assert str(tmp_path / "r18.pth") in source
    assert torch.equal(model.backbone[0].weight, reference.conv1.weight)
    assert torch.equal(model.backbone[7][1].conv2.weight, reference.layer4[1].conv2.weight)


def test_weights_of_another_arch_or_a_missing_file_fail_clearly(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match="resnet50"):
        build_model(load_config(overrides=["model.arch=resnet50", f"model.weights={tmp_path / 'r18.pth'}"])["model"])
    with pytest.raises(WeightsError, match="nothing.pth"):
        build_model(load_config(overrides=[f"model.weights={tmp_path / 'nothing.pth'}"])["model"])


def _tiny_checkpoint(tmp_path, arch="resnet18", size=16):
    cfg = load_config(overrides=[f"model.arch={arch}", "model.weights=none", f"model.embedding_size={size}"])
    torch.manual_seed(1)
    model, _ = build_model(cfg["model"])
    path = tmp_path / f"{arch}_{size}.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg, "epoch": 3, "metrics": {"map": 0.5}})
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
    for other in (EmbeddingNet("resnet18", 32), EmbeddingNet("resnet34", 16)):
        with pytest.raises(CheckpointError) as err:
            load_model_state(other, read_checkpoint(path), path)
        assert "resnet18 with 16-d" in str(err.value) and str(path) in str(err.value)
    ckpt = read_checkpoint(path)
    del ckpt["model"]["fc.weight"]
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model_state(EmbeddingNet("resnet18", 16), ckpt, path)


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
    from network import load_for_inference

    _, path = _tiny_checkpoint(tmp_path)
    model, cfg, device = load_for_inference(path, [], ["input.size=200", "crop.margin=0.9", "retrieval.k=5"])
    trained = read_checkpoint(path)["config"]
    assert cfg["input"] == trained["input"] and cfg["crop"]["margin"] == trained["crop"]["margin"]
    assert cfg["retrieval"]["k"] == 5  # what is not preprocessing follows the caller
    assert model.embedding_size == 16 and not model.training
