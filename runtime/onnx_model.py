"""Exported face networks run by ONNX Runtime on the CPU, without PyTorch: a model is a folder (deploy/export.py writes
it) holding `model.json` (what each network is, its preprocessing and crop settings, a fusion's weights, the calibration,
the config it was trained with) and one `.onnx` file per network (each also carrying its own meta in its metadata).

    model, cfg = load_bundle("exports/best")          # (OnnxNet or OnnxFusion, the checkpoint's config)
    emb = embed(model, crops, batch_size=16, tta="flip")

A loaded model answers runtime.FaceModel as network.EmbeddingNet and network.FusedNet do, so pipeline.embedding, the
store, the page and request_send.py embed with it unchanged.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from detection import load_crop
from runtime.embedding_settings import batch_setting, check_tta
from runtime.face_model import SingleNetwork
from runtime.fused import Fusion
from runtime.preprocess import batch_input
from utils import FacematchError, progress

BUNDLE_FILE = "model.json"
FORMAT = "facematch-onnx"
VERSION = 1
PRECISIONS = ("fp32", "int8", "fp16")
ONNX_BATCH = 16  # batch size auto for an exported model: ONNX Runtime on the CPU gains nothing from more


class OnnxModelError(FacematchError, RuntimeError):
    """An exported model that cannot be read, or whose files do not fit its model.json."""


def session_options(threads: int = 0):
    """ONNX Runtime's session settings for facematch: `threads` intra-op threads (0: one per core, its default), one
    inter-op thread, sequential execution, every graph optimisation (bench/onnx_runtime.py measures with these)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers and the like are not the user's business
    return options


class OnnxNet(SingleNetwork):
    """One exported network: an ONNX Runtime session over its file, with the preprocessing it was trained with
    (`meta`: input and crop settings, as network.EmbeddingNet.meta). State is real (a session), hence a class."""

    def __init__(self, path: str | Path, meta: dict, info: dict, threads: int = 0, precision: str = "fp32",
                 sha256: str = ""):
        """The network in the file at `path`; `sha256`: the content model.json was written for (checked, if given)."""
        import onnxruntime as ort

        self.path, self.meta, self.info, self.precision = Path(path), meta, info, precision
        self.arch = str(info.get("arch", "onnx"))
        self.embedding_size = int(info["embedding_size"])
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise OnnxModelError(f"{self.path}: cannot read the exported network ({exc.strerror})") from None
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise OnnxModelError(f"{self.path}: its content is not the one model.json was written for (sha256 differs): "
                                 f"export the model again")
        try:
            self.session = ort.InferenceSession(data, session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...) share no base class
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc.__class__.__name__
            raise OnnxModelError(f"{self.path}: not a network ONNX Runtime can run ({first})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        side = int(meta["input"]["size"])
        shape = inputs[0].shape if len(inputs) == 1 else None
        if shape is None or len(shape) != 4 or [s for s in shape[1:]] != [3, side, side] or len(outputs) != 1:
            raise OnnxModelError(f"{self.path}: expected one input of shape (batch, 3, {side}, {side}) and one output, "
                                 f"found inputs {[(i.name, i.shape) for i in inputs]} and {len(outputs)} outputs")
        if outputs[0].shape[-1] != self.embedding_size:
            raise OnnxModelError(f"{self.path}: its output has {outputs[0].shape[-1]} numbers, model.json says "
                                 f"{self.embedding_size}")
        self.input_name = inputs[0].name
        content = {k: v for k, v in meta.items() if k != "calibration"}  # thresholds do not change an embedding
        self._fingerprint = hashlib.sha256(data + repr((info, content)).encode()).hexdigest()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The network on a preprocessed (N, 3, size, size) float32 batch: (N, D) float32 unit vectors."""
        return np.asarray(self.session.run(None, {self.input_name: batch})[0], dtype=np.float32)

    def embed_crops(self, crops: list, batch_size: int | str = "auto", tta: str = "none", *, device=None,
                    desc: str = "embedding", num_workers: int = 0) -> np.ndarray:
        """Crops embedded in ONNX Runtime (runtime.FaceNetwork.embed_crops; batch_size auto: ONNX_BATCH; the CPU
        whatever `device` says; decoding in this process)."""
        batch = batch_setting(batch_size) or ONNX_BATCH
        return embed(self, crops, batch, desc=desc, tta=tta)

    def content_fingerprint(self) -> str:
        """sha256 of its file and preprocessing: another fingerprint than its checkpoint's (its numbers differ a
        little)."""
        return self._fingerprint

    def describe(self) -> dict:
        """What the network is (as network.EmbeddingNet.describe), and how it runs."""
        return {**self.info, "runtime": "onnx", "precision": self.precision}


class OnnxFusion(Fusion):
    """Exported networks fused as network.FusedNet fuses them: each on its own crops, their unit embeddings side by
    side, weighted (runtime.FaceModel: networks() embed, fuse() joins them)."""

    def __init__(self, members: list[OnnxNet], weights: list[float], calibration: dict | None = None):
        self.members, self.precision = members, members[0].precision
        self.fuse_members(weights)
        if calibration:
            self.meta["calibration"] = calibration
        self._fingerprint = hashlib.sha256(
            "".join(m.content_fingerprint() for m in members).encode() + repr(self.weights).encode()).hexdigest()

    def content_fingerprint(self) -> str:
        """sha256 of its members' fingerprints and its weights."""
        return self._fingerprint

    def describe(self) -> dict:
        """What the fusion is (its members, their weights), and that it runs in ONNX Runtime."""
        return {**super().describe(), "runtime": "onnx"}


