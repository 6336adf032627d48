"""Identity folders, identity-disjoint splits, the competition builder, the P×K sampler and transforms."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from cli import split
from competition.builder import make_split
from conftest import FACES, PEOPLE, TINY_INPUT
from dataset import AugmentSettings, FaceDataset, PKSampler, eval_transform, identity_split, list_identities, train_transform
from detection import read_image
from utils import DataError
from settings import load_config


def test_list_identities_skips_empty_folders_and_errors_when_nothing_is_left(tmp_path):
    people = list_identities(PEOPLE)
    assert len(people) == 5 and all(len(p) == 4 for p in people.values())
    (tmp_path / "empty_person").mkdir()
    with pytest.raises(DataError, match=str(tmp_path)):
        list_identities(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        list_identities(tmp_path / "missing")


def test_identity_split_is_disjoint_complete_and_repeatable():
    names = [f"p{i}" for i in range(50)]
    kept, held = identity_split(names, 0.2, seed=3)
    assert not set(kept) & set(held)
    assert sorted(kept + held) == sorted(names)
    assert len(held) == 10
    assert identity_split(names, 0.2, seed=3) == (kept, held)
    assert identity_split(names, 0.2, seed=4) != (kept, held)
    assert identity_split(names[:2], 0.01, seed=0)[1]  # at least one held out when asked for any
    assert identity_split(names, 0.0, seed=0) == (sorted(names), [])


def test_sampler_batches_hold_p_identities_times_k_photos():
    labels = [0] * 5 + [1] * 2 + [2] * 4 + [3] * 3 + [4] * 1
    sampler = PKSampler(labels, P=3, K=4, batches_per_epoch=6, seed=0)
    seen = set()
    for batch in sampler:
        positions = [p for p, _ in batch]
        batch_labels = [labels[p] for p in positions]
        assert len(batch) == 12
        assert len(set(batch_labels)) == 3
        assert all(batch_labels.count(lab) == 4 for lab in set(batch_labels))
        if labels.count(batch_labels[0]) >= 4:  # enough photos: drawn without repeats
            first = [p for p in positions if labels[p] == batch_labels[0]]
            assert len(set(first)) == 4
        seen |= set(batch_labels)
    assert seen == {0, 1, 2, 3, 4}  # the shuffled cycle visits everyone
    assert len(sampler) == 6


def test_sampler_is_repeatable_per_epoch_and_differs_across_epochs():
    labels = [i // 4 for i in range(40)]
    a, b = PKSampler(labels, 4, 2, seed=1), PKSampler(labels, 4, 2, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    assert len(a) == 5  # default: about one pass over the photos
    with pytest.raises(DataError):
        PKSampler([0, 0, 0], 2, 2)


def test_train_augmentation_is_seeded_per_draw_and_eval_is_deterministic(tiny_cfg):
    image = read_image(FACES / "one_face.jpg")
    ds = FaceDataset([image], [0], train_transform(AugmentSettings(**tiny_cfg["augment"]), TINY_INPUT))
    a, _ = ds[(0, 123)]
    b, _ = ds[(0, 123)]
    c, _ = ds[(0, 456)]
    assert torch.equal(a, b) and not torch.equal(a, c)
    ev = eval_transform(TINY_INPUT)
    x, y = ev(image=image)["image"], ev(image=image)["image"]
    assert torch.equal(x, y) and x.shape == (3, 32, 32)
    # Training ends with exactly the evaluation steps: no augmentation = same tensor.
    off = load_config(overrides=[f"{k}=0" for k in ("augment.hflip_p", "augment.color_p", "augment.gamma_p",
                                                     "augment.affine_p", "augment.blur_p", "augment.dropout_p")],
                      base=tiny_cfg)
    assert torch.equal(FaceDataset([image], [0], train_transform(AugmentSettings(**off["augment"]), TINY_INPUT))[(0, 1)][0], x)


def test_augmentation_steps_fire_independently(tiny_cfg):
    # One seed per draw must not make every step fire together (albumentations' set_random_seed would).
    cfg = load_config(overrides=["augment.hflip_p=0.5", "augment.dropout_p=0.5", "augment.color_p=0",
                                 "augment.gamma_p=0", "augment.affine_p=0", "augment.blur_p=0",
                                 "augment.dropout_holes=[1,1]", "augment.dropout_size=[0.3,0.3]"], base=tiny_cfg)
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, :16] = 255  # left half white: a flip moves it right; dropout blacks out a hole
    ds = FaceDataset([image], [0], train_transform(AugmentSettings(**cfg["augment"]), TINY_INPUT))
    ev = eval_transform(TINY_INPUT)(image=image)["image"]
    flipped = eval_transform(TINY_INPUT)(image=image[:, ::-1].copy())["image"]
    outcomes = set()
    for seed in range(40):
        out = ds[(0, seed)][0]
        is_flip = bool((out[:, :, 20:] > 0).float().mean() > 0.5)
        has_hole = not (torch.equal(out, flipped) or torch.equal(out, ev))
        outcomes.add((is_flip, has_hole))
    assert outcomes == {(False, False), (False, True), (True, False), (True, True)}


def test_split_builds_an_identity_disjoint_competition(tmp_path):
    people = tmp_path / "people"
    for person in ("a", "b", "c", "d", "e", "f"):
        (people / person).mkdir(parents=True)
        for i in range(3):
            (people / person / f"{person}{i}.jpg").write_bytes(f"{person}{i}".encode())
    (people / "single").mkdir()
    (people / "single" / "s.jpg").write_bytes(b"s")
    distractors = tmp_path / "distractors"
    distractors.mkdir()
    for i in range(4):
        (distractors / f"d{i}.png").write_bytes(f"d{i}".encode())

    assert split.main(["--people", str(people), "--distractors", str(distractors), "--out", str(tmp_path / "c"),
                       "split.test_fraction=0.5", "split.queries_per_person=1", "seed=7"]) == 0
    out = tmp_path / "c"
    train_people = {p.name for p in (out / "train").iterdir()}
    key = json.loads((out / "key.json").read_text())
    test_people = {key[q].split("/")[-2] for q in (p.name for p in (out / "test" / "query").iterdir())}
    assert len(train_people) == 3 and len(test_people) == 3 and not train_people & test_people
    assert "single" not in train_people

    truth = json.loads((out / "ground_truth.json").read_text())
    queries = sorted(p.name for p in (out / "test" / "query").iterdir())
    gallery = sorted(p.name for p in (out / "test" / "gallery").iterdir())
    assert all(re.fullmatch(r"[0-9a-f]{40}\.(jpg|png)", n) for n in queries + gallery)
    assert sorted(truth["queries"]) == queries and truth["gallery"] == gallery
    assert len(gallery) == 3 * 2 + 1 + 4  # other photos of test people, the single, the distractors
    for q, good in truth["queries"].items():
        owner = key[q].split("/")[-2]
        assert len(good) == 2 and all(key[g].split("/")[-2] == owner for g in good)
    distractor_names = {n for n in gallery if "distractors" in key[n] or "single" in key[n]}
    assert len(distractor_names) == 5
    assert not distractor_names & {g for good in truth["queries"].values() for g in good}
    assert (out / "test" / "query" / queries[0]).read_bytes() == open(key[queries[0]], "rb").read()

    # Deterministic: the same seed rebuilds the same names; an existing folder needs --force.
    assert split.main(["--people", str(people), "--out", str(out), "seed=7"]) == 2
    assert split.main(["--people", str(people), "--distractors", str(distractors), "--out", str(out),
                       "--force", "split.test_fraction=0.5", "seed=7"]) == 0
    assert json.loads((out / "ground_truth.json").read_text()) == truth
    other = make_split(people, distractors, 8, 0.5, 1)
    assert sorted(other["query"]) != queries
