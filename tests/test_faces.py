"""Reading photos, detecting, aligning and cropping faces: real photos, every format, bad files,
the fallback chain, the crop cache."""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import detection.cache
from cli import faces
from conftest import FACES, needs_shared, SHARED
from detection import (ARCFACE_TEMPLATE, CropSettings, Detections, FaceFinder, ImageReadError, crop_face, crop_key, crop_one, crop_paths,
                       dark_patches, describe_chain, detect, fill_dark_patches, load_crop, read_image, similarity_align,
                       similarity_matrix, square_crop)
from detection.cache import key_settings
from utils import ConfigError
from settings import load_config

CROP = CropSettings(**load_config()["crop"])  # the design's default: haar, no alignment, centre crop as fallback
MTCNN = replace(CROP, detector="mtcnn", align="similarity", fallback=["haar", "center"])

# Eye centres and mouth corners marked by hand (image order: the image's left first) on two
# CelebA photos where the Haar cascade finds no face (haar_misses) or another one (haar_wrong_face).
HAND_MARKED = {
    "haar_misses.jpg": [(132, 135), (170, 135), None, (132, 171), (169, 171)],
    "haar_wrong_face.jpg": [(93, 97.5), (118.5, 97.5), None, (96, 126.5), (121.5, 126)],
}


def test_face_found_and_cropped_to_size():
    image = read_image(FACES / "one_face.jpg")
    crop = crop_face(image, CROP)
    assert (crop.path, crop.faces, crop.aligned) == ("haar", 1, False)
    assert crop.image.shape == (CROP.size, CROP.size, 3) and crop.image.dtype == np.uint8
    # The crop is centred on the detected box, not the photo's centre.
    found = detect(image, CROP)
    assert len(found) == 1 and found.landmarks is None  # Haar gives boxes only
    expected = square_crop(image, found.boxes[0], CROP.margin, CROP.size)
    assert np.array_equal(crop.image, expected)


def test_no_face_falls_back_to_centre_square_and_is_reported(tmp_path):
    crop = crop_face(read_image(FACES / "no_face.jpg"), CROP)
    assert crop.path == "center" and crop.faces == 0
    centre = square_crop(read_image(FACES / "no_face.jpg"), None, 0, CROP.size)
    assert np.array_equal(crop.image, centre)
    _, report = crop_paths([FACES / "one_face.jpg", FACES / "no_face.jpg"], CROP, tmp_path)
    assert report.counts["center"] == 1 and report.counts["haar"] == 1
    assert report.by_path["center"] == [str(FACES / "no_face.jpg")]
    assert "1 centre crop" in report.summary() and "no_face.jpg" in report.summary()


def test_several_faces_keeps_the_largest():
    image = read_image(FACES / "several_faces.jpg")
    found = detect(image, CROP)
    assert len(found) >= 2
    areas = found.boxes[:, 2] * found.boxes[:, 3]
    assert areas[0] == areas.max()
    crop = crop_face(image, CROP)
    assert crop.faces == len(found) >= 2
    assert np.array_equal(crop.image, square_crop(image, found.boxes[0], CROP.margin, CROP.size))
    assert not np.array_equal(crop.image, square_crop(image, found.boxes[1], CROP.margin, CROP.size))


def test_grayscale_gif_reads_as_rgb_and_finds_the_face():
    image = read_image(FACES / "grayscale.gif")
    assert image.shape == (243, 320, 3)
    assert np.array_equal(image[..., 0], image[..., 2])  # gray stays gray
    assert crop_face(image, CROP).path == "haar"


@pytest.mark.parametrize("name", sorted(HAND_MARKED))
def test_mtcnn_landmarks_sit_on_hand_marked_points_where_haar_fails(name):
    image = read_image(FACES / name)
    haar = detect(image, CROP, "haar")
    found = detect(image, MTCNN, "mtcnn")
    assert len(found) == 1 and found.landmarks.shape == (1, 5, 2) and found.scores[0] > 0.99
    for point, marked in zip(found.landmarks[0], HAND_MARKED[name]):
        if marked is not None:
            assert np.hypot(*(point - marked)) < 5, (point, marked)
    x, y, w, h = found.boxes[0]
    inside = [(x <= px <= x + w and y <= py <= y + h) for px, py in found.landmarks[0]]
    assert all(inside)
    # Haar finds nothing here, or a box that misses the hand-marked eyes.
    eyes = np.array(HAND_MARKED[name][:2])
    assert not len(haar) or not all(hx <= ex <= hx + hw and hy <= ey <= hy + hh
                                    for (hx, hy, hw, hh) in haar.boxes[:1] for ex, ey in eyes)