def is_bundle(path: str | Path) -> bool:
    """Whether `path` names an exported model: its folder (holding model.json) or its model.json."""
    path = Path(path)
    return (path / BUNDLE_FILE).is_file() or (path.name == BUNDLE_FILE and path.is_file())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_crop(crop: dict, folder: Path) -> dict:
    """A network's crop settings with a landmark network the bundle carries named by its content
    (detection.landmark_net.keep: sha256:<hex>), as a checkpoint's are."""
    from detection import landmark_net

    crop = copy.deepcopy(crop)
    name = crop.get("landmark_net")
    if crop.get("landmarks") == "net" and name and (folder / str(name)).is_file():
        crop["landmark_net"] = landmark_net.keep((folder / str(name)).read_bytes())
    return crop


def load_bundle(path: str | Path, threads: int | None = None) -> tuple[OnnxNet | OnnxFusion, dict]:
    """The exported model at `path` (its folder or its model.json) and the config it was trained with. Every file is
    checked against model.json (format, sha256, shapes): a wrong or damaged file is an OnnxModelError naming it.
    `threads`: ONNX Runtime's intra-op threads (None: $OMP_NUM_THREADS if set, else one per core)."""
    path = Path(path)
    manifest_path = path if path.name == BUNDLE_FILE else path / BUNDLE_FILE
    folder = manifest_path.parent
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise OnnxModelError(f"{path}: no exported model here (no {BUNDLE_FILE}; `facematch export` writes one)") from None
    except (OSError, ValueError) as exc:
        raise OnnxModelError(f"{manifest_path}: cannot read it ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OnnxModelError(f"{manifest_path}: not a facematch export (its format is not {FORMAT!r})")
    if int(manifest.get("version", 0)) > VERSION:
        raise OnnxModelError(f"{manifest_path}: written by a newer facematch (format version {manifest['version']}, "
                             f"this one reads {VERSION})")
    if threads is None:
        threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
    precision = str(manifest.get("precision", "fp32"))
    members = []
    try:
        networks = manifest["networks"]
        for net in networks:
            file = folder / net["file"]
            if not file.is_file():
                raise OnnxModelError(f"{file}: missing (named by {manifest_path})")
            meta = {**copy.deepcopy(net["meta"]), "crop": bundle_crop(net["meta"]["crop"], folder)}
            members.append(OnnxNet(file, meta, net["info"], threads, precision, net.get("sha256", "")))
    except (KeyError, TypeError) as exc:
        raise OnnxModelError(f"{manifest_path}: incomplete ({exc.__class__.__name__}: {exc})") from None
    if not members:
        raise OnnxModelError(f"{manifest_path}: names no network")
    calibration = manifest.get("calibration")
    if len(members) == 1:
        model = members[0]
        if calibration:
            model.meta["calibration"] = calibration
    else:
        model = OnnxFusion(members, manifest["weights"], calibration)
    model.source = folder
    return model, manifest.get("config") or {}


def embed(model: OnnxNet, crops: list[np.ndarray | Path], batch_size: int = 16, desc: str = "embedding",
          tta: str = "none", mirror: bool = False) -> np.ndarray:
    """Face crops (RGB arrays, or crop files read as they come) embedded by an exported network, preprocessed as its
    meta says: an (N, D) float32 array of unit vectors, as network.embed answers for PyTorch. tta='flip' averages each crop's
    embedding with its mirror image's (one run over both) and normalises again; mirror=True embeds the mirror images."""
    check_tta(tta)
    out = np.zeros((len(crops), model.embedding_size), dtype=np.float32)
    inp = model.meta["input"]
    starts = range(0, len(crops), max(1, int(batch_size)))
    for start in progress(starts, desc=desc, unit="batch", disable=len(starts) < 5):
        batch = batch_input([load_crop(c) for c in crops[start:start + batch_size]], inp, mirror)
        if tta == "flip":
            both = model.run(np.concatenate([batch, np.ascontiguousarray(batch[..., ::-1])]))
            emb = both[:len(batch)] + both[len(batch):]
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        else:
            emb = model.run(batch)
        out[start:start + len(batch)] = emb
    return out
