"""The classifier baselines (other_models/classifier.py): the softmax loss, the vgg16 backbone and
the one entry point, whose checkpoints embed with the penultimate feature, never the logits."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from backbones import WeightsError, build_backbone
from conftest import PEOPLE
from network import embed, model_from_checkpoint, read_checkpoint
from settings import build_model
from other_models import classifier
from training.losses import LossSettings, SoftmaxCrossEntropy, build_loss
from training.optim import make_optimizer
from settings import load_config


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache, and no network (as in test_backbones.py)."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return hub


# ---------------------------------------------------------------- the softmax loss

def test_softmax_loss_prefers_the_right_class_and_trains_its_classifier_with_the_head(tiny_cfg):
    cfg = load_config(overrides=["loss.name=softmax", "loss.softmax_scale=10"], base=tiny_cfg)
    loss_fn = build_loss(LossSettings(**cfg["loss"]), num_classes=3, embedding_size=16)
    head = loss_fn.loss
    assert isinstance(head, SoftmaxCrossEntropy) and head.scale == 10.0
    assert head.classifier.weight.shape == (3, 16)
    with torch.no_grad():
        head.classifier.bias.zero_()
    directions = F.normalize(head.classifier.weight.detach(), dim=1)  # embeddings along each class's weights
    labels = torch.tensor([0, 1, 2])
    right, wrong = loss_fn(directions, labels), loss_fn(directions, labels.roll(1))
    assert right.item() < wrong.item()
    assert torch.allclose(head.get_logits(directions), 10.0 * directions @ head.classifier.weight.T)

    model, _ = build_model(cfg)
    optimizer = make_optimizer(model, loss_fn, cfg["train"]["lr_backbone"], cfg["train"]["lr_head"],
                               cfg["train"]["weight_decay"])
    head_group = optimizer.param_groups[1]
    assert head_group["lr"] == cfg["train"]["lr_head"]
    assert all(any(p is q for q in head_group["params"]) for p in loss_fn.parameters())
    assert not any(p is q for p in model.parameters() for q in loss_fn.parameters())  # not in the model
    emb = model(torch.randn(6, 3, 32, 32))
    loss = loss_fn(emb, torch.tensor([0, 0, 1, 1, 2, 2]))
    loss.backward()
    assert head.classifier.weight.grad is not None and head.classifier.weight.grad.abs().sum() > 0
    before = head.classifier.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, head.classifier.weight)


# ---------------------------------------------------------------- the vgg16 backbone

def test_vgg16_is_a_512_channel_trunk_built_without_reading_weights(monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a weights file was read"))
    for weights in (None, "none"):
        bb = build_backbone("vgg16", weights)
        assert bb.features == 512 and bb.trainable and not bb.pooled and bb.meta["input_size"] == 224
        with torch.no_grad():
            assert bb.module.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 512, 1, 1)
    assert not any(name.startswith("classifier") for name in bb.module.state_dict())


def test_vgg16_imagenet_weights_come_from_the_torch_cache_without_the_classifier(offline):
    trunk = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    stand_in = {f"features.{k}": v for k, v in trunk.state_dict().items()}
    stand_in["classifier.6.bias"] = torch.zeros(1000)  # the ImageNet classifier is dropped, not an error
    url = torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    path = offline / "checkpoints" / url.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True)
    torch.save(stand_in, path)
    bb = build_backbone("vgg16", "imagenet")
    assert str(path) in bb.source and "ImageNet" in bb.source
    assert torch.equal(bb.module[0].weight, stand_in["features.0.weight"])
    assert torch.equal(bb.module[28].bias, stand_in["features.28.bias"])


def test_vgg16_imagenet_weights_offline_fail_clearly(offline):
    with pytest.raises(WeightsError) as err:
        build_backbone("vgg16", "imagenet")
    message = str(err.value)
    assert "vgg16" in message and str(offline) in message and "model.weights" in message
    assert "https://download.pytorch.org/models/vgg16" in message


# ---------------------------------------------------------------- the entry point

@pytest.mark.slow
def test_a_variant_trains_and_its_checkpoint_embeds_with_the_penultimate_feature(tmp_path, capsys):
    out = tmp_path / "run"
    assert classifier.main([
        "--variant", "vgg16_softmax", f"data.train_dir={PEOPLE}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.val_fraction=0.4", "model.weights=none", "model.embedding_size=16", "input.size=32",
        "crop.size=40", "device=cpu", "train.epochs=1", "train.P=3", "train.K=2", "train.batches_per_epoch=1",
        "train.batch_size_eval=8", f"train.out_dir={out}", f"train.figure={tmp_path / 'curve.png'}"]) == 0
    assert "vgg16_softmax: trained 1 epochs" in capsys.readouterr().out
    ckpt = read_checkpoint(out / "best.pt")
    classes = len(ckpt["people"]["train"])
    assert ckpt["config"]["model"]["arch"] == "vgg16" and ckpt["config"]["loss"]["name"] == "softmax"
    assert ckpt["loss"]["loss.classifier.weight"].shape == (classes, 16)  # the classifier is in the loss

    model, cfg = model_from_checkpoint(out / "best.pt")
    assert model.arch == "vgg16" and model.embedding_size == 16 != classes
    assert all(t.ndim == 0 or t.shape[0] != classes for t in model.state_dict().values())  # no class layer
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        emb = model(x)
        penultimate = F.normalize(model.head(model.pool(model.backbone(x)).flatten(1)), dim=1)
    assert torch.allclose(emb, penultimate, atol=1e-6)
    crops = sorted(PEOPLE.rglob("*.jpg"))[:5]
    vectors = torch.as_tensor(embed(model, crops, batch_size=4))
    assert vectors.shape == (5, 16) and torch.allclose(vectors.norm(dim=1), torch.ones(5), atol=1e-5)
    loss_fn = build_loss(LossSettings(**cfg["loss"]), classes, 16)
    loss_fn.load_state_dict(ckpt["loss"])
    assert loss_fn.loss.get_logits(vectors).shape == (5, classes)  # logits exist only in the loss


def test_variant_settings_layer_under_the_users():
    cfg = classifier.variant_config("efficientnet_lite0_arcface")
    assert (cfg["model"]["arch"], cfg["model"]["weights"], cfg["loss"]["name"]) == ("efficientnet_lite0", "pretrained", "arcface")
    assert cfg["model"]["head"] == "linear" and cfg["model"]["embedding_size"] == 512
    assert cfg["train"]["out_dir"] == "checkpoints/efficientnet_lite0_arcface"
    assert cfg["train"]["figure"] == "figures/efficientnet_lite0_arcface_training_curve.png"
    cfg = classifier.variant_config("resnet50_softmax", overrides=["train.out_dir=elsewhere", "model.weights=none"])
    assert cfg["model"]["weights"] == "none" and cfg["train"]["out_dir"] == "elsewhere"
    assert classifier.variant_config("vgg16_arcface")["model"]["weights"] == "imagenet"  # the default's
    assert set(classifier.VARIANTS) == {f"{arch}_{loss}" for arch in ("resnet50", "efficientnet_lite0", "vgg16")
                                        for loss in ("softmax", "arcface")}


def test_list_prints_the_variants_and_an_unknown_one_exits_2(capsys):
    assert classifier.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in classifier.VARIANTS)
    assert classifier.main(["--variant", "alexnet_softmax"]) == 2
    assert "unknown variant 'alexnet_softmax'" in capsys.readouterr().err
    assert classifier.main([]) == 2