def test_yunet_finds_the_face_haar_misses_with_landmarks():
    image = read_image(FACES / "haar_misses.jpg")
    found = detect(image, replace(CROP, detector="yunet"))
    assert len(found) == 1 and found.landmarks.shape == (1, 5, 2)
    for point, marked in zip(found.landmarks[0], HAND_MARKED["haar_misses.jpg"]):
        if marked is not None:
            assert np.hypot(*(point - marked)) < 8


def test_yunet_on_a_smaller_copy_finds_the_same_face_in_the_photos_coordinates():
    image = read_image(FACES / "haar_misses.jpg")  # 277 px wide: crop.yunet_side 128 halves it before YuNet looks
    full = detect(image, replace(CROP, detector="yunet"))
    small = detect(image, replace(CROP, detector="yunet", yunet_side=128))
    assert len(small) == 1
    assert np.abs(small.boxes[0] - full.boxes[0]).max() < 12  # the box scaled back, not left at half size
    for point, marked in zip(small.landmarks[0], HAND_MARKED["haar_misses.jpg"]):
        if marked is not None:
            assert np.hypot(*(point - marked)) < 10
    data = (FACES / "haar_misses.jpg").read_bytes()
    yunet = replace(CROP, detector="yunet")
    assert "yunet_side" not in key_settings(yunet)  # 960, what YuNet saw before the setting: old crops stay valid
    assert crop_key(data, replace(yunet, yunet_side=128)) != crop_key(data, yunet)
    assert crop_key(data, replace(MTCNN, yunet_side=128)) == crop_key(data, MTCNN)  # yunet is not on the chain


def test_similarity_alignment_puts_the_landmarks_on_the_template():
    image = read_image(FACES / "haar_wrong_face.jpg")
    marks = detect(image, MTCNN).landmarks[0]
    for size in (112, 150):
        matrix = similarity_matrix(marks, size)
        # A similarity: equal scale on both axes, no shear.
        a, b = matrix[0, :2], matrix[1, :2]
        assert abs(np.hypot(*a) - np.hypot(*b)) < 1e-3 and abs(a @ b) < 1e-3
        moved = np.c_[marks, np.ones(5)] @ matrix.T
        template = ARCFACE_TEMPLATE * size / 112
        eye_error = np.hypot(*(moved[:2] - template[:2]).T)
        assert (eye_error < 0.05 * size).all(), eye_error
    aligned = crop_face(image, MTCNN)
    assert (aligned.path, aligned.aligned) == ("mtcnn", True)
    assert np.array_equal(aligned.image, similarity_align(image, marks, MTCNN.size))
    # The aligned crop's own detection finds the eyes where the template has them.
    again = detect(aligned.image, MTCNN).landmarks[0]
    template = ARCFACE_TEMPLATE * MTCNN.size / 112
    assert (np.hypot(*(again[:2] - template[:2]).T) < 0.06 * MTCNN.size).all()


def test_alignment_without_landmarks_falls_back_to_the_square_crop_and_is_reported(tmp_path):
    cfg = replace(CROP, align="similarity")  # haar has no landmarks
    crop = crop_face(read_image(FACES / "one_face.jpg"), cfg)
    assert (crop.path, crop.aligned) == ("haar", False)
    _, report = crop_paths([FACES / "one_face.jpg"], cfg, tmp_path)
    assert report.unaligned == [str(FACES / "one_face.jpg")] and "1 not aligned" in report.summary()


