"""Reading photos and cropping faces: real photos, every format, bad files, the crop cache."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

import dataset
from conftest import FACES, needs_shared, SHARED
from dataset import (ImageReadError, crop_face, crop_key, crop_one, crop_paths, detect_faces, load_crop,
                     read_image, square_crop)
from utils import load_config

CROP = load_config()["crop"]


def test_face_found_and_cropped_to_size():
    image = read_image(FACES / "one_face.jpg")
    crop, status = crop_face(image, CROP)
    assert status == "face"
    assert crop.shape == (CROP["size"], CROP["size"], 3) and crop.dtype == np.uint8
    # The crop is centred on the detected box, not the photo's centre.
    (x, y, w, h), = detect_faces(image, CROP)
    expected = square_crop(image, (x, y, w, h), CROP["margin"], CROP["size"])
    assert np.array_equal(crop, expected)


def test_no_face_falls_back_to_centre_square_and_is_reported(tmp_path):
    crop, status = crop_face(read_image(FACES / "no_face.jpg"), CROP)
    assert status == "none"
    centre = square_crop(read_image(FACES / "no_face.jpg"), None, 0, CROP["size"])
    assert np.array_equal(crop, centre)
    _, report = crop_paths([FACES / "one_face.jpg", FACES / "no_face.jpg"], CROP, tmp_path)
    assert report.counts["none"] == 1 and report.counts["face"] == 1
    assert report.no_face == [str(FACES / "no_face.jpg")]
    assert "1 no face" in report.summary() and "no_face.jpg" in report.summary()


def test_several_faces_keeps_the_largest():
    image = read_image(FACES / "several_faces.jpg")
    boxes = detect_faces(image, CROP)
    assert len(boxes) >= 2
    areas = boxes[:, 2] * boxes[:, 3]
    assert areas[0] == areas.max()
    crop, status = crop_face(image, CROP)
    assert status == "several"
    assert np.array_equal(crop, square_crop(image, tuple(boxes[0]), CROP["margin"], CROP["size"]))
    assert not np.array_equal(crop, square_crop(image, tuple(boxes[1]), CROP["margin"], CROP["size"]))


def test_grayscale_gif_reads_as_rgb_and_finds_the_face():
    image = read_image(FACES / "grayscale.gif")
    assert image.shape == (243, 320, 3)
    assert np.array_equal(image[..., 0], image[..., 2])  # gray stays gray
    assert crop_face(image, CROP)[1] == "face"


def test_png_with_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :15, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (20, 30, 3)
    assert tuple(image[0, 0]) == (200, 0, 0) and tuple(image[0, 29]) == (255, 255, 255)


def test_exif_rotation_is_undone(tmp_path):
    upright = Image.open(FACES / "one_face.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": store the pixels turned the other way
    upright.rotate(90, expand=True).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "rotated.jpg")
    assert image.shape[:2] == (150, 150)
    assert crop_face(image, CROP)[1] == "face"
    raw = np.asarray(Image.open(tmp_path / "rotated.jpg").convert("RGB"))
    assert np.abs(image.astype(int) - np.asarray(upright.convert("RGB")).astype(int)).mean() < \
        np.abs(raw.astype(int) - np.asarray(upright.convert("RGB")).astype(int)).mean()


def test_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes((FACES / "one_face.jpg").read_bytes()[:300])
    with pytest.raises(ImageReadError, match="broken.jpg"):
        read_image(bad)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.png"):
        read_image(text)


def test_corrupt_file_skipped_or_stops_as_configured(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    paths = [FACES / "one_face.jpg", bad, FACES / "grayscale.gif"]
    with pytest.warns(UserWarning, match="broken.jpg"):
        crops, report = crop_paths(paths, dict(CROP, on_error="skip"), tmp_path / "cache")
    assert crops[1] is None and crops[0] is not None and crops[2] is not None
    assert report.failed == [str(bad)] and "1 unreadable" in report.summary()
    with pytest.raises(ImageReadError, match="broken.jpg"):
        crop_paths(paths, dict(CROP, on_error="stop"), tmp_path / "cache")


def test_cache_makes_second_run_skip_detection(tmp_path, monkeypatch):
    paths = [FACES / "one_face.jpg", FACES / "no_face.jpg", FACES / "grayscale.gif"]
    first, report1 = crop_paths(paths, CROP, tmp_path)
    assert report1.counts["cached"] == 0

    def no_detection(*args, **kwargs):
        raise AssertionError("detection ran although the crop is cached")

    monkeypatch.setattr(dataset, "detect_faces", no_detection)
    second, report2 = crop_paths(paths, CROP, tmp_path)
    assert report2.counts["cached"] == 3
    assert report2.counts["none"] == report1.counts["none"] == 1  # the status survives the cache
    for a, b in zip(first, second):
        assert np.array_equal(load_crop(a), load_crop(b))


def test_cache_key_follows_content_and_parameters(tmp_path):
    data = (FACES / "one_face.jpg").read_bytes()
    assert crop_key(data, CROP) == crop_key(data, dict(CROP))
    assert crop_key(data, CROP) != crop_key(data, dict(CROP, margin=0.5))
    assert crop_key(data, CROP) != crop_key(data + b"x", CROP)
    assert crop_key(data, CROP) == crop_key(data, dict(CROP, on_error="stop"))  # does not change the crop
    # Renaming a file keeps its cache entry: the key is the content, not the name.
    (tmp_path / "renamed.jpg").write_bytes(data)
    a, _, _ = crop_one(FACES / "one_face.jpg", CROP, tmp_path / "c")
    b, _, cached = crop_one(tmp_path / "renamed.jpg", CROP, tmp_path / "c")
    assert a == b and cached


def test_interrupted_run_keeps_finished_crops(tmp_path, monkeypatch):
    paths = [FACES / "one_face.jpg", FACES / "grayscale.gif", FACES / "no_face.jpg"]
    real = dataset.crop_face
    calls = []

    def crash_on_third(image, cfg):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(image, cfg)

    monkeypatch.setattr(dataset, "crop_face", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        crop_paths(paths, CROP, tmp_path)
    monkeypatch.setattr(dataset, "crop_face", real)
    assert len(list(tmp_path.glob("*.png"))) == 2
    assert not list(tmp_path.glob(".*.tmp"))
    _, report = crop_paths(paths, CROP, tmp_path)
    assert report.counts["cached"] == 2


def test_damaged_cache_entry_is_recomputed(tmp_path):
    item, status, _ = crop_one(FACES / "one_face.jpg", CROP, tmp_path)
    item.write_bytes(b"half a png")
    again, status2, cached = crop_one(FACES / "one_face.jpg", CROP, tmp_path)
    assert not cached and status2 == status == "face"
    assert load_crop(again).shape == (CROP["size"], CROP["size"], 3)


@needs_shared("yalefaces")
def test_every_yale_face_is_found():
    paths = sorted((SHARED / "yalefaces").rglob("*.gif"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = crop_paths(paths, CROP, None)
    assert len(paths) == 164 and report.counts["none"] == 0 and report.counts["failed"] == 0


def test_crop_command_reports_and_fills_the_cache(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("one_face.jpg", "no_face.jpg", "grayscale.gif"):
        (folder / name).write_bytes((FACES / name).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="broken.png"):
        assert dataset.main([str(folder), f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    out = capsys.readouterr().out
    assert "4 photos: 2 one face" in out and "1 no face" in out and "1 unreadable" in out
    assert len(list((tmp_path / "cache").glob("*.png"))) == 3
    assert dataset.main([str(tmp_path / "missing"), f"data.cache_dir={tmp_path / 'cache'}"]) == 2
    assert dataset.main([str(folder), "crop.on_error=stop", f"data.cache_dir={tmp_path / 'cache'}"]) == 2
    assert "broken.png" in capsys.readouterr().err
