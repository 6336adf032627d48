"""Covers drawn on faces (occlusion/covers.py) and evaluation on covered queries: each kind lands on the
face, seeded, from two distributions that do not meet; queries covered on the photo before their face is
looked for, every kind scored and averaged by `facematch evaluate --covers`."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FACES, PEOPLE
from detection import read_image
from occlusion.covers import COVERS, EVALUATION, KINDS, TRAINING, Face, cover, face_of
from utils import ConfigError

IMAGE = read_image(FACES / "one_face.jpg")
FACE = face_of(IMAGE)


def grown(box: np.ndarray, by: float) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return int(x - by * w), int(y - by * h), int(x + (1 + by) * w), int(y + (1 + by) * h)


@pytest.mark.parametrize("kind", list(COVERS))
def test_each_cover_lands_on_the_face_and_is_seeded(kind):
    out = cover(IMAGE, kind, FACE, np.random.default_rng(3))
    changed = np.abs(out.astype(int) - IMAGE.astype(int)).max(axis=2) > 20
    x0, y0, x1, y1 = grown(FACE.box, 0.6)
    inside = changed[max(0, y0):y1, max(0, x0):x1].sum()
    face_area = FACE.box[2] * FACE.box[3]
    assert changed.sum() > 0.04 * face_area, f"{kind} covers almost nothing"
    assert inside > 0.75 * changed.sum(), f"{kind} is drawn away from the face"
    assert np.array_equal(out, cover(IMAGE, kind, FACE, np.random.default_rng(3)))  # the same seed, the same cover
    assert not np.array_equal(out, cover(IMAGE, kind, FACE, np.random.default_rng(4)))
    assert np.array_equal(IMAGE, read_image(FACES / "one_face.jpg"))  # the photo itself is untouched


def test_the_masks_cover_the_mouth_and_the_glasses_the_eyes():
    def changed_at(out: np.ndarray, point: np.ndarray) -> bool:
        x, y = np.round(point).astype(int)
        return bool(np.abs(out[y - 2:y + 3, x - 2:x + 3].astype(int) - IMAGE[y - 2:y + 3, x - 2:x + 3]).max() > 30)

    mouth = FACE.landmarks[3:].mean(0)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        assert changed_at(cover(IMAGE, "mask", FACE, rng), mouth)
        glasses = cover(IMAGE, "glasses", FACE, np.random.default_rng(seed))
        assert changed_at(glasses, FACE.landmarks[0]) and changed_at(glasses, FACE.landmarks[1])
        assert not changed_at(glasses, mouth)


def test_training_and_evaluation_draw_from_distributions_that_do_not_meet():
    for f in fields(EVALUATION):
        ev, tr = getattr(EVALUATION, f.name), getattr(TRAINING, f.name)
        if f.name.endswith("colours"):
            assert not set(ev) & set(tr), f"{f.name}: a colour in both"
        elif isinstance(ev, tuple):  # a range: the two ranges overlap at most at an end
            assert ev[0] >= tr[1] or tr[0] >= ev[1] or ev == tr == (0, 0), f"{f.name}: {ev} and {tr} overlap"
    # and the same seed draws another cover from each
    assert not np.array_equal(cover(IMAGE, "mask", FACE, np.random.default_rng(1), EVALUATION),
                              cover(IMAGE, "mask", FACE, np.random.default_rng(1), TRAINING))


def test_mixed_draws_one_kind_per_photo_and_unknown_kinds_are_refused():
    seen = set()
    for seed in range(30):
        rng = np.random.default_rng(seed)
        kind = list(COVERS)[int(rng.integers(len(COVERS)))]
        assert np.array_equal(cover(IMAGE, "mixed", FACE, np.random.default_rng(seed)), cover(IMAGE, kind, FACE, rng))
        seen.add(kind)
    assert len(seen) >= 6 and "mixed" in KINDS
    with pytest.raises(ConfigError, match="cover kind 'veil'"):
        cover(IMAGE, "veil", FACE, np.random.default_rng(0))


def test_the_face_is_found_or_guessed():
    x, y, w, h = FACE.box
    assert ((FACE.landmarks >= [x, y]) & (FACE.landmarks <= [x + w, y + h])).all()
    assert FACE.landmarks[0, 0] < FACE.landmarks[1, 0] and FACE.landmarks[2, 1] < FACE.landmarks[3, 1]
    blank = np.full((120, 160, 3), 128, np.uint8)
    guessed = face_of(blank)
    assert isinstance(guessed, Face) and abs(guessed.landmarks[:2].mean(0)[0] - 80) < 2  # centred
    assert len(np.unique(cover(blank, "mask", guessed, np.random.default_rng(0)).reshape(-1, 3), axis=0)) > 1


def test_covered_queries_are_covered_on_the_photo_seeded_and_never_cached(tiny_cfg, tmp_path):
    from pipeline.embedding import embed_folder
    from settings import build_model, embed_settings, load_config

    folder = PEOPLE / sorted(p.name for p in PEOPLE.iterdir())[0]
    cfg = load_config(overrides=["crop.detector=yunet", "crop.fallback=[center]"], base=tiny_cfg)
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    model.eval()
    clean = embed_folder(folder, model, "cpu", **embed_settings(cfg))
    masked = embed_folder(folder, model, "cpu", degradation="mask", **embed_settings(cfg))
    again = embed_folder(folder, model, "cpu", degradation="mask", **embed_settings(cfg))
    assert masked.names == clean.names and np.array_equal(masked.embeddings, again.embeddings)
    assert not np.allclose(masked.embeddings, clean.embeddings, atol=1e-3)
    assert masked.from_cache == 0 and again.from_cache == 0  # a covered photo is never the photo's cached embedding
    hands = embed_folder(folder, model, "cpu", degradation="hand", **embed_settings(cfg))
    assert not np.allclose(hands.embeddings, masked.embeddings, atol=1e-3)


@pytest.mark.slow
def test_evaluate_covers_scores_every_kind_and_their_mean(tiny_cfg, tmp_path, capsys):
    from cli import evaluate, split
    from network import save_checkpoint
    from settings import build_model, load_config

    comp = tmp_path / "comp"
    assert split.main(["--people", str(PEOPLE), "--out", str(comp), "split.test_fraction=0.6"]) == 0
    cfg = load_config(overrides=["crop.detector=yunet", "crop.fallback=[center]"], base=tiny_cfg)
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    ckpt = tmp_path / "a.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg, "meta": model.meta,
                           "model_info": model.describe(), "epoch": 0})
    out = tmp_path / "covers.json"
    assert evaluate.main(["--checkpoint", str(ckpt), "--competition", str(comp), "--covers", "--json", str(out),
                          f"evaluate.figure={tmp_path / 'grid.png'}"]) == 0
    table = capsys.readouterr().out
    assert all(f"| {kind} |" in table for kind in ("clean", *COVERS, "covers_mean"))
    import json

    reports = json.loads(out.read_text())
    mean = np.mean([reports[kind]["top1"] for kind in COVERS])
    assert reports["covers_mean"]["top1"] == pytest.approx(mean)
    assert (tmp_path / "grid_mask.png").exists() and (tmp_path / "grid_cap.png").exists()
    assert Path(tmp_path / "grid_none.png").exists()  # the clean run's figure


def test_training_covers_crops_from_its_own_distribution_seeded_per_draw():
    import random

    from dataset import AugmentSettings, Cover, train_transform

    crop = read_image(FACES / "one_face.jpg")[:150, :150].copy()
    transform = Cover(["mask", "glasses"], p=1.0)
    outs = []
    for seed in (1, 1, 2):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        outs.append(transform(image=crop)["image"])
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])  # a draw's seed decides
    assert not np.array_equal(outs[0], crop)
    off = train_transform(AugmentSettings(hflip_p=0, color_p=0, gamma_p=0, affine_p=0, blur_p=0, dropout_p=0),
                          {"size": 32, "mean": [0.0] * 3, "std": [1.0] * 3, "max_pixel_value": 255.0})
    assert any(isinstance(t, Cover) and t.p == 0.0 for t in off.transforms)  # augment.cover_p 0: no cover by default


def test_a_run_trains_with_covers_on_its_crops(tiny_cfg):
    import train
    from settings import load_config

    state = train.train(load_config(overrides=["augment.cover_p=1", "augment.cover_kinds=[mask,hand]",
                                               "train.epochs=1"], base=tiny_cfg))
    assert state["epoch"] == 1 and np.isfinite(state["history"][-1]["train_loss"])


def test_a_covered_validation_crop_is_drawn_from_training_covers_and_seeded():
    from dataset import covered_crop

    crop = np.full((112, 112, 3), 128, np.uint8)
    a, b, c = covered_crop(crop, 3, ["mask"]), covered_crop(crop, 3, ["mask"]), covered_crop(crop, 4, ["mask"])
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, crop)
    assert (a[80:100, 40:70] != 128).any()  # a mask covers the mouth's place in a chip