def test_the_fallback_chain_is_walked_and_every_path_counted(tmp_path):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 100, 3), 128, np.uint8)).save(blank)
    paths = [FACES / "one_face.jpg", FACES / "haar_misses.jpg", blank]
    cfg = replace(CROP, detector="haar", fallback=["mtcnn", "center"])
    crops, report = crop_paths(paths, cfg, tmp_path / "cache")
    assert all(c is not None for c in crops)
    assert dict(report.counts) | {"cached": 0} == {"haar": 1, "mtcnn": 1, "center": 1, "several": 0, "cached": 0}
    assert report.by_path == {"haar": [str(paths[0])], "mtcnn": [str(paths[1])], "center": [str(blank)]}
    text = report.summary()
    assert "1 by haar, 1 by mtcnn (fallback)" in text and "1 centre crop" in text and "haar_misses.jpg" in text
    # Without 'center' at the end, a photo no detector finds a face in is left out, and named.
    crops, report = crop_paths(paths, replace(cfg, fallback=["mtcnn"]), tmp_path / "cache")
    assert crops[2] is None and crops[0] is not None and report.no_face == [str(blank)]
    assert "1 left out (no face)" in report.summary() and "blank.png" in report.summary()


def test_unknown_detector_or_alignment_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="retinaface"):
        crop_paths([FACES / "one_face.jpg"], replace(CROP, detector="retinaface"), tmp_path)
    with pytest.raises(ConfigError, match="crop.align"):
        crop_paths([FACES / "one_face.jpg"], replace(CROP, align="affine"), tmp_path)
    with pytest.raises(ConfigError, match="nope"):
        crop_paths([FACES / "one_face.jpg"], replace(CROP, fallback=["nope"]), tmp_path)


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
    assert crop_face(image, CROP).path == "haar"
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
        crops, report = crop_paths(paths, replace(CROP, on_error="skip"), tmp_path / "cache")
    assert crops[1] is None and crops[0] is not None and crops[2] is not None
    assert report.failed == [str(bad)] and "1 unreadable" in report.summary()
    with pytest.raises(ImageReadError, match="broken.jpg"):
        crop_paths(paths, replace(CROP, on_error="stop"), tmp_path / "cache")


def test_cache_makes_second_run_skip_detection(tmp_path, monkeypatch):
    paths = [FACES / "one_face.jpg", FACES / "no_face.jpg", FACES / "grayscale.gif"]
    first, report1 = crop_paths(paths, CROP, tmp_path)
    assert report1.counts["cached"] == 0

    def no_detection(*args, **kwargs):
        raise AssertionError("detection ran although the crop is cached")

    monkeypatch.setitem(detection.DETECTORS, "haar", no_detection)
    second, report2 = crop_paths(paths, CROP, tmp_path)
    assert report2.counts["cached"] == 3
    assert report2.counts["center"] == report1.counts["center"] == 1  # the path survives the cache
    for a, b in zip(first, second):
        assert np.array_equal(load_crop(a), load_crop(b))


def test_cache_key_follows_content_and_parameters(tmp_path):
    data = (FACES / "one_face.jpg").read_bytes()
    assert crop_key(data, CROP) == crop_key(data, replace(CROP))
    assert crop_key(data, CROP) != crop_key(data, replace(CROP, margin=0.5))
    assert crop_key(data, CROP) != crop_key(data + b"x", CROP)
    assert crop_key(data, CROP) == crop_key(data, replace(CROP, on_error="stop"))  # does not change the crop
    for key, value in (("detector", "mtcnn"), ("align", "similarity"), ("fallback", []), ("min_confidence", 0.5)):
        assert crop_key(data, CROP) != crop_key(data, replace(CROP, **{key: value})), key
    # Renaming a file keeps its cache entry: the key is the content, not the name.
    (tmp_path / "renamed.jpg").write_bytes(data)
    a, _, _ = crop_one(FACES / "one_face.jpg", CROP, tmp_path / "c")
    b, _, cached = crop_one(tmp_path / "renamed.jpg", CROP, tmp_path / "c")
    assert np.array_equal(a, b) and cached and len(list((tmp_path / "c").glob("*.png"))) == 1


