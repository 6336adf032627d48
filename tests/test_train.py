"""Training on a few real identities: the loss goes down, files are written, resume is exact,
and the whole pipeline (split → train → rank → evaluate) runs from its command lines."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from cli import evaluate
import request_send
from cli import split
import train
from conftest import PEOPLE
from dataset import AugmentSettings, DataSettings
from detection import CropSettings
from search.retrieval_settings import RetrievalSettings
from network import embed, model_from_checkpoint, read_checkpoint
from settings import build_model
from training.data import crop_people, split_people
from training.frozen import FeatureDataset
from training.losses import LossSettings, LOSSES, build_loss
from training.optim import make_optimizer, warmup_cosine
from utils import ConfigError, seed_everything
from settings import load_config


def people_split(cfg: dict):
    """Training and validation people as train.py splits them from this config."""
    return split_people(DataSettings(**cfg["data"]), cfg["seed"], cfg["loss"]["name"])


def full_data_loss(model, cfg):
    """Batch-hard triplet loss over every training photo, without augmentation."""
    train_people, _ = people_split(cfg)
    crops, labels, _, _ = crop_people(train_people, model.crop_settings(), cfg["data"]["cache_dir"], "check")
    emb = torch.as_tensor(embed(model, crops, 8))
    loss_fn = build_loss(LossSettings(**load_config(overrides=["loss.name=triplet_batch_hard"])["loss"]), 0, emb.shape[1])
    return loss_fn(emb, torch.as_tensor(labels)).item()


@pytest.mark.slow
def test_two_epochs_lower_the_loss_and_write_every_output(tiny_cfg):
    seed_everything(tiny_cfg["seed"])
    before_model, _ = build_model(tiny_cfg)  # the very initialisation train() starts from
    before = full_data_loss(before_model, tiny_cfg)
    cfg = load_config(overrides=["train.batches_per_epoch=20", "train.K=4"], base=tiny_cfg)
    state = train.train(cfg)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    after_model, _ = model_from_checkpoint(f"{cfg['train']['out_dir']}/last.pt")
    after = full_data_loss(after_model, cfg)
    assert after < before * 0.5, (before, after)

    out = cfg["train"]["out_dir"]
    rows = list(csv.DictReader(open(f"{out}/log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and all(0 <= float(r["map"]) <= 1 for r in rows)
    best = read_checkpoint(f"{out}/best.pt")
    assert best["config"]["model"]["arch"] == "resnet18" and best["metrics"]["map"] == state["best"]
    assert not set(best["people"]["train"]) & set(best["people"]["val"])
    with open(cfg["train"]["figure"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_resume_continues_exactly(tiny_cfg, tmp_path, monkeypatch):
    cfg = load_config(overrides=["train.warmup_epochs=0.5"], base=tiny_cfg)  # the schedule matters in both epochs
    train.train(load_config(overrides=[f"train.out_dir={tmp_path / 'a'}"], base=cfg))

    real_validate, calls = train.validate, []

    def interrupted_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed before epoch 2 was saved
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train, "validate", interrupted_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train.train(load_config(overrides=[f"train.out_dir={tmp_path / 'b'}"], base=cfg))
    monkeypatch.setattr(train, "validate", real_validate)
    assert read_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    state = train.train(read_checkpoint(tmp_path / "b" / "last.pt")["config"], resume=tmp_path / "b" / "last.pt")
    a, b = read_checkpoint(tmp_path / "a" / "last.pt"), read_checkpoint(tmp_path / "b" / "last.pt")
    assert state["epoch"] == 2
    for key, tensor in a["model"].items():
        assert torch.allclose(tensor.float(), b["model"][key].float(), atol=1e-6), key
    assert [h["train_loss"] for h in a["history"]] == pytest.approx([h["train_loss"] for h in b["history"]], abs=1e-6)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


def test_resume_refuses_other_data(tiny_cfg, tmp_path):
    train.train(load_config(overrides=["train.epochs=1"], base=tiny_cfg))
    other = load_config(overrides=["seed=5", "train.epochs=2"], base=tiny_cfg)
    with pytest.raises(train.CheckpointError, match="other people"):
        train.train(other, resume=f"{tiny_cfg['train']['out_dir']}/last.pt")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_trains_one_step(name, tiny_cfg):
    cfg = load_config(overrides=[f"loss.name={name}", "loss.teacher=self"], base=tiny_cfg)
    model, _ = build_model(cfg)
    loss_fn = build_loss(LossSettings(**cfg["loss"]), num_classes=3, embedding_size=16)
    opt = make_optimizer(model, loss_fn, cfg["train"]["lr_backbone"], cfg["train"]["lr_head"], cfg["train"]["weight_decay"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    emb = model(torch.randn(6, 3, 32, 32))
    targets = torch.nn.functional.normalize(torch.randn(6, 16), dim=1)  # used by distill alone
    loss = loss_fn(emb, torch.tensor([0, 0, 1, 1, 2, 2]), targets)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    opt.step()
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert {"backbone", "head"} <= changed, changed
    if name == "arcface":  # its class weights train with the head
        assert any(p is q for p in opt.param_groups[1]["params"] for q in loss_fn.parameters())


def test_the_distillation_term_adds_to_a_metric_loss_and_needs_a_teacher(tiny_cfg):
    emb = torch.nn.functional.normalize(torch.randn(6, 16), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    plain = build_loss(LossSettings(**load_config(base=tiny_cfg)["loss"]), 3, 16)
    both = build_loss(LossSettings(**load_config(overrides=["loss.distill_weight=2", "loss.teacher=self"], base=tiny_cfg)["loss"]), 3, 16)
    assert both(emb, labels, emb).item() == pytest.approx(plain(emb, labels).item(), abs=1e-6)  # on target: no cost
    assert both(emb, labels, -emb).item() == pytest.approx(plain(emb, labels).item() + 2 * 2.0, abs=1e-5)
    with pytest.raises(ConfigError, match="needs loss.teacher"):
        build_loss(LossSettings(**load_config(overrides=["loss.name=distill"], base=tiny_cfg)["loss"]), 3, 16)


def test_warmup_then_cosine_schedule():
    f = warmup_cosine(warmup_steps=4, total_steps=20, min_factor=0.1)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0) and f(12) == pytest.approx(0.55) and f(20) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(4, 20))


@pytest.mark.slow
def test_pipeline_from_the_command_lines(tiny_cfg, tmp_path, capsys):
    comp = tmp_path / "competition"
    assert split.main(["--people", str(PEOPLE), "--out", str(comp), "split.test_fraction=0.4",
                       "split.queries_per_person=1"]) == 0
    overrides = [f"{k}={v}" for k, v in {
        "data.train_dir": comp / "train", "data.cache_dir": tiny_cfg["data"]["cache_dir"], "data.val_fraction": 0.34,
        "model.arch": "resnet18", "model.weights": "none", "model.embedding_size": 16, "input.size": 32,
        "crop.size": 40, "train.epochs": 1, "train.P": 2, "train.K": 2, "train.out_dir": tmp_path / "run",
        "train.figure": tmp_path / "curve.png", "evaluate.figure": tmp_path / "grid.png", "retrieval.k": 5,
        "device": "cpu"}.items()]
    assert train.main(overrides) == 0
    out = tmp_path / "submission.json"
    assert request_send.main(["--checkpoint", str(tmp_path / "run" / "best.pt"), "--test", str(comp / "test"),
                              "--out", str(out), "--dry-run", "retrieval.k=5"]) == 0
    payload = json.loads(out.read_text())
    truth = json.loads((comp / "ground_truth.json").read_text())
    assert set(payload["images"]) == set(truth["queries"])
    assert all(len(v) == 5 and set(v) <= set(truth["gallery"]) for v in payload["images"].values())
    assert evaluate.main(["--checkpoint", str(tmp_path / "run" / "best.pt"), "--competition", str(comp),
                          "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["queries"] == 2 and 0 <= metrics["map"] <= 1
    assert (tmp_path / "grid.png").stat().st_size > 1000
    # --labelled: identity folders split into one query a person (with 2+ photos) and the gallery.
    assert evaluate.main(["--checkpoint", str(tmp_path / "run" / "best.pt"), "--labelled", str(PEOPLE),
                          "--json", str(tmp_path / "l.json")]) == 0
    labelled = json.loads((tmp_path / "l.json").read_text())
    people = [p for p in PEOPLE.iterdir() if p.is_dir() and len(list(p.iterdir())) >= 2]
    assert labelled["queries"] == len(people) and 0 < labelled["top10"] <= 1
    assert train.main(overrides + ["loss.name=nope"]) == 2
    assert "'loss.name' is 'nope'" in capsys.readouterr().err


def test_embeddings_of_the_same_photo_do_not_depend_on_batching(tiny_cfg):
    model, _ = build_model(tiny_cfg)
    crops = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(5)]
    a = embed(model, crops, batch_size=2)
    b = embed(model, crops, batch_size=5)
    assert np.allclose(a, b, atol=1e-5)


def test_several_training_folders_never_merge_people(tiny_cfg, tmp_path):
    import shutil

    other = tmp_path / "more"
    shutil.copytree(PEOPLE, other)  # the same folder names in a second root: different people
    cfg = load_config(overrides=[f"data.train_dir=[{PEOPLE}, {other}]", "data.val_fraction=0.3"], base=tiny_cfg)
    train_people, val_people = people_split(cfg)
    assert len(train_people) + len(val_people) == 10
    assert not set(train_people) & set(val_people)
    assert {n.split("/")[0] for n in train_people} == {"people", "more"}


def test_a_checkpoint_trained_with_mtcnn_and_alignment_is_used_as_trained_under_another_default(
        tiny_cfg, tmp_path, monkeypatch):
    import utils
    from dataset import eval_transform
    from detection import crop_face, crop_key, read_image

    comp = tmp_path / "competition"
    assert split.main(["--people", str(PEOPLE), "--out", str(comp), "split.test_fraction=0.4",
                       "split.queries_per_person=1"]) == 0
    trained_with = ["crop.detector=mtcnn", "crop.align=similarity", "crop.fallback=[haar,center]", "crop.size=48",
                    "input.size=32", "input.mean=[0.5,0.4,0.3]", "input.std=[0.2,0.25,0.3]"]
    cfg = load_config(overrides=[f"data.train_dir={comp / 'train'}", "train.epochs=1", "data.val_fraction=0",
                                 *trained_with], base=tiny_cfg)
    train.train(cfg)
    checkpoint = tmp_path / "run" / "best.pt"
    # Next year's default config crops with yunet, unaligned, and normalises otherwise.
    text = (utils.ROOT / "config" / "default.yaml").read_text()
    for old, new in (("detector: haar", "detector: yunet"), ("align: none", "align: dlib"),
                     ("  size: 112", "  size: 64"), ("  size: 128", "  size: 96")):
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "default.yaml").write_text(text)
    monkeypatch.setattr(utils, "DEFAULT_CONFIG", tmp_path / "default.yaml")
    out, cache = tmp_path / "submission.json", tmp_path / "fresh_cache"
    assert request_send.main(["--checkpoint", str(checkpoint), "--test", str(comp / "test"), "--out", str(out),
                              "--dry-run", "retrieval.k=5", f"data.cache_dir={cache}", "device=cpu"]) == 0
    payload = json.loads(out.read_text())
    # Every photo was cropped with the trained settings: its cache entry is under the trained key.
    crop_cfg = CropSettings(**cfg["crop"])
    photos = sorted((comp / "test").rglob("*.jpg"))
    assert {p.name for p in cache.glob("*.png")} == {f"{crop_key(p.read_bytes(), crop_cfg)}.png" for p in photos}
    # And the ranking is the one the trained preprocessing gives, computed here by hand.
    model, _ = __import__("network").model_from_checkpoint(checkpoint)
    transform = eval_transform({"size": 32, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]})

    def by_hand(folder):
        paths = sorted((comp / "test" / folder).glob("*.jpg"))
        batch = torch.stack([transform(image=crop_face(read_image(p), crop_cfg).image)["image"] for p in paths])
        with torch.no_grad():
            return [p.name for p in paths], model(batch).numpy()

    q_names, q = by_hand("query")
    g_names, g = by_hand("gallery")
    expected = {name: [g_names[j] for j in np.argsort(-(g @ row), kind="stable")[:5]] for name, row in zip(q_names, q)}
    assert payload["images"] == expected


def test_a_frozen_backbone_runs_once_per_view_and_its_head_trains_on_the_stored_features(tiny_cfg, monkeypatch):
    import network

    cfg = load_config(["config/dlib.yaml"], ["model.embedding_size=16", "train.frozen_views=2",
                                             "train.epochs=2", "train.batches_per_epoch=4"], base=tiny_cfg)
    rows = []
    real = network.EmbeddingNet.features

    def counted(self, x):
        rows.append(len(x))
        return real(self, x)

    monkeypatch.setattr(network.EmbeddingNet, "features", counted)
    seed_everything(cfg["seed"])
    before, _ = build_model(cfg)
    state = train.train(cfg)
    assert state["epoch"] == 2
    best = read_checkpoint(f"{cfg['train']['out_dir']}/best.pt")
    n_train, n_val = (sum(len(v) for v in part.values()) for part in people_split(cfg))
    # 2 views of every training photo and 1 of every validation photo, whatever the number of steps
    assert sum(rows) == 2 * n_train + n_val, (sum(rows), n_train, n_val)
    after, _ = model_from_checkpoint(f"{cfg['train']['out_dir']}/last.pt")
    changed = [k for k, v in after.head.state_dict().items() if not torch.equal(v, before.head.state_dict()[k])]
    assert changed, "the head did not train"
    assert best["model_info"]["arch"] == "dlib_resnet" and 0 <= best["metrics"]["top1"] <= 1


def test_feature_dataset_draws_each_view_by_the_draw_seed():
    features = torch.arange(12.0).reshape(3, 2, 2)  # 3 photos, 2 views, 2-d
    data = FeatureDataset(features, [0, 1, 1])
    assert torch.equal(data[(1, 4)][0], features[1, 0]) and torch.equal(data[(1, 7)][0], features[1, 1])
    assert data[(2, 3)][1] == 1 and len(data) == 3


# ---------------------------------------------------------------- fine-tuning pretrained weights

def _weights_file(tmp_path):
    """'Pretrained' ResNet18 weights in a file: what model.weights=PATH reads."""
    import torchvision

    torch.manual_seed(3)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "start.pth")
    return tmp_path / "start.pth"


@pytest.mark.slow
def test_pretrained_weights_are_epoch_zero_and_a_collapsed_run_stops_keeping_them(tiny_cfg, tmp_path, monkeypatch):
    _weights_file(tmp_path)
    cfg = load_config(overrides=[f"model.weights={tmp_path / 'start.pth'}", "train.epochs=4", "train.monitor=top1",
                                 "train.collapse=0.5"], base=tiny_cfg)
    scores = iter([0.8, 0.9, 0.3, 0.95])  # epoch 0 (the weights as loaded), 1, 2 (collapsed), never 3
    real = train.validate

    def scripted(*args, **kwargs):
        return {**real(*args, **kwargs), "top1": next(scores)}

    monkeypatch.setattr(train, "validate", scripted)
    state = train.train(cfg)
    assert state["start"] == 0.8 and state["collapsed"] == 2 and state["epoch"] == 2
    assert [row["epoch"] for row in state["history"]] == [0, 1, 2]
    best = read_checkpoint(f"{cfg['train']['out_dir']}/best.pt")
    assert best["epoch"] == 1 and best["best"] == 0.9


@pytest.mark.slow
def test_epoch_zero_stays_best_when_training_never_beats_it(tiny_cfg, tmp_path, monkeypatch):
    cfg = load_config(overrides=[f"model.weights={_weights_file(tmp_path)}", "train.epochs=2", "train.monitor=top1"],
                      base=tiny_cfg)
    start, _ = build_model(cfg)
    scores = iter([0.9, 0.7, 0.8])
    real = train.validate
    monkeypatch.setattr(train, "validate", lambda *a, **k: {**real(*a, **k), "top1": next(scores)})
    train.train(cfg)
    best = read_checkpoint(f"{cfg['train']['out_dir']}/best.pt")
    assert best["epoch"] == 0 and best["best"] == 0.9
    model, _ = model_from_checkpoint(f"{cfg['train']['out_dir']}/best.pt")
    assert all(torch.equal(v, start.backbone.state_dict()[k]) for k, v in model.backbone.state_dict().items())


def test_the_distillation_set_hands_the_mirror_its_own_target(tiny_cfg):
    from training.distill import DistillDataset

    crop = np.zeros((40, 40, 3), np.uint8)
    crop[:, :20] = 255  # left half white: a mirrored view has it on the right
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    augment = AugmentSettings(**{**tiny_cfg["augment"], "hflip_p": 0.5, "color_p": 0, "gamma_p": 0, "affine_p": 0,
                                 "blur_p": 0, "dropout_p": 0, "erase_p": 0})
    data = DistillDataset([crop], [0], targets, augment, {"size": 40, "mean": [0.0] * 3, "std": [1.0] * 3,
                                                           "max_pixel_value": 255.0})
    seen = set()
    for seed in range(40):
        image, label, target = data[(0, seed)]
        mirrored = image[0, 0, -1] > image[0, 0, 0]
        assert torch.equal(target, targets[0, int(mirrored)]) and label == 0
        seen.add(bool(mirrored))
        again = data[(0, seed)]
        assert torch.equal(again[0], image)  # a draw is reproducible from its seed
    assert seen == {False, True}


@pytest.mark.slow
def test_self_distillation_with_cutout_trains_and_resumes_towards_the_same_targets(tiny_cfg):
    cfg = load_config(overrides=["loss.distill_weight=1", "loss.teacher=self", "augment.erase_p=1"], base=tiny_cfg)
    seed_everything(cfg["seed"])
    before, _ = build_model(cfg)
    cfg1 = load_config(overrides=["train.epochs=1"], base=cfg)
    train.train(cfg1)
    last = read_checkpoint(f"{cfg['train']['out_dir']}/last.pt")
    targets = last["distill_targets"]
    assert targets.shape[1:] == (2, 16) and torch.allclose(targets.norm(dim=2), torch.ones(targets.shape[:2]))
    after, _ = model_from_checkpoint(f"{cfg['train']['out_dir']}/last.pt")
    assert not all(torch.equal(v, before.state_dict()[k]) for k, v in after.state_dict().items())
    state = train.train(cfg, resume=f"{cfg['train']['out_dir']}/last.pt")
    assert state["epoch"] == 2
    assert torch.equal(read_checkpoint(f"{cfg['train']['out_dir']}/last.pt")["distill_targets"], targets)


def test_a_fine_tuning_step_changes_dlibs_weights(tiny_cfg):
    cfg = load_config(["config/best_dlib.yaml"], [
        "train.epochs=1", "train.batches_per_epoch=1", "train.P=3", "train.K=2", "train.lr_backbone=1e-4",
        "model.freeze=5", "data.val_fraction=0.4", "loss.distill_weight=1", "loss.teacher=self", "augment.erase_p=1", f"train.out_dir={tiny_cfg['train']['out_dir']}",
        f"train.figure={tiny_cfg['train']['figure']}", f"data.cache_dir={tiny_cfg['data']['cache_dir']}",
        f"data.embedding_cache={tiny_cfg['data']['embedding_cache']}", "device=cpu", f"data.train_dir={PEOPLE}",
        "embedding.batch_size=8", "train.batch_size_eval=8"])
    before, _ = build_model(cfg)
    state = train.train(cfg)
    assert [row["epoch"] for row in state["history"]] == [0, 1]
    after, _ = model_from_checkpoint(f"{cfg['train']['out_dir']}/last.pt")
    changed = {k.split(".")[0] for k, v in after.backbone.state_dict().items()
               if not torch.equal(v, before.backbone.state_dict()[k])}
    assert changed == {"level5", "fc"}, changed  # model.freeze=5 keeps the stem and levels 1-4


@pytest.mark.slow
@pytest.mark.parametrize("degrade", ["both", "covers"])
def test_validation_with_degraded_queries_can_choose_the_checkpoint(tiny_cfg, degrade):
    cfg = load_config(overrides=[f"train.val_degrade={degrade}", "train.monitor=mean_map@r", "train.val_queries=all",
                                 "train.epochs=1"], base=tiny_cfg)
    state = train.train(cfg)
    row = state["history"][-1]
    assert 0 <= row["degraded_top1"] <= 1 and row["mean_map@r"] == pytest.approx((row["map@r"] + row["degraded_map@r"]) / 2)
    assert state["best"] == row["mean_map@r"]
    with open(f"{cfg['train']['out_dir']}/log.csv") as fh:
        assert "degraded_map@r" in next(csv.reader(fh))
    for monitor, message in (("degraded_top1", "needs degraded validation queries"), ("mean_nothing", "is not one of")):
        with pytest.raises(ConfigError, match=message):
            train.train(load_config(overrides=[f"train.monitor={monitor}"], base=tiny_cfg))


def test_leave_one_out_validation_queries_every_photo_against_the_others():
    from pipeline.protocol import score_leave_one_out

    emb = np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 2]]  # photos 0,1 of A alike; C's two alike; B alone
    report = score_leave_one_out(emb, ["A", "A", "B", "C", "C"], RetrievalSettings(**load_config()["retrieval"]))
    assert report["queries"] == 4 and report["top1"] == 1.0  # B has no other photo: not a query
    swapped = emb[[3, 4, 2, 0, 1]]  # as queries, A's photos now look like C's and C's like A's
    worse = score_leave_one_out(emb, ["A", "A", "B", "C", "C"], RetrievalSettings(**load_config()["retrieval"]), swapped)
    assert worse["top1"] == 0.0


@pytest.mark.slow
def test_distillation_from_a_teacher_checkpoint_uses_the_teachers_own_crops(tiny_cfg, tmp_path):
    from detection import crop_paths
    from training.distill import both_views
    from network import save_checkpoint

    teacher_cfg = load_config(overrides=["crop.size=48", "input.size=40"], base=tiny_cfg)
    torch.manual_seed(7)
    teacher, _ = build_model(teacher_cfg)
    save_checkpoint(tmp_path / "teacher.pt", {"model": teacher.state_dict(), "config": teacher_cfg,
                                              "meta": teacher.meta, "model_info": teacher.describe(), "epoch": 0})
    cfg = load_config(overrides=["loss.name=distill", f"loss.teacher={tmp_path / 'teacher.pt'}", "train.epochs=1"],
                      base=tiny_cfg)
    state = train.train(cfg)
    assert state["epoch"] == 1
    targets = read_checkpoint(f"{cfg['train']['out_dir']}/last.pt")["distill_targets"]
    train_people, _ = people_split(cfg)
    paths = [p for photos in train_people.values() for p in photos]
    crops, _ = crop_paths(paths, teacher.crop_settings(), cfg["data"]["cache_dir"])  # 48-px crops, not the student's 40
    expected = both_views(teacher.eval(), crops, "cpu", 8, "check")
    expected = torch.nn.functional.normalize(expected - expected.reshape(-1, 16).mean(0), dim=-1)  # centred
    assert torch.allclose(targets, expected, atol=1e-5)
    assert targets.reshape(-1, 16).mean(0).norm() < 0.5  # the common direction is gone
    wrong = load_config(overrides=["model.embedding_size=8"], base=cfg)
    with pytest.raises(ConfigError, match="16-d embeddings; the student's are 8-d"):
        train.train(wrong)


def test_unlabelled_photos_train_a_distilled_student_and_nothing_else(tiny_cfg, tmp_path):
    import shutil

    loose = tmp_path / "loose"
    loose.mkdir()
    for i, photo in enumerate(sorted(PEOPLE.glob("*/*.jpg"))[:3]):
        shutil.copy(photo, loose / f"{i}.jpg")
    cfg = load_config(overrides=["loss.name=distill", "loss.teacher=self", f"data.unlabelled=[{loose}]"], base=tiny_cfg)
    train_people, val_people = people_split(cfg)
    unlabelled = [n for n in train_people if n.startswith("unlabelled:")]
    assert len(unlabelled) == 3 and all(len(train_people[n]) == 1 for n in unlabelled)
    assert not any(n.startswith("unlabelled:") for n in val_people)
    assert train.train(load_config(overrides=["train.epochs=1"], base=cfg))["epoch"] == 1
    with pytest.raises(ConfigError, match="only with loss.name=distill"):
        people_split(load_config(overrides=[f"data.unlabelled=[{loose}]"], base=tiny_cfg))


def test_dlib_metric_loss_matches_a_hand_computed_value():
    from training.losses import DlibMetricLoss

    # Four points on a line: A at 0 and 0.5, B at 0.6 and 2.0. Threshold 0.5, margin 0.1: same-person
    # pairs cost their excess over 0.4, others their shortfall under 0.6, only the hardest negatives
    # counted, as many as the positives (2).
    x = torch.tensor([[0.0], [0.5], [0.6], [2.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss = DlibMetricLoss(threshold=0.5, margin=0.1)(x, labels)
    # positives: A 0.5 (cost 0.1), B 1.4 (cost 1.0); negatives sorted: 0.1, 0.6, 1.5, 2.0 -> the 2 hardest
    # (0.1 cost 0.5, 0.6 cost 0); total 1.6 over 2 positive pairs
    assert loss.item() == pytest.approx(0.8)
    loss.backward()
    assert x.grad.abs().sum() > 0
