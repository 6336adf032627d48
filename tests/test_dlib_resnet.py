"""dlib's face network in PyTorch (backbones/dlib_format.py reads it, backbones/dlib_resnet.py is the network): read from its .dat by the project's own parser, held
to dlib-bin's descriptors, batched, trainable, and loaded as the backbone dlib_resnet."""
from __future__ import annotations

import hashlib

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

import backbones
from backbones import dlib_format, dlib_resnet
from backbones import WeightsError, build_backbone
from conftest import FIXTURES, net
from utils import ConfigError, package_file

DAT = package_file(*dlib_resnet.DLIB_PACKAGE)
JOHNS = FIXTURES / "dlib_johns"


def chips() -> tuple[list[np.ndarray], list[str]]:
    """The fixture chips (dlib's own aligned 150-px faces), their mirrors and a darker copy of each:
    12 inputs, labelled by person."""
    images, owners = [], []
    for person in sorted(p for p in JOHNS.iterdir() if p.is_dir()):
        for path in sorted(person.glob("*.jpg")):
            chip = np.asarray(Image.open(path).convert("RGB"))
            for variant in (chip, np.ascontiguousarray(chip[:, ::-1]), (chip * 0.6).astype(np.uint8)):
                images.append(variant)
                owners.append(person.name)
    return images, owners


def as_input(images: list[np.ndarray]) -> torch.Tensor:
    """What the backbone's meta hands it: the raw 0..255 pixels, (B, 3, 150, 150) float."""
    meta = build_backbone("dlib_resnet", None).meta
    normalise = A.Normalize(mean=meta["mean"], std=meta["std"], max_pixel_value=meta["max_pixel_value"])
    return torch.stack([torch.from_numpy(normalise(image=c)["image"]).permute(2, 0, 1) for c in images])


@pytest.fixture(scope="module")
def pretrained() -> torch.nn.Module:
    return build_backbone("dlib_resnet", "pretrained").module.eval()


def test_the_pytorch_network_reproduces_dlib_bins_descriptors(pretrained):
    dlib = pytest.importorskip("dlib", reason="dlib-bin (the reference) is not installed")
    images, owners = chips()
    reference = np.asarray(dlib.face_recognition_model_v1(str(DAT)).compute_face_descriptor(images), dtype=np.float64)
    with torch.no_grad():
        ours = pretrained(as_input(images)).double().numpy()
    assert ours.shape == (12, 128)
    assert np.abs(ours - reference).max() <= 1e-5
    # and it tells the two Johns apart by dlib's own threshold
    d = np.linalg.norm(ours[:, None] - ours[None], axis=2)
    same = np.array(owners)[:, None] == np.array(owners)[None]
    assert d[same].max() < 0.6 < d[~same].min()


def test_batched_and_single_calls_agree_and_channels_last_changes_nothing(pretrained):
    x = as_input(chips()[0][:5])
    with torch.no_grad():
        batched = pretrained(x)
        single = torch.cat([pretrained(x[i:i + 1]) for i in range(5)])
        fast = pretrained.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    pretrained.to(memory_format=torch.contiguous_format)
    assert torch.allclose(batched, single, atol=1e-5) and torch.allclose(batched, fast, atol=1e-5)