def test_interrupted_run_keeps_finished_crops(tmp_path, monkeypatch):
    paths = [FACES / "one_face.jpg", FACES / "grayscale.gif", FACES / "no_face.jpg"]
    real = FaceFinder.crop_face
    calls = []

    def crash_on_third(self, image, cfg):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, image, cfg)

    monkeypatch.setattr(FaceFinder, "crop_face", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        crop_paths(paths, CROP, tmp_path)
    monkeypatch.setattr(FaceFinder, "crop_face", real)
    assert len(list(tmp_path.glob("*.png"))) == 2
    assert not list(tmp_path.glob(".*.tmp"))
    _, report = crop_paths(paths, CROP, tmp_path)
    assert report.counts["cached"] == 2


def test_damaged_cache_entry_is_recomputed(tmp_path):
    item, meta, _ = crop_one(FACES / "one_face.jpg", CROP, tmp_path)
    [entry] = tmp_path.glob("*.png")
    entry.write_bytes(b"half a png")
    again, meta2, cached = crop_one(FACES / "one_face.jpg", CROP, tmp_path)
    assert not cached and meta2 == meta and meta["path"] == "haar"
    assert load_crop(again).shape == (CROP.size, CROP.size, 3)


@pytest.mark.slow
@needs_shared("yalefaces")
def test_every_yale_face_is_found():
    paths = sorted((SHARED / "yalefaces").rglob("*.gif"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = crop_paths(paths, CROP, None)
    assert len(paths) == 164 and report.counts["center"] == 0 and not report.failed


def test_crop_command_reports_and_fills_the_cache(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("one_face.jpg", "no_face.jpg", "grayscale.gif"):
        (folder / name).write_bytes((FACES / name).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="broken.png"):
        assert faces.main([str(folder), f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    out = capsys.readouterr().out
    assert "4 photos: 2 by haar" in out and "1 centre crop" in out and "1 unreadable" in out
    assert len(list((tmp_path / "cache").glob("*.png"))) == 3
    assert faces.main([str(tmp_path / "missing"), f"data.cache_dir={tmp_path / 'cache'}"]) == 2
    assert faces.main([str(folder), "crop.on_error=stop", f"data.cache_dir={tmp_path / 'cache'}"]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_cropping_in_worker_processes_gives_the_same_crops_in_order(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    paths = [FACES / "one_face.jpg", bad, FACES / "haar_misses.jpg", FACES / "grayscale.gif"]
    with pytest.warns(UserWarning, match="broken.jpg"):
        serial, r1 = crop_paths(paths, MTCNN, tmp_path / "a")
    with pytest.warns(UserWarning, match="broken.jpg"):
        parallel, r2 = crop_paths(paths, MTCNN, tmp_path / "b", workers=2)
    assert serial[1] is None and parallel[1] is None and r1.failed == r2.failed == [str(bad)]
    for a, b in zip(serial[:1] + serial[2:], parallel[:1] + parallel[2:]):
        assert np.array_equal(load_crop(a), load_crop(b))
    assert r1.by_path == r2.by_path


# ---------------------------------------------------------------- when no detector finds the face

def test_guess_aligns_a_face_no_detector_found_with_dlibs_landmarks_and_says_so(tmp_path):
    one = read_image(FACES / "one_face.jpg")
    blind = replace(CROP, detector="haar", min_neighbors=10_000, fallback=["guess", "center"], align="dlib", size=150)
    crop = crop_face(one, blind)  # a Haar cascade made blind: no detector finds the face
    assert (crop.path, crop.aligned, crop.faces) == ("guess", True, 0)
    chip = crop_face(one, replace(blind, detector="mtcnn")).image  # the same photo, detected: mtcnn + dlib's chip
    assert chip.shape == crop.image.shape == (150, 150, 3)
    # dlib's landmarks placed in the guessed box land on the same face: the two chips nearly agree,
    # where the unaligned centre square does not
    centre = crop_face(one, replace(blind, fallback=["center"])).image
    assert np.abs(crop.image.astype(int) - chip.astype(int)).mean() < 0.5 * np.abs(centre.astype(int) - chip.astype(int)).mean()
    similar = crop_face(one, replace(blind, align="similarity", size=112))
    assert similar.path == "guess" and similar.aligned and similar.image.shape == (112, 112, 3)
    _, report = crop_paths([FACES / "one_face.jpg"], blind, tmp_path)
    assert report.by_path == {"guess": [str(FACES / "one_face.jpg")]} and "1 by guess (fallback)" in report.summary()
    assert not report.unaligned


def test_new_crop_settings_leave_old_cache_keys_alone_unless_they_change_the_crop():
    data = (FACES / "one_face.jpg").read_bytes()
    newer = {"yunet_confidence", "mtcnn_thresholds", "guess_side", "subject", "yunet_low_confidence"}
    assert not newer & set(key_settings(MTCNN))  # at their defaults they stay out of the key: old crops still valid
    assert crop_key(data, replace(MTCNN, mtcnn_thresholds=[0.5, 0.6, 0.6])) != crop_key(data, MTCNN)
    assert crop_key(data, replace(MTCNN, guess_side=0.5)) == crop_key(data, MTCNN)  # guess is not on the chain
    with_guess = replace(MTCNN, fallback=["guess"])
    assert crop_key(data, replace(with_guess, guess_side=0.5)) != crop_key(data, with_guess)
    yunet = replace(CROP, detector="yunet")
    assert crop_key(data, replace(yunet, yunet_confidence=0.5)) != crop_key(data, yunet)


def test_each_detector_takes_its_own_threshold():
    image = read_image(FACES / "haar_misses.jpg")
    assert len(detect(image, replace(CROP, yunet_confidence=0.3, min_confidence=0.99), "yunet")) >= 1
    assert len(detect(image, replace(CROP, yunet_confidence=0.999, min_confidence=0.0), "yunet")) == 0
    loose = detect(image, replace(CROP, mtcnn_thresholds=[0.3, 0.4, 0.4], min_confidence=0.0), "mtcnn")
    strict = detect(image, replace(CROP, mtcnn_thresholds=[0.9, 0.99, 0.999], min_confidence=0.0), "mtcnn")
    assert len(loose) >= len(strict)


def test_the_central_face_beats_a_larger_one_at_the_edge_only_when_asked():
    found = Detections(np.array([[0, 0, 60, 90], [70, 60, 50, 60]], np.float32), np.array([0.9, 0.9], np.float32),
                       np.zeros((2, 5, 2), np.float32))
    assert found.largest_first().boxes[0].tolist() == [0, 0, 60, 90]  # the larger box, at the photo's corner
    central = found.central_first(200, 200)
    assert central.boxes[0].tolist() == [70, 60, 50, 60]  # centred on (95, 90): the portrait's subject
    assert central.landmarks is not None and len(central) == 2
    alone = Detections(np.array([[0, 0, 60, 90]], np.float32), np.array([0.9], np.float32))
    assert alone.central_first(200, 200).boxes[0].tolist() == [0, 0, 60, 90]  # one face is always the subject


def test_the_subject_rule_picks_the_face_that_is_cropped():
    image = read_image(FACES / "several_faces.jpg")
    cfg = replace(CROP, detector="yunet", fallback=[], align="none", size=64)
    faces = detect(image, cfg, "yunet")
    assert len(faces) >= 2
    h, w = image.shape[:2]
    largest, central = faces.largest_first().boxes[0], faces.central_first(h, w).boxes[0]
    for rule, box in (("largest", largest), ("central", central)):
        crop = crop_face(image, replace(cfg, subject=rule))
        assert np.array_equal(crop.image, square_crop(image, box, cfg.margin, 64))


def test_yunets_weak_faces_count_only_where_no_face_is_sure():
    image = read_image(FACES / "haar_misses.jpg")
    sure = replace(CROP, yunet_confidence=0.999, min_confidence=0.0)
    assert len(detect(image, sure, "yunet")) == 0
    assert len(detect(image, replace(sure, yunet_low_confidence=0.3), "yunet")) >= 1  # the second look finds it
    many = read_image(FACES / "several_faces.jpg")
    everything = detect(many, replace(CROP, yunet_confidence=0.05), "yunet")
    best = float(everything.scores.max())
    picky = detect(many, replace(CROP, yunet_confidence=best - 1e-3, yunet_low_confidence=0.05), "yunet")
    assert len(everything) > len(picky) >= 1 and picky.scores.min() >= best - 1e-3  # a sure face: no weak ones


def test_the_new_face_rules_change_the_cache_key_only_when_they_change_the_crop():
    data = (FACES / "one_face.jpg").read_bytes()
    yunet = replace(CROP, detector="yunet", yunet_confidence=0.6)
    assert "subject" not in key_settings(replace(yunet, subject="largest"))  # the rule before it existed: old keys stay
    assert crop_key(data, replace(yunet, subject="central")) != crop_key(data, replace(yunet, subject="largest"))
    assert crop_key(data, replace(yunet, yunet_low_confidence=0.6)) == crop_key(data, replace(yunet, yunet_low_confidence=0.9))
    assert crop_key(data, replace(yunet, yunet_low_confidence=0.3)) != crop_key(data, replace(yunet, yunet_low_confidence=0.6))
    assert crop_key(data, replace(MTCNN, yunet_low_confidence=0.3)) == crop_key(data, MTCNN)  # yunet is not on the chain


def test_the_chain_is_described_as_it_runs():
    best = replace(CROP, detector="yunet", fallback=["mtcnn", "guess"], yunet_confidence=0.6, yunet_low_confidence=0.3,
                subject="central")
    assert describe_chain(best) == "yunet 0.6, else 0.3 → mtcnn → guess, central face"
    assert describe_chain(replace(best, yunet_low_confidence=1.0, subject="largest")) == "yunet 0.6 → mtcnn → guess, largest face"
    assert describe_chain(CROP) == "haar → center, largest face"


def test_a_photo_is_read_from_disk_once_when_cropped(tmp_path, monkeypatch):
    photo = tmp_path / "one.jpg"
    photo.write_bytes((FACES / "one_face.jpg").read_bytes())
    assert np.array_equal(read_image(photo, photo.read_bytes()), read_image(photo))
    bad = read_image(photo, (FACES / "several_faces.jpg").read_bytes())  # the bytes given are what is decoded
    assert bad.shape == read_image(FACES / "several_faces.jpg").shape
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(fp) or real_open(fp, *a, **k))
    crop_one(photo, replace(CROP, detector="mtcnn"), tmp_path / "cache")
    assert not any(isinstance(fp, (str, Path)) and Path(fp) == photo for fp in opened)  # decoded from the bytes read
    with pytest.raises(ImageReadError, match="one.jpg"):
        read_image(photo, b"not an image")


def _covered(image: np.ndarray, side: float = 0.3, at: tuple[float, float] = (0.5, 0.4)) -> np.ndarray:
    """The photo with a black square (side a share of its shorter side) centred at `at` (shares of width, height)."""
    out = image.copy()
    h, w = image.shape[:2]
    s = int(side * min(h, w))
    x, y = int(at[0] * w - s / 2), int(at[1] * h - s / 2)
    out[y:y + s, x:x + s] = 0
    return out


def test_black_patches_are_found_and_filled_but_not_a_thin_dark_band():
    clean = read_image(FACES / "one_face.jpg")
    covered = _covered(clean)
    mask = dark_patches(covered)
    side = int(0.3 * min(clean.shape[:2]))
    assert abs(int(mask.sum()) - side * side) <= 0.05 * side * side  # the square, nothing else
    filled = fill_dark_patches(covered)
    assert filled.shape == covered.shape and (filled[mask > 0].max(axis=1) > 12).mean() > 0.9  # no longer black
    band = clean.copy()
    for i in range(min(clean.shape[:2])):
        band[i, max(0, i - 6):i + 6] = 0  # a dark diagonal: large, but not a flat patch
    assert not dark_patches(band).any()
    assert fill_dark_patches(clean) is clean or not dark_patches(clean).any()


def test_landmarks_are_placed_on_the_filled_photo_and_the_chip_cut_from_the_photo():
    clean = read_image(FACES / "one_face.jpg")
    cfg = replace(CROP, detector="mtcnn", fallback=["guess"], align="dlib", size=150)
    covered = _covered(clean, 0.3, (0.4, 0.4))  # over an eye
    plain, filled = crop_face(covered, cfg), crop_face(covered, replace(cfg, fill_dark_patches=True))
    assert (filled.image.max(axis=2) <= 12).mean() > 0.05  # the square is still in the chip: cut from the photo as it is
    reference = crop_face(clean, cfg).image.astype(float)
    outside = (filled.image.max(axis=2) > 12) & (plain.image.max(axis=2) > 12)  # the pixels neither chip lost
    assert outside.mean() > 0.5
    # placed on the filled copy, the landmarks land where the clean photo's do: the chip matches it better
    assert np.abs(filled.image.astype(float) - reference)[outside].mean() < np.abs(plain.image.astype(float) - reference)[outside].mean()


def test_filling_dark_patches_is_in_the_cache_key_only_when_on():
    data = (FACES / "one_face.jpg").read_bytes()
    assert "fill_dark_patches" not in key_settings(replace(CROP, fill_dark_patches=False))  # older keys stay valid
    assert crop_key(data, replace(CROP, fill_dark_patches=True)) != crop_key(data, CROP)


def test_a_checkpoint_written_before_the_new_face_rules_crops_as_it_did():
    now = replace(CROP, detector="yunet", yunet_confidence=0.6, yunet_low_confidence=0.3, subject="central",
                  fill_dark_patches=True).to_dict()
    old = CropSettings.from_saved({k: v for k, v in now.items()
                                   if k not in ("yunet_low_confidence", "subject", "fill_dark_patches")})
    assert (old.subject, old.fill_dark_patches, old.yunet_low_confidence) == ("largest", False, 0.6)
    assert CropSettings.from_saved(now).to_dict() == now  # a checkpoint that has them keeps them


def counted_finder(monkeypatch, calls: list) -> FaceFinder:
    """A FaceFinder whose detector runs are listed in `calls` (the step of each)."""
    real = FaceFinder.detect
    monkeypatch.setattr(FaceFinder, "detect", lambda self, seen, settings, step: calls.append(step) or
                        real(self, seen, settings, step))
    return FaceFinder()


def test_a_face_found_in_the_same_pixels_by_the_same_chain_is_not_looked_for_again(monkeypatch):
    image = read_image(FACES / "one_face.jpg")
    calls = []
    finder = counted_finder(monkeypatch, calls)
    dlib_chip = CropSettings(detector="yunet", fallback=["center"], align="dlib", size=150, fill_dark_patches=True)
    square = replace(dlib_chip, align="none", margin=0.1, size=224)  # a fusion's second member: same chain, own cut
    chip = finder.crop_face(image, dlib_chip)
    loose = finder.crop_face(image, square)
    assert len(calls) == 1 and chip.image.shape == (150, 150, 3) and loose.image.shape == (224, 224, 3)
    afresh = FaceFinder()  # another finder remembers nothing of this one's
    assert np.array_equal(afresh.crop_face(image, square).image, loose.image)  # the same crop as when looked for afresh
    assert len(calls) == 2
    finder.crop_face(image, replace(square, yunet_confidence=0.9))  # another chain looks again
    other = image.copy()
    other[:20] = 0
    finder.crop_face(other, square)  # so do other pixels
    assert len(calls) == 4


def test_chains_that_differ_in_their_fallbacks_share_their_detectors_run(monkeypatch):
    image = read_image(FACES / "one_face.jpg")
    steps = []
    finder = counted_finder(monkeypatch, steps)
    chip = CropSettings(detector="yunet", fallback=["haar", "guess"], align="dlib", size=150)
    square = replace(chip, fallback=["haar", "center"], align="none", margin=0.1, size=224)  # config/best.yaml's pair
    first, second = finder.crop_face(image, chip), finder.crop_face(image, square)
    assert steps == ["yunet"] and first.path == second.path == "yunet"
    finder = FaceFinder()
    crop_face = finder.crop_face
    assert np.array_equal(crop_face(image, square).image, second.image) and steps == ["yunet", "yunet"]
    crop_face(image, replace(square, yunet_confidence=0.95, fallback=["center"]))  # another threshold: looked again
    assert steps[2] == "yunet" and len(steps) >= 3
