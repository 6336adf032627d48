"""Same-person decisions: the calibration and its thresholds by hand, the verification and open-set
metrics by hand, a training run that calibrates its checkpoint, and the decisions where users see them
(the store's search command, `facematch compare`, the page), with a stranger who must match no one."""
from __future__ import annotations

import html
import shutil

import numpy as np
import pytest
import torch

from cli import compare
import train
from conftest import FACES, PEOPLE, new_store
from evaluation.calibration import (calibrate, pair_distances, tar_at, threshold_for_far,
                                    threshold_for_gallery)
from evaluation.metrics import dir_at_fpir, tar_at_far
from network import read_checkpoint, save_checkpoint
from settings import build_model
from cli import gallery as store_module
from evaluation.calibration import match_words
from pipeline.store import GalleryStore
from settings import load_config

PERSONS = sorted(p.name for p in PEOPLE.iterdir())


# ---------------------------------------------------------------- by hand

def test_pair_distances_split_genuine_from_impostor_pairs():
    e = np.array([[1, 0], [1, 0], [0, 1]], float)  # photos 0 and 1: the same person, at distance 0
    genuine, impostor = pair_distances(e, ["a", "a", "b"])
    assert genuine.tolist() == [0.0] and sorted(impostor.tolist()) == [1.0, 1.0]


def test_thresholds_hold_their_rate_and_say_what_they_rest_on():
    impostor_tail = [0.1 * (i + 1) for i in range(100)]  # 100 impostor pairs at 0.1, 0.2, …, 10
    calib = {"impostor_tail": impostor_tail, "impostor_pairs": 100, "genuine_sorted": [0.05, 0.15, 0.55, 2.0],
             "people": 3, "photos": 9, "genuine_pairs": 4}
    t = threshold_for_far(calib, 0.05)  # 5 impostor pairs may pass: just below the 6th (0.6)
    assert 0.5 < t["threshold"] < 0.6
    assert np.searchsorted(impostor_tail, t["threshold"], side="right") / calib["impostor_pairs"] == 0.05
    assert t["pairs"] == 5 and not t["supported"] and t["tar"] == 0.75  # 0.05, 0.15 and 0.55 pass
    assert threshold_for_far(calib, 0.2)["supported"] and tar_at(calib, 10.0) == 1.0
    assert threshold_for_far(calib, 0.001)["threshold"] < 0.1  # no impostor may pass: below the first
    small, big = (threshold_for_gallery(calib, 0.3, n) for n in (1, 10))
    assert small["threshold"] > big["threshold"] and big["far"] == pytest.approx(1 - 0.7 ** 0.1)
    with pytest.raises(ValueError, match="beyond the kept impostor tail"):
        threshold_for_far(dict(calib, impostor_pairs=10_000), 0.5)


def test_calibrate_on_clusters_orders_its_thresholds():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(60), 5)
    emb = rng.normal(size=(60, 16))[labels] + 0.5 * rng.normal(size=(300, 16))
    calib = calibrate(emb, list(labels))
    t = calib["thresholds"]
    assert t["0.01"]["threshold"] > t["0.001"]["threshold"] > t["0.0001"]["threshold"]
    assert t["0.01"]["supported"] and not t["0.0001"]["supported"]  # 4 of 44,250 impostor pairs: too few
    assert calib["genuine_pairs"] == 600 and calib["impostor_pairs"] == 44_250
    with pytest.raises(ValueError, match="genuine and impostor pairs"):
        calibrate(emb[:3], ["a", "b", "c"])


def test_tar_at_far_and_dir_at_fpir_by_hand():
    impostor = np.arange(1, 11) / 10  # 0.1 … 1.0
    genuine = np.array([0.05, 0.15, 0.25, 0.9])
    assert tar_at_far(genuine, impostor, 0.0) == 0.25  # below 0.1: only 0.05
    assert tar_at_far(genuine, impostor, 0.2) == 0.75  # below 0.3: 0.05, 0.15, 0.25
    # Open set: non-mated probes' best distances 0.2, 0.4, 0.6, 0.8; at FPIR 0.25 one of them may match
    # (threshold just below 0.4); mated probes count when right at rank 1 and within it.
    mated_best, correct = np.array([0.1, 0.3, 0.35, 0.5]), np.array([True, True, False, True])
    assert dir_at_fpir(mated_best, correct, np.array([0.2, 0.4, 0.6, 0.8]), 0.25) == 0.5


# ---------------------------------------------------------------- training calibrates its checkpoint

