"""Several networks fused into one model (model.members): one checkpoint, unit vectors whose cosine is the weighted
sum of the members' cosines, weights chosen on the validation people, every entry point unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import FACES, PEOPLE


pytestmark = pytest.mark.slow  # trains or builds real models: minutes together


def _member(cfg: dict, out, **crop) -> str:
    """A tiny member saved as it is (train.epochs 0), with its own crop and input settings."""
    from train import train

    member = {**cfg, "crop": {**cfg["crop"], **crop}, "train": {**cfg["train"], "epochs": 0, "out_dir": str(out)}}
    torch.manual_seed(len(str(out)))
    train(member)
    return str(out / "best.pt")


@pytest.fixture
def fused_ckpt(tiny_cfg, tmp_path):
    """Two tiny members with different crops (the second a looser square at another size), fused by train.py."""
    from train import train

    a = _member(tiny_cfg, tmp_path / "a")
    b = _member({**tiny_cfg, "model": {**tiny_cfg["model"], "embedding_size": 8}, "input": {**tiny_cfg["input"], "size": 24}},
                tmp_path / "b", margin=0.1, size=30)
    cfg = {**tiny_cfg, "model": {**tiny_cfg["model"], "members": [a, b], "member_weights": "auto"},
           "augment": {**tiny_cfg["augment"], "cover_kinds": ["mask", "square"]},
           "train": {**tiny_cfg["train"], "out_dir": str(tmp_path / "fused")}}
    state = train(cfg)
    return tmp_path / "fused" / "best.pt", (a, b), state


def test_fused_embeddings_are_unit_vectors_whose_cosine_weighs_the_members(fused_ckpt):
    from dataset import DataSettings
    from detection import list_images
    from network import FusedNet, model_from_checkpoint
    from pipeline.embedding import embed_paths

    path, members, state = fused_ckpt
    model, cfg = model_from_checkpoint(path)
    assert isinstance(model, FusedNet) and model.embedding_size == 16 + 8
    assert abs(sum(model.weights) - 1) < 1e-9 and list(model.weights) == pytest.approx(state["weights"])
    assert "calibration" in model.meta
    data = DataSettings(**cfg["data"])
    photos = list_images(FACES)[:4]
    fused = embed_paths(photos, model, "cpu", "faces", data=data)
    assert np.allclose(np.linalg.norm(fused.embeddings, axis=1), 1, atol=1e-5)
    parts = [embed_paths(photos, model_from_checkpoint(m)[0], "cpu", "faces", data=data).embeddings for m in members]
    want = sum(w * (p @ p.T) for w, p in zip(model.weights, parts))
    assert np.allclose(fused.embeddings @ fused.embeddings.T, want, atol=1e-5)
    with pytest.raises(TypeError, match="embeds photos"):
        model(torch.zeros(1, 3, 32, 32))


def test_a_fused_checkpoint_goes_where_any_checkpoint_goes(fused_ckpt, tmp_path, capsys):
    from cli import main
    from conftest import new_store
    from dataset import DataSettings
    from network import CheckpointError, load_model_state, model_from_checkpoint, read_checkpoint
    from pipeline.protocol import evaluate_labelled
    from search.retrieval_settings import RetrievalSettings
    from settings import load_for_inference

    path, members, _ = fused_ckpt
    model, cfg, device = load_for_inference(path)
    report = evaluate_labelled(model, device, PEOPLE, "people", data=DataSettings(**cfg["data"]),
                               retrieval=RetrievalSettings(**cfg["retrieval"]), queries_per_person=1, seed=0)
    assert 0 <= report["top1"] <= 1 and report["queries"] > 0
    photos = sorted(PEOPLE.glob("*/*.jpg"))[:2]
    assert main(["compare", "--checkpoint", str(path), *map(str, photos)]) == 0
    assert "distance" in capsys.readouterr().out
    store = new_store(tmp_path / "store", path)
    store.add([PEOPLE], allow_no_face=True)
    ids, names, vectors = store.vectors()
    assert vectors.shape == (len(list(PEOPLE.glob("*/*.jpg"))), 24)
    dist, found = store.search(vectors[:1], 1)
    assert found[0][0] == names[0] and dist[0][0] < 1e-4
    single, _ = model_from_checkpoint(members[0])
    with pytest.raises(CheckpointError, match="fusion"):
        load_model_state(single, read_checkpoint(path), path)


def test_weights_are_chosen_on_the_validation_people():
    from search.retrieval_settings import RetrievalSettings
    from training.fusion import choose_weights, weight_grid

    assert all(abs(sum(w) - 1) < 1e-9 and min(w) > 0 for w in weight_grid(3))
    assert len(weight_grid(2)) == 9
    rng = np.random.default_rng(0)
    labels = [i // 3 for i in range(30)]
    centres = rng.normal(size=(10, 16))
    good = centres[labels] + 0.1 * rng.normal(size=(30, 16))   # people apart: a member that knows them
    noise = rng.normal(size=(30, 16))                            # a member that knows no one
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    embeddings = {"clean": [unit(good), unit(noise)], "mask": [unit(good + 0.5 * rng.normal(size=good.shape)), unit(noise)]}
    weights, rows = choose_weights(embeddings, labels, weight_grid(2), RetrievalSettings())
    chosen = next(r for r in rows if r["weights"] == weights)
    assert weights[0] > weights[1]  # the knowing member weighs most
    assert chosen["mean_top1"] == max(r["mean_top1"] for r in rows[2:])
    assert rows[0]["weights"] == (1.0, 0.0) and rows[1]["weights"] == (0.0, 1.0)
    assert rows[0]["mean_top1"] > rows[1]["mean_top1"]


def test_a_member_named_by_its_config_is_trained_first(tiny_cfg, tmp_path):
    import yaml

    from train import member_checkpoints

    member = tmp_path / "small.yaml"
    member.write_text(yaml.safe_dump({"model": {"arch": "resnet18", "weights": "none", "embedding_size": 8},
                                      "input": {"size": 32}, "crop": {"size": 40},
                                      "train": {"epochs": 0, "batch_size_eval": 8}}))
    cfg = {**tiny_cfg, "model": {**tiny_cfg["model"], "members": [str(member), str(tmp_path / "none.pt")]}}
    from network import CheckpointError
    with pytest.raises(CheckpointError, match="none.pt"):
        member_checkpoints(cfg)
    cfg["model"]["members"] = [str(member)]
    paths = member_checkpoints(cfg)
    assert paths == [tmp_path / "run" / "small" / "best.pt"] and paths[0].is_file()


def test_a_fusion_crops_as_each_member_does(fused_ckpt, tiny_cfg, tmp_path, capsys):
    from cli import main
    from settings import crop_settings_of

    path, members, _ = fused_ckpt
    crops = crop_settings_of({**tiny_cfg, "model": {**tiny_cfg["model"], "members": [str(path)]}})
    assert [(c.size, c.margin) for c in crops] == [(40, tiny_cfg["crop"]["margin"]), (30, 0.1)]
    assert crop_settings_of(tiny_cfg) == [crops[0]]
    assert main(["faces", str(PEOPLE), f"data.cache_dir={tmp_path / 'crops'}", f"model.members=[{members[0]},{members[1]}]"]) == 0
    out = capsys.readouterr().out
    assert "40 px" in out and "30 px" in out
