"""Exported models (deploy/, runtime/): a checkpoint as ONNX, checked against PyTorch, run by ONNX Runtime everywhere a
model embeds, quantised; a bad export is a clear error."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import request_send
from cli import split
from conftest import PEOPLE
from deploy import ExportError, export_checkpoint
from detection import crop_paths, list_images
from network import EmbeddingNet, FusedNet, embed, fused_checkpoint, model_from_checkpoint, save_checkpoint
from runtime import OnnxFusion, OnnxModelError, OnnxNet, is_bundle, load_bundle
from runtime import embed as onnx_embed
from settings import build_model, load_config, load_for_inference

TINY = ["model.arch=resnet18", "model.weights=none", "model.embedding_size=16", "input.size=32", "crop.size=40",
        "device=cpu", "embedding.batch_size=8"]


def tiny_checkpoint(work, extra: list[str] = (), seed: int = 0, name: str = "tiny.pt"):
    cfg = load_config(overrides=[f"data.cache_dir={work / 'cache'}", f"data.embedding_cache={work / 'emb.sqlite'}",
                                 f"data.train_dir={PEOPLE}", *TINY, *extra])
    torch.manual_seed(seed)
    model, _ = build_model(cfg)
    with torch.no_grad():  # batch-norm statistics of a trained network, not the identity of a new one
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = work / name
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg, "meta": model.meta,
                           "model_info": model.describe(), "epoch": 0})
    return path


def chips(settings, n: int = 10) -> list[np.ndarray]:
    photos = list_images(PEOPLE, recursive=True)[:n]
    crops, _ = crop_paths(photos, settings, None)
    return [c for c in crops if c is not None]


def test_a_tiny_export_embeds_as_pytorch_does_with_and_without_flip(tmp_path):
    ckpt = tiny_checkpoint(tmp_path)
    manifest = export_checkpoint(ckpt, tmp_path / "export", check=PEOPLE)
    assert manifest["networks"][0]["check"]["max_abs"] < 1e-4
    exported, cfg = model_from_checkpoint(tmp_path / "export")  # a folder: loaded for ONNX Runtime
    model, _ = model_from_checkpoint(ckpt)
    assert isinstance(exported, OnnxNet) and is_bundle(tmp_path / "export" / "model.json")
    assert cfg["model"]["arch"] == "resnet18" and exported.meta["input"] == model.meta["input"]
    crops = chips(model.crop_settings())
    for tta in ("none", "flip"):
        ref = embed(model, crops, 4, "cpu", tta=tta)
        got = onnx_embed(exported, crops, 3, tta=tta)
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4
    mirrored = onnx_embed(exported, crops, 4, mirror=True)
    assert np.abs(mirrored - embed(model, crops, 4, "cpu", mirror=True)).max() < 1e-4
    assert np.abs(mirrored - onnx_embed(exported, crops, 4)).max() > 1e-3  # the mirror is another image


def test_a_fusion_exports_each_member_and_fuses_as_pytorch_does(tmp_path):
    a = model_from_checkpoint(tiny_checkpoint(tmp_path, seed=1, name="a.pt"))[0]
    b = model_from_checkpoint(tiny_checkpoint(tmp_path, ["input.size=40", "model.embedding_size=8"], seed=2,
                                              name="b.pt"))[0]
    fused = FusedNet([a, b], [0.3, 0.7])
    cfg = load_config(overrides=TINY)
    path = tmp_path / "fused.pt"
    save_checkpoint(path, fused_checkpoint(fused, cfg, [{k: cfg[k] for k in ("model", "input", "crop")},
                                                        {**{k: cfg[k] for k in ("model", "input", "crop")},
                                                         "model": {**cfg["model"], "embedding_size": 8},
                                                         "input": {**cfg["input"], "size": 40}}]))
    export_checkpoint(path, tmp_path / "export", check=PEOPLE)
    exported, _ = load_bundle(tmp_path / "export")
    assert isinstance(exported, OnnxFusion) and exported.weights == pytest.approx([0.3, 0.7])
    assert [m.embedding_size for m in exported.members] == [16, 8] and exported.embedding_size == 24
    crops = chips(a.crop_settings(), 6)
    parts = [onnx_embed(m, crops, 4) for m in exported.members]
    ref = fused.fuse([embed(m, crops, 4, "cpu") for m in fused.members])
    assert np.abs(exported.fuse(parts) - ref).max() < 1e-4


def test_dlibs_real_network_exports_and_agrees_with_pytorch(tmp_path):
    cfg = load_config(["config/dlib.yaml"], ["model.head=none", f"data.cache_dir={tmp_path / 'cache'}"])
    model, _ = build_model(cfg)
    path = tmp_path / "dlib.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg, "meta": model.meta,
                           "model_info": model.describe(), "epoch": 0})
    manifest = export_checkpoint(path, tmp_path / "export", check=PEOPLE)
    check = manifest["networks"][0]["check"]
    assert check["chips"] >= 10 and check["max_abs"] < 1e-4 and check["min_cosine"] > 0.99999
    exported, _ = load_bundle(tmp_path / "export")
    crops = chips(model.crop_settings(), 6)
    assert np.abs(onnx_embed(exported, crops, 4, tta="flip") - embed(model, crops, 4, "cpu", tta="flip")).max() < 1e-4


def test_int8_is_calibrated_on_training_photos_and_stays_close(tmp_path):
    import onnx

    ckpt = tiny_checkpoint(tmp_path)
    with pytest.raises(Exception, match="calibrate"):
        export_checkpoint(ckpt, tmp_path / "int8", "int8", check=PEOPLE)
    manifest = export_checkpoint(ckpt, tmp_path / "int8", "int8", check=PEOPLE, calibrate=PEOPLE, min_cosine=0.9)
    assert manifest["precision"] == "int8" and manifest["networks"][0]["check"]["min_cosine"] > 0.9
    graph = onnx.load(str(tmp_path / "int8" / manifest["networks"][0]["file"]))
    assert any(n.op_type == "QuantizeLinear" for n in graph.graph.node)
    assert json.loads({p.key: p.value for p in graph.metadata_props}["facematch.meta"])["input"]["size"] == 32
    exported, _ = load_bundle(tmp_path / "int8")
    assert exported.precision == "int8" and exported.describe()["precision"] == "int8"


def test_an_export_that_disagrees_with_pytorch_is_refused_and_nothing_is_written(tmp_path):
    ckpt = tiny_checkpoint(tmp_path)
    with pytest.raises(ExportError, match="does not agree with PyTorch.*nothing written"):
        export_checkpoint(ckpt, tmp_path / "export", "fp16", check=PEOPLE, min_cosine=1.5)
    assert not (tmp_path / "export").exists() and not list(tmp_path.glob(".export_*"))


def test_a_bad_export_is_a_clear_error_naming_the_file(tmp_path):
    export_checkpoint(tiny_checkpoint(tmp_path), tmp_path / "export", check=PEOPLE)
    folder = tmp_path / "export"
    manifest = json.loads((folder / "model.json").read_text())
    onnx_file = folder / manifest["networks"][0]["file"]
    with pytest.raises(OnnxModelError, match="no exported model here"):
        load_bundle(tmp_path)
    shutil.copytree(folder, tmp_path / "damaged")
    (tmp_path / "damaged" / onnx_file.name).write_bytes(b"not an onnx file")
    with pytest.raises(OnnxModelError, match=f"{onnx_file.name}.*sha256 differs"):
        load_bundle(tmp_path / "damaged")
    manifest["networks"][0]["sha256"] = ""  # a file that is not ONNX at all, its checksum not asked for
    (tmp_path / "damaged" / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(OnnxModelError, match=f"{onnx_file.name}: not a network ONNX Runtime can run"):
        load_bundle(tmp_path / "damaged")
    manifest["networks"][0]["meta"]["input"]["size"] = 64  # a file that does not fit its meta
    shutil.copy(onnx_file, tmp_path / "damaged" / onnx_file.name)
    (tmp_path / "damaged" / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(OnnxModelError, match=r"expected one input of shape \(batch, 3, 64, 64\)"):
        load_bundle(tmp_path / "damaged")
    (tmp_path / "damaged" / "model.json").write_text("{not json")
    with pytest.raises(OnnxModelError, match="model.json: cannot read it"):
        load_bundle(tmp_path / "damaged")
    (tmp_path / "damaged" / "model.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(OnnxModelError, match="not a facematch export"):
        load_bundle(tmp_path / "damaged")


def test_runtime_onnx_exports_a_checkpoint_once_and_request_send_ranks_without_pytorchs_network(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    comp = tmp_path / "comp"
    assert split.main(["--people", str(PEOPLE), "--out", str(comp), "split.test_fraction=0.4",
                       "split.queries_per_person=1"]) == 0
    ckpt = tiny_checkpoint(tmp_path)
    common = [f"data.cache_dir={tmp_path / 'cache'}", f"data.embedding_cache={tmp_path / 'emb.sqlite'}",
              f"data.train_dir={comp / 'train'}", "retrieval.k=5"]
    payloads = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"{runtime}.json"
        if runtime == "onnx":  # exported first (by PyTorch's tracer); then PyTorch may crop, never embed
            model, cfg, _ = load_for_inference(ckpt, overrides=["model.runtime=onnx", *common])
            assert isinstance(model, OnnxNet) and cfg["model"]["runtime"] == "onnx"

            def refuse(*_a, **_k):
                raise AssertionError("PyTorch ran the network")
            monkeypatch.setattr(EmbeddingNet, "forward", refuse)
            monkeypatch.setattr("torchnet.embed_loop.embed", refuse)
        assert request_send.main(["--checkpoint", str(ckpt), "--test", str(comp / "test"), "--out", str(out),
                                  "--dry-run", f"model.runtime={runtime}", "model.threads=1", *common]) == 0
        payloads[runtime] = json.loads(out.read_text())
    assert payloads["onnx"] == payloads["torch"]
    exports = list((tmp_path / "xdg" / "facematch" / "onnx").iterdir())
    assert len(exports) == 1 and is_bundle(exports[0])
    assert model.source == exports[0]  # made once, used by the request_send run
    # The export itself, given as the checkpoint, runs in ONNX Runtime whatever model.runtime says
    assert request_send.main(["--checkpoint", str(exports[0]), "--test", str(comp / "test"), "--out",
                              str(tmp_path / "bundle.json"), "--dry-run", *common]) == 0
    assert json.loads((tmp_path / "bundle.json").read_text()) == payloads["torch"]
    # An export written by an older to_onnx (another graph) is not reused: the checkpoint is exported again
    monkeypatch.undo()  # PyTorch runs the network again (an export is checked against it)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("deploy.export.GRAPH_VERSION", 10 ** 6)
    again, _, _ = load_for_inference(ckpt, overrides=["model.runtime=onnx", *common])
    assert again.source != model.source and again.source.name.endswith("_g1000000") and is_bundle(again.source)


def test_facematch_export_command_prints_the_agreement(tmp_path, capsys):
    from cli import export_model as export

    ckpt = tiny_checkpoint(tmp_path)
    assert export.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "e"), "--check", str(PEOPLE)]) == 0
    out = capsys.readouterr().out
    assert "resnet18 (fp32), against PyTorch on" in out and "least cosine 1.0000" in out
    assert export.main(["--checkpoint", str(tmp_path / "e"), "--out", str(tmp_path / "f")]) == 2
    assert "already an export" in capsys.readouterr().err


def test_a_store_built_with_runtime_onnx_embeds_its_queries_in_onnx_runtime(tmp_path, monkeypatch):
    from cli import gallery
    from pipeline.store import GalleryStore

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ckpt = tiny_checkpoint(tmp_path)
    people = sorted(PEOPLE.iterdir())
    assert gallery.main(["build", "--store", str(tmp_path / "store"), "--checkpoint", str(ckpt), "--allow-no-face",
                         *map(str, people[:3]), "model.runtime=onnx"]) == 0
    store = GalleryStore.open(tmp_path / "store")
    assert isinstance(store.model(), OnnxNet) and is_bundle(store.meta["checkpoint"])
    monkeypatch.setattr(EmbeddingNet, "forward", lambda *a: pytest.fail("PyTorch ran the network"))
    photo = sorted(people[0].iterdir())[0]
    query = store.embed([photo], "query")
    ids = store.vectors()[0][np.argsort(-(store.vectors()[2] @ query.embeddings[0]))]
    assert store.conn.execute("SELECT name FROM photos WHERE id = ?", (int(ids[0]),)).fetchone()[0] == photo.name


def test_the_exports_model_runtime_onnx_makes_are_pruned_to_the_most_recently_used(tmp_path):
    import os

    from deploy.export import EXPORTS_KEPT, prune_exports

    for i in range(EXPORTS_KEPT + 3):
        (tmp_path / f"e{i}").mkdir()
        (tmp_path / f"e{i}" / "model.json").write_text("{}")
        os.utime(tmp_path / f"e{i}", (1000 + i, 1000 + i))
    (tmp_path / "not_an_export").mkdir()
    removed = prune_exports(tmp_path)
    assert sorted(p.name for p in removed) == ["e0", "e1", "e2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"e{i}" for i in range(3, EXPORTS_KEPT + 3)] + ["not_an_export"])


def test_one_preprocessing_for_both_runtimes_bit_for_bit():
    from dataset import eval_transform
    from runtime import batch_input, model_input

    inp = {"size": 48, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "max_pixel_value": 255.0}
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (h, h, 3), dtype=np.uint8) for h in (48, 40, 150)]
    by_hand = np.stack([model_input(c, inp).transpose(2, 0, 1) for c in crops])
    assert np.array_equal(batch_input(crops, inp), by_hand)  # the uint8 look-up gives the arithmetic's bits
    assert np.array_equal(batch_input(crops, inp, mirror=True), by_hand[..., ::-1])
    assert np.array_equal(batch_input([c.astype(np.float32) for c in crops[:1]], inp), by_hand[:1])
    assert np.array_equal(eval_transform(inp)(image=crops[2])["image"].numpy(), by_hand[2])  # PyTorch's transform
    assert abs(float(by_hand[0, 0].mean()) - (crops[0][..., 0].mean() / 255 - 0.485) / 0.229) < 1e-4


def test_prelus_become_scales_onnx_runtime_keeps_in_its_layout(tmp_path):
    """PRelu(x, slope) becomes (1 − slope) · Relu(x) + slope · x, the products BatchNormalizations (one slope per
    channel, and one for all): no PRelu left, the same numbers to float32 rounding, none of ONNX Runtime's layout
    conversions left between the convolutions."""
    import onnx
    import onnxruntime as ort

    from deploy.export import prelus_as_scales

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.PReLU(16), torch.nn.Conv2d(16, 16, 3),
                              torch.nn.PReLU(), torch.nn.Conv2d(16, 16, 1))
    with torch.no_grad():
        net[1].weight.uniform_(-0.5, 3)  # slopes above 1 too, as the MobileFaceNets have
    path = tmp_path / "prelu.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3, 16, 16),), str(path), input_names=["x"], opset_version=17, dynamo=False)
    graph = onnx.load(str(path))
    assert prelus_as_scales(graph) == 2
    assert "PRelu" not in {n.op_type for n in graph.graph.node}
    onnx.checker.check_model(graph)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)

    def session(model: str | bytes, optimized: Path):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(optimized)  # the graph ONNX Runtime runs, its layout conversions shown
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def conversions(optimized: Path) -> int:
        return sum(n.op_type in ("ReorderInput", "ReorderOutput") for n in onnx.load(str(optimized)).graph.node)

    before = session(str(path), tmp_path / "before.onnx").run(None, {"x": x})[0]
    after = session(graph.SerializeToString(), tmp_path / "after.onnx").run(None, {"x": x})[0]
    assert conversions(tmp_path / "after.onnx") <= 2 < conversions(tmp_path / "before.onnx")  # in once, out once
    assert np.abs(before - after).max() <= 1e-5 and np.abs(net(torch.from_numpy(x)).detach().numpy() - after).max() < 1e-5
