"""A facematch checkpoint as ONNX files ONNX Runtime runs without PyTorch (runtime/onnx_model.py reads them), checked
against PyTorch on real chips before anything is written, optionally quantised (deploy/quantize.py).

    python -m cli export --checkpoint checkpoints/best/best.pt --out exports/best                  # fp32
    python -m cli export --checkpoint checkpoints/best/best.pt --out exports/best_int8 --precision int8

The folder holds model.json (each network's meta: input and crop settings; a fusion's weights; the calibration; the
checkpoint's config; the export check's figures) and one .onnx per network (its meta in the file's metadata too), plus
the landmark network a crop section names, so the folder alone crops and embeds as the checkpoint did.
"""
from __future__ import annotations

import copy
import json
import os
import random
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from deploy.quantize import convert_fp16, quantize_int8
from detection import crop_paths, landmark_net, list_images
from network import CheckpointError, EmbeddingNet, model_from_checkpoint, read_checkpoint
from runtime import BUNDLE_FILE, OnnxNet, batch_input, is_bundle
from runtime.onnx_model import FORMAT, PRECISIONS, VERSION, file_sha256
from utils import ConfigError, DataError, FacematchError, get_logger, user_cache

log = get_logger()
OPSET = 17
# The least cosine between an exported network's embedding of a chip and PyTorch's, per precision, and fp32's largest
# difference in any number: bench/RESULTS.md "ONNX" shows what each precision gives on real chips.
MIN_COSINE = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.97}
MAX_ABS_FP32 = 1e-4
CHECK_CHIPS, CALIBRATION_CHIPS = 24, 96


class ExportError(FacematchError, RuntimeError):
    """An export whose ONNX Runtime output does not agree with PyTorch's, or that cannot be written."""


