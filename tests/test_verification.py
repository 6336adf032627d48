"""Verification as on LFW (evaluation/verification.py, dataset's pairs files, facematch evaluate --pairs): the
threshold chosen on the other folds, accuracy mean ± std, the pairs file read and written in LFW's format."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from conftest import PEOPLE
from dataset import Pair, make_pairs, read_pairs
from evaluation.verification import best_threshold, fold_accuracies, pair_report
from utils import DataError


def test_the_best_threshold_classifies_most_pairs_right():
    d = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.35])
    same = np.array([True, True, True, False, False, False])
    t = best_threshold(d, same)
    assert 0.3 < t < 0.35  # between the last genuine and the first impostor
    assert np.mean((d <= t) == same) == 1.0
    assert best_threshold(np.array([0.5, 0.6]), np.array([False, False])) < 0.5  # accept nothing


def test_each_fold_is_scored_at_the_threshold_of_the_others():
    # folds 0 and 1: genuine at 0.2, impostors at 0.8; fold 2: genuine at 0.6 (a harder fold)
    d = np.array([0.2, 0.8, 0.2, 0.8, 0.6, 0.8])
    same = np.array([True, False, True, False, True, False])
    folds = np.array([0, 0, 1, 1, 2, 2])
    accuracies, thresholds = fold_accuracies(d, same, folds)
    assert accuracies.tolist() == [1.0, 1.0, 0.5]  # fold 2's genuine pair lies past the others' threshold
    assert thresholds[2] == pytest.approx(0.5)
    report = pair_report(d, same, folds)
    assert report["accuracy"] == pytest.approx(2.5 / 3) and report["accuracy_std"] == pytest.approx(np.std([1, 1, .5]))
    assert report["pairs"] == 6 and report["genuine"] == 3 and report["folds"] == 3
    with pytest.raises(ValueError, match="one fold"):
        fold_accuracies(d, same, np.zeros(6))


def lfw_folder(tmp_path):
    """The fixture people's photos under LFW's names (<name>/<name>_0001.jpg ...)."""
    root = tmp_path / "lfw"
    for person in sorted(PEOPLE.iterdir()):
        (root / person.name).mkdir(parents=True)
        for i, photo in enumerate(sorted(person.glob("*.jpg")), 1):
            shutil.copy(photo, root / person.name / f"{person.name}_{i:04d}.jpg")
    return root


def test_a_pairs_file_round_trips_in_lfws_format_with_people_in_one_fold(tmp_path):
    from dataset import list_identities

    root = lfw_folder(tmp_path)
    text = make_pairs(list_identities(root, 1), folds=2, per_fold=3, seed=1)
    assert text.splitlines()[0] == "2\t3" and len(text.splitlines()) == 1 + 2 * 2 * 3
    assert make_pairs(list_identities(root, 1), folds=2, per_fold=3, seed=1) == text  # seeded
    (tmp_path / "pairs.txt").write_text(text)
    pairs = read_pairs(tmp_path / "pairs.txt", root)
    assert len(pairs) == 12 and sum(p.same for p in pairs) == 6 and all(isinstance(p, Pair) for p in pairs)
    assert all((p.a.parent == p.b.parent) == p.same for p in pairs) and all(p.a != p.b for p in pairs)
    people_of = [{p.a.parent.name for p in pairs if p.fold == f} | {p.b.parent.name for p in pairs if p.fold == f}
                 for f in (0, 1)]
    assert not people_of[0] & people_of[1]  # a person in one fold only


def test_bad_pairs_files_name_the_line(tmp_path):
    root = lfw_folder(tmp_path)
    name = sorted(p.name for p in root.iterdir())[0]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"1\t1\n{name}\t1\t2\n{name}\t1\n")
    with pytest.raises(DataError, match=r"bad.txt:3: a pair line is"):
        read_pairs(bad, root)
    bad.write_text(f"1\t1\n{name}\t1\t99\n{name}\t1\tOther\t1\n")
    with pytest.raises(DataError, match=r"bad.txt:2: no photo " + name + "_0099"):
        read_pairs(bad, root)
    bad.write_text("ten\n")
    with pytest.raises(DataError, match="first line"):
        read_pairs(bad, root)
    with pytest.raises(DataError, match="too few people"):
        make_pairs({"a": [root / name / f"{name}_0001.jpg"]}, folds=2, per_fold=1)


@pytest.mark.slow
def test_evaluate_pairs_prints_lfws_accuracy_and_scores_covers(tiny_cfg, tmp_path, capsys):
    from cli import evaluate
    from dataset import list_identities
    from network import save_checkpoint
    from settings import build_model, load_config

    root = lfw_folder(tmp_path)
    (tmp_path / "pairs.txt").write_text(make_pairs(list_identities(root, 1), folds=2, per_fold=3, seed=0))
    cfg = load_config(overrides=["crop.detector=yunet", "crop.fallback=[center]"], base=tiny_cfg)
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    ckpt = tmp_path / "a.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg, "meta": model.meta,
                           "model_info": model.describe(), "epoch": 0})
    args = ["--checkpoint", str(ckpt), "--pairs", str(tmp_path / "pairs.txt"), "--root", str(root)]
    assert evaluate.main(args) == 0
    line = capsys.readouterr().out
    assert "accuracy" in line and "± " in line and "(2 folds, 12 pairs, 0 left out)" in line
    assert evaluate.main(args + ["--covers", "--json", str(tmp_path / "r.json")]) == 0
    table = capsys.readouterr().out
    assert "| mask |" in table and "| covers_mean |" in table and "accuracy_std" in table
    assert evaluate.main(["--checkpoint", str(ckpt), "--pairs", str(tmp_path / "missing.txt")]) == 2