def test_every_weight_of_the_file_trains():
    net = dlib_resnet.DlibResNet().load_dat(DAT)
    params = list(net.parameters())
    assert len(params) == 117 and sum(p.numel() for p in params) == 5_614_592
    out = net(as_input(chips()[0][:4]))
    torch.nn.functional.normalize(out, dim=1)[:, 0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_the_residual_add_zero_pads_the_smaller_input_at_the_end():
    a, b = torch.ones(1, 2, 3, 3), torch.full((1, 4, 4, 4), 2.0)
    out = dlib_resnet.add_padded(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert torch.all(out[:, :2, :3, :3] == 3) and torch.all(out[:, 2:] == 2) and torch.all(out[:, :, 3] == 2)


def test_the_parser_reads_the_whole_file_and_refuses_anything_else(tmp_path):
    net = dlib_format.read_dat(DAT)
    assert (net["margin"], net["threshold"]) == pytest.approx((0.04, 0.6))
    assert net["size"] == (150, 150) and net["mean"] == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert len(net["convs"]) == 29 and net["fc"].shape == (128, 256)
    strides = [c[2] for c in net["convs"]]
    assert strides.count((2, 2)) == 5  # the stem and four down-sampling blocks
    data = DAT.read_bytes()
    (tmp_path / "cut.dat").write_bytes(data[: len(data) // 2])
    with pytest.raises(dlib_format.DlibFormatError, match=r"cut\.dat: the file ends early"):
        dlib_format.read_dat(tmp_path / "cut.dat")
    (tmp_path / "long.dat").write_bytes(data + b"\x00")
    with pytest.raises(dlib_format.DlibFormatError, match="1 bytes left"):
        dlib_format.read_dat(tmp_path / "long.dat")
    shape = package_file("face_recognition_models", "models", "shape_predictor_5_face_landmarks.dat")
    with pytest.raises(dlib_format.DlibFormatError, match="shape_predictor_5"):
        dlib_format.read_dat(shape)


def test_the_backbone_by_name_and_its_weights(tmp_path, pretrained):
    bb = build_backbone("dlib_resnet", "pretrained")
    assert (bb.features, bb.pooled, bb.trainable, bb.fingerprint) == (128, True, True, "")
    assert bb.meta["crop"] == {"align": "dlib", "size": 150} and bb.meta["fixed_size"]
    assert str(DAT) in bb.source and len(bb.levels) == len(dlib_format.LEVELS) == 7
    x = as_input(chips()[0][:2])
    random_start = build_backbone("dlib_resnet", "none").module.eval()
    with torch.no_grad():
        assert not torch.allclose(random_start(x), pretrained(x), atol=1e-2)
    assert "random" in build_backbone("dlib_resnet", "none").source
    copy_of_dat = tmp_path / "mine.dat"
    copy_of_dat.write_bytes(DAT.read_bytes())
    with torch.no_grad():
        assert torch.equal(build_backbone("dlib_resnet", str(copy_of_dat)).module.eval()(x), pretrained(x))
    for weights, message in (("imagenet", "no ImageNet weights"), (str(tmp_path / "missing.dat"), "missing.dat")):
        with pytest.raises(WeightsError, match=message):
            build_backbone("dlib_resnet", weights)
    (tmp_path / "junk.dat").write_bytes(b"junk")
    with pytest.raises(WeightsError, match=r"junk\.dat"):
        build_backbone("dlib_resnet", str(tmp_path / "junk.dat"))


def test_model_freeze_keeps_the_first_levels_as_they_are():
    from network import EmbeddingNet
    from settings import load_config

    cfg = load_config(["config/best_dlib.yaml"], ["model.freeze=5"])
    model = net("dlib_resnet", 128, head="none", weights="pretrained", cfg=cfg)
    trainable = {n.split(".")[0] for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"level5", "fc"}
    model.train()
    assert not model.backbone.stem.training and model.backbone.fc.training
    with pytest.raises(ConfigError, match="model.freeze must be all or a whole number from 0 to 7"):
        net("dlib_resnet", 128, head="none", weights=None, cfg=load_config(["config/best_dlib.yaml"], ["model.freeze=8"]))


def test_a_checkpoint_from_when_the_descriptor_was_frozen_outside_the_state_dict_still_loads(tmp_path):
    from network import model_from_checkpoint, save_checkpoint
    from settings import load_config

    cfg = load_config(["config/best_dlib.yaml"])
    legacy = {"model": {}, "config": cfg, "meta": {"input": {"size": 150, "mean": [0.0] * 3, "std": [1.0] * 3,
                                                             "max_pixel_value": 1.0},
                                                   "crop": {k: cfg["crop"][k] for k in cfg["crop"]}},
              "model_info": {"arch": "dlib_resnet", "embedding_size": 128, "pooling": "gem", "head": "none",
                             "fingerprint": hashlib.sha256(DAT.read_bytes()).hexdigest()}}
    save_checkpoint(tmp_path / "old.pt", legacy)
    model, _ = model_from_checkpoint(tmp_path / "old.pt")
    x = as_input(chips()[0][:2])
    with torch.no_grad():
        assert torch.allclose(model(x), torch.nn.functional.normalize(
            build_backbone("dlib_resnet", "pretrained").module.eval()(x), dim=1), atol=1e-6)
    legacy["model_info"]["fingerprint"] = "0" * 64
    save_checkpoint(tmp_path / "other.pt", legacy)
    from network import CheckpointError

    with pytest.raises(CheckpointError, match="another dlib .dat"):
        model_from_checkpoint(tmp_path / "other.pt")