def to_onnx(net: EmbeddingNet, path: Path, meta: dict) -> None:
    """One network as an ONNX graph (the TorchScript exporter, opset 17, a dynamic batch), `meta` (its preprocessing,
    as the export names its files) and its info in the file's metadata props ('facematch.meta', 'facematch.info') so the
    file alone says how to feed it."""
    import onnx

    side = int(net.meta["input"]["size"])
    net = net.eval()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow in backbones: fixed shapes here
        torch.onnx.export(net, (torch.zeros(2, 3, side, side),), str(path), input_names=["input"],
                          output_names=["embedding"], dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    graph = onnx.load(str(path))
    fuse_relu_clips(graph.graph)
    prelus_as_scales(graph)
    onnx.helper.set_model_props(graph, {"facematch.meta": json.dumps(meta),
                                        "facematch.info": json.dumps(net.describe())})
    onnx.save(graph, str(path))


def graph_constants(graph) -> dict:
    """The graph's constant tensors by name: initialisers, Constant nodes, and Identity nodes over either."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in out:
            out[node.output[0]] = out[node.input[0]]
    return out


def fuse_relu_clips(graph) -> int:
    """Relu → Min(hi) → Max(lo) (TF's ReLU6 as the FaceRes graph spells it, lo ≤ 0 ≤ hi) rewritten in place as one
    Clip(0, hi), which ONNX Runtime fuses into the convolution before it: the three ops kept it converting every
    activation out of and back into its blocked layout (FaceRes: 29 → 19 ms a chip, one thread). Written here: it is
    one pattern, and the rewriters that know patterns (onnxscript's) would be a dependency for these lines.
    Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    constants = graph_constants(graph)
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def only_user(node, op: str):
        nxt = users.get(node.output[0], [])
        return nxt[0] if len(nxt) == 1 and nxt[0].op_type == op and len(nxt[0].input) == 2 else None

    replaced, dropped = {}, set()
    for relu in graph.node:
        low = high = None
        if relu.op_type == "Relu" and (smaller := only_user(relu, "Min")) and (larger := only_user(smaller, "Max")):
            high, low = constants.get(smaller.input[1]), constants.get(larger.input[1])
        if high is None or low is None or high.size != 1 or low.size != 1 or float(low) > 0 or float(high) < 0:
            continue
        name = f"{larger.output[0]}/relu6"
        bounds = [numpy_helper.from_array(np.array(v, np.float32), f"{name}/{end}")
                  for v, end in ((0.0, "min"), (float(high.reshape(-1)[0]), "max"))]
        graph.initializer.extend(bounds)
        replaced[id(relu)] = helper.make_node("Clip", [relu.input[0], *(b.name for b in bounds)], [larger.output[0]],
                                              name=name)
        dropped |= {id(smaller), id(larger)}
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(replaced)


def prelus_as_scales(model) -> int:
    """Every PRelu(x, slope) with a constant slope rewritten in place as (1 − slope) · Relu(x) + slope · x, each
    product a BatchNormalization (mean 0, variance 1, ε 0): the same numbers to float32 rounding. ONNX Runtime runs
    PRelu, and Min or Mul by a per-channel constant, outside its blocked layout, converting every activation out of
    it and back, while it runs a BatchNormalization inside it as a 1×1 depthwise convolution (the MobileFaceNets'
    33 PReLUs, one thread: 16.5 ms a chip as PRelu, 10.9 as Relu + slope · Min(x, 0), about a quarter less this way:
    bench/RESULTS.md "mobilefacenet"). Written here for the reason fuse_relu_clips is. Returns how many were
    rewritten."""
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    if not any(node.op_type == "PRelu" for node in graph.node):
        return 0
    constants = graph_constants(graph)
    channels = {v.name: v.type.tensor_type.shape.dim[1].dim_value
                for v in shape_inference.infer_shapes(model).graph.value_info
                if len(v.type.tensor_type.shape.dim) > 1}

    def scaled(inp: str, scale: np.ndarray, name: str):
        """inp · scale per channel, as a BatchNormalization whose other numbers change nothing."""
        fixed = {"scale": scale, "bias": np.zeros_like(scale), "mean": np.zeros_like(scale),
                 "var": np.ones_like(scale)}
        graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(v), f"{name}/{k}")
                                 for k, v in fixed.items())
        return helper.make_node("BatchNormalization", [inp, *(f"{name}/{k}" for k in fixed)], [name], name=name,
                                epsilon=0.0)

    nodes, slopes, rewritten = [], set(), 0
    for node in graph.node:
        slope = constants.get(node.input[1]) if node.op_type == "PRelu" else None
        count = 0 if slope is None else slope.size if slope.size > 1 else channels.get(node.input[0], 0)
        if not count:  # not a PRelu, a slope computed at run time, or channels unknown: left as it is
            nodes.append(node)
            continue
        slope = np.broadcast_to(slope.reshape(-1).astype(np.float32), (count,))
        x, out, name = node.input[0], node.output[0], node.name or node.output[0]
        slopes.add(node.input[1])
        nodes += [helper.make_node("Relu", [x], [f"{name}/relu"], name=f"{name}/relu"),
                  scaled(f"{name}/relu", 1 - slope, f"{name}/positive"), scaled(x, slope, f"{name}/linear"),
                  helper.make_node("Add", [f"{name}/positive", f"{name}/linear"], [out], name=f"{name}/add")]
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [t for t in graph.initializer if t.name in used or t.name not in slopes]  # ONNX Runtime warns of unused ones
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return rewritten


def meta_of(net: EmbeddingNet) -> dict:
    """A network's preprocessing, without a calibration (the model's, kept once in model.json)."""
    return {k: copy.deepcopy(v) for k, v in net.meta.items() if k != "calibration"}


def sample_chips(folder: str | Path, net: EmbeddingNet, n: int, seed: int = 0) -> list[np.ndarray]:
    """Up to `n` chips cropped as `net` was trained to, from photos drawn (seeded) from `folder` and its sub-folders."""
    photos = list_images(folder, recursive=True)
    if not photos:
        raise DataError(f"{folder}: no photos to make chips from")
    picked = sorted(random.Random(seed).sample(photos, min(n, len(photos))))
    crops, _ = crop_paths(picked, net.crop_settings(), None, desc=f"chips from {Path(folder).name}")
    chips = [c for c in crops if c is not None]
    if not chips:
        raise DataError(f"{folder}: no face found in the {len(picked)} photos drawn")
    return chips


def agreement(net: EmbeddingNet, onnx_net: OnnxNet, chips: list[np.ndarray]) -> dict:
    """PyTorch's and ONNX Runtime's embeddings of the same preprocessed chips: the largest difference in any number and
    the least cosine between a chip's two embeddings."""
    batch = batch_input(chips, net.meta["input"])
    with torch.inference_mode():
        ref = net.eval()(torch.from_numpy(batch)).numpy()
    got = onnx_net.run(batch)
    return {"chips": len(chips), "max_abs": float(np.abs(got - ref).max()),
            "min_cosine": float(np.min(np.sum(got * ref, axis=1)))}


def export_checkpoint(checkpoint: str | Path, out: str | Path, precision: str = "fp32",
                      check: str | Path = "data/sample", calibrate: str | Path | None = None,
                      min_cosine: float | None = None) -> dict:
    """Export `checkpoint` into the folder `out` (model.json + one .onnx per network) at `precision` (runtime's
    PRECISIONS), quantised on chips of `calibrate`'s photos (int8: training people's photos), and check every network's
    ONNX Runtime output against PyTorch's on chips of `check`'s photos: refused (ExportError, nothing written) below
    `min_cosine` (MIN_COSINE by default) or, in fp32, above MAX_ABS_FP32. Returns model.json's content."""
    if precision not in PRECISIONS:
        raise ConfigError(f"model.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and not calibrate:
        raise ConfigError("int8 needs photos to calibrate on: --calibrate FOLDER (training people's photos)")
    if is_bundle(checkpoint):
        raise ConfigError(f"{checkpoint} is already an export: export its checkpoint (.pt) instead")
    ckpt = read_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(checkpoint, ckpt=ckpt)
    least = MIN_COSINE[precision] if min_cosine is None else float(min_cosine)
    out = Path(out)
    work = Path(tempfile.mkdtemp(prefix=".export_", dir=out.parent if out.parent.is_dir() else None))
    try:
        networks, carried = [], {}
        for i, net in enumerate(model.networks()):
            name = f"network{i}_{net.arch}.onnx"
            log.info(f"exporting {net.arch} ({precision}) to {out / name}")
            meta = meta_of(net)
            meta["crop"] = carry_landmark_net(meta["crop"], work, carried)  # named as the export carries it
            to_onnx(net, work / name, meta)
            if precision == "int8":
                quantize_int8(work / name, sample_chips(calibrate, net, CALIBRATION_CHIPS), net.meta["input"])
            elif precision == "fp16":
                convert_fp16(work / name)
            onnx_net = OnnxNet(work / name, net.meta, net.describe(), precision=precision)
            figures = agreement(net, onnx_net, sample_chips(check, net, CHECK_CHIPS, seed=1))
            log.info(f"{net.arch} in ONNX Runtime ({precision}) against PyTorch on {figures['chips']} chips of "
                     f"{check}: largest difference {figures['max_abs']:.2e}, least cosine {figures['min_cosine']:.6f}")
            if figures["min_cosine"] < least or (precision == "fp32" and figures["max_abs"] > MAX_ABS_FP32):
                raise ExportError(
                    f"{checkpoint}: {net.arch} exported ({precision}) does not agree with PyTorch on {check}'s chips "
                    f"(least cosine {figures['min_cosine']:.6f}, needed {least}; largest difference "
                    f"{figures['max_abs']:.2e}{f', needed {MAX_ABS_FP32:g}' if precision == 'fp32' else ''}): "
                    f"nothing written")
            networks.append({"file": name, "sha256": file_sha256(work / name), "meta": meta,
                             "info": net.describe(), "check": figures})
        manifest = {"format": FORMAT, "version": VERSION, "precision": precision, "opset": OPSET,
                    "source": {"checkpoint": str(checkpoint), "sha256": file_sha256(Path(checkpoint))},
                    "networks": networks, "config": ckpt["config"],
                    "calibrated_on": str(calibrate) if precision == "int8" else None}
        if len(model.networks()) > 1:
            manifest["weights"] = model.weights
        if "calibration" in model.meta:
            manifest["calibration"] = model.meta["calibration"]
        (work / BUNDLE_FILE).write_text(json.dumps(manifest, indent=1))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.chmod(work, 0o755)  # mkdtemp made it private; an export is shared like any output
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def carry_landmark_net(crop: dict, folder: Path, carried: dict) -> dict:
    """A crop section whose points come from a landmark network file, with that file copied into the export (named by
    its content) and named relative to it."""
    crop = copy.deepcopy(crop)
    if crop.get("landmarks") != "net" or not crop.get("landmark_net"):
        return crop
    source = landmark_net.resolve(crop["landmark_net"])
    name = f"landmark_net_{landmark_net.file_sha256(crop['landmark_net'])[:16]}.pt"
    if name not in carried:
        (folder / name).write_bytes(source.read_bytes())
        carried[name] = source
    crop["landmark_net"] = name
    return crop


def export_cache() -> Path:
    """Where model.runtime: onnx keeps the exports it makes ($XDG_CACHE_HOME/facematch/onnx)."""
    return user_cache("onnx")


EXPORTS_KEPT = 8  # model.runtime: onnx's exports kept in export_cache(), the most recently used (make demo retrains)
GRAPH_VERSION = 2  # raised whenever to_onnx writes another graph, so the exports kept are made again (2: prelus_as_scales)


def prune_exports(folder: Path, keep: int = EXPORTS_KEPT) -> list[Path]:
    """Remove all but the `keep` most recently used exports in `folder`; returns those removed."""
    found = sorted((p for p in folder.iterdir() if is_bundle(p)), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in found[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return found[keep:]


def exported(checkpoint: str | Path, precision: str = "fp32", calibrate: str | Path | None = None) -> Path:
    """The export of `checkpoint` at `precision` for model.runtime: onnx, made once (checked as export_checkpoint
    checks) and kept in export_cache() under the checkpoint's content and GRAPH_VERSION: a retrained checkpoint, or
    one exported by an older to_onnx, is exported again, and only the EXPORTS_KEPT most recently used are kept."""
    try:
        digest = file_sha256(Path(checkpoint))
    except OSError as exc:
        raise CheckpointError(f"{checkpoint}: cannot read checkpoint ({exc.strerror})") from None
    folder = export_cache() / f"{digest[:24]}_{precision}_g{GRAPH_VERSION}"
    if not is_bundle(folder):
        log.info(f"model.runtime onnx: exporting {checkpoint} ({precision}) once, into {folder}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        export_checkpoint(checkpoint, folder, precision, calibrate=calibrate)
    os.utime(folder)  # used now: the last to be pruned
    prune_exports(folder.parent)
    return folder