@pytest.mark.slow
def test_training_writes_a_calibration_and_an_old_checkpoint_can_get_one(tiny_cfg, tmp_path, capsys):
    train.train(load_config(overrides=["train.epochs=1"], base=tiny_cfg))
    best = tmp_path / "run" / "best.pt"
    calib = read_checkpoint(best)["meta"]["calibration"]
    assert calib["people"] >= 2 and calib["impostor_pairs"] > 0 and set(calib["thresholds"]) == {"0.01", "0.001", "0.0001"}
    ckpt = read_checkpoint(best)
    del ckpt["meta"]["calibration"]  # as checkpoints written before calibration
    save_checkpoint(best, ckpt)
    overrides = [f"data.cache_dir={tmp_path / 'cache'}"]
    assert train.main(["--calibrate", str(best), *overrides]) == 0
    again = read_checkpoint(best)["meta"]["calibration"]  # the same people, the same weights: the same pairs
    assert again["impostor_pairs"] == calib["impostor_pairs"]
    assert np.allclose(again["impostor_tail"], calib["impostor_tail"], atol=1e-5)
    assert "calibrated on" in capsys.readouterr().out


# ---------------------------------------------------------------- decisions where users see them

def strict_calibration() -> dict:
    """A calibration whose thresholds lie near distance 2e-5: only a photo's own copy is 'the same'."""
    rng = np.random.default_rng(1)
    centre = rng.normal(size=64)
    labels = np.repeat(np.arange(40), 2)
    emb = centre + 0.005 * rng.normal(size=(40, 64))[labels]  # people 2.5e-5 apart, their photos identical
    return calibrate(emb, list(labels))


def tiny_checkpoint(work, calibration: dict | None):
    cfg = load_config(overrides=[f"data.cache_dir={work / 'cache'}", f"data.embedding_cache={work / 'emb.sqlite'}",
                                 "model.arch=resnet18", "model.weights=none", "model.embedding_size=16",
                                 "input.size=32", "crop.size=40", "device=cpu", "embedding.batch_size=8"])
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    meta = dict(model.meta, **({"calibration": calibration} if calibration else {}))
    path = work / "tiny.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg, "meta": meta,
                           "model_info": model.describe(), "epoch": 0})
    return path


def test_a_strangers_photo_matches_no_one_in_the_store(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path, strict_calibration())
    root = tmp_path / "store"
    assert store_module.main(["build", "--store", str(root), "--checkpoint", str(ckpt), "--allow-no-face",
                              *[str(PEOPLE / p) for p in PERSONS[:3]]]) == 0
    stranger = sorted((PEOPLE / PERSONS[4]).iterdir())[0]
    stored = sorted((PEOPLE / PERSONS[0]).iterdir())[0]
    capsys.readouterr()
    assert store_module.main(["search", "--store", str(root), str(stranger), str(stored), "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("no one in the gallery matches") == 1 and out.count("a match: the best distance 0.000") == 1
    assert "probably someone else" in out
    store = GalleryStore.open(root)
    limit = store.threshold(0.01)
    assert limit["gallery_size"] == len(store) and limit["fpir"] == 0.01
    assert match_words(1.0, None).startswith("no calibration")


def test_compare_says_same_person_or_not_at_a_rate(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path, strict_calibration())
    a, b = sorted((PEOPLE / PERSONS[0]).iterdir())[:2]
    copy = tmp_path / "copy.jpg"
    shutil.copyfile(a, copy)
    assert compare.main([str(a), str(copy), "--checkpoint", str(ckpt)]) == 0
    assert capsys.readouterr().out.startswith("same person: distance 0.000")
    assert compare.main([str(a), str(FACES / "one_face.jpg"), "--checkpoint", str(ckpt), "--far", "0.01"]) == 0
    assert capsys.readouterr().out.startswith("not the same person")
    (tmp_path / "bare").mkdir()
    bare = tiny_checkpoint(tmp_path / "bare", None)
    assert compare.main([str(a), str(copy), "--checkpoint", str(bare)]) == 2
    assert "carries no calibration" in capsys.readouterr().err


def test_the_page_says_no_one_matches_a_stranger(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cli import web

    ckpt = tiny_checkpoint(tmp_path, strict_calibration())
    root = tmp_path / "store"
    new_store(root, ckpt).add([PEOPLE / p for p in PERSONS[:3]], allow_no_face=True)
    app = web.app_for(root, load_config(overrides=["web.k=4", "web.allowed_hosts=[testserver]"]))
    try:
        with TestClient(app, headers={"origin": "http://testserver"}) as client:
            photo = sorted((PEOPLE / PERSONS[4]).iterdir())[0]
            r = client.post("/search", files={"photo": (photo.name, photo.read_bytes(), "image/jpeg")})
            page = html.unescape(r.text)
            assert r.status_code == 200 and "no one in the gallery matches" in page
            assert page.count("probably someone else") == 4
            assert client.post("/fpir", data={"rate": "2"}).status_code == 400
            assert client.post("/fpir", data={"rate": "0.1"}).status_code == 200
            assert "value='0.1' selected" in client.get("/").text
    finally:
        app.state.web.close()
