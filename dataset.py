"""Photos to training batches: image reading, Haar-cascade face cropping with a disk cache,
identity folders and splits, the P×K batch sampler and the albumentations transforms."""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network at run time: skip its version check

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError
from tqdm import tqdm

from utils import FacematchError, atomic_write, get_logger

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
CROP_KEYS = ("cascade", "scale_factor", "min_neighbors", "min_size", "margin", "size")
log = get_logger()


class ImageReadError(FacematchError, ValueError):
    """An image file that cannot be decoded; the message names the file."""


class DataError(FacematchError, ValueError):
    """A data folder that cannot be used (missing, empty, no identities); the message names it."""


# ---------------------------------------------------------------- reading and cropping

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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None


_cascades: dict[str, cv2.CascadeClassifier] = {}


def _cascade(name: str) -> cv2.CascadeClassifier:
    if name not in _cascades:
        path = name if os.path.exists(name) else os.path.join(cv2.data.haarcascades, name)
        classifier = cv2.CascadeClassifier(path)
        if classifier.empty():
            raise DataError(f"cannot load Haar cascade '{name}' (looked for {path})")
        _cascades[name] = classifier
    return _cascades[name]


def detect_faces(image: np.ndarray, crop_cfg: dict) -> np.ndarray:
    """Face boxes (x, y, w, h) found by the Haar cascade, largest first."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    size = int(crop_cfg["min_size"])
    boxes = _cascade(crop_cfg["cascade"]).detectMultiScale(
        gray, scaleFactor=float(crop_cfg["scale_factor"]),
        minNeighbors=int(crop_cfg["min_neighbors"]), minSize=(size, size))
    boxes = np.asarray(boxes, dtype=int).reshape(-1, 4)
    return boxes[np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")]


def square_crop(image: np.ndarray, box: tuple[int, int, int, int] | None, margin: float,
                size: int) -> np.ndarray:
    """Cut a square around `box` grown by `margin` on every side (or the centred square when
    box is None), padding with the edge pixels where it leaves the photo, resized to size×size."""
    h, w = image.shape[:2]
    if box is None:
        side = min(h, w)
        cx, cy = w / 2, h / 2
    else:
        x, y, bw, bh = box
        side = max(bw, bh) * (1 + 2 * margin)
        cx, cy = x + bw / 2, y + bh / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = int(round(side))
    pad = max(0, -x0, -y0, x0 + s - w, y0 + s - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    crop = image[y0:y0 + s, x0:x0 + s]
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def crop_face(image: np.ndarray, crop_cfg: dict) -> tuple[np.ndarray, str]:
    """Crop the largest face. Status: 'face', 'several' (largest kept) or 'none' (centre crop)."""
    boxes = detect_faces(image, crop_cfg)
    status = "none" if len(boxes) == 0 else ("face" if len(boxes) == 1 else "several")
    box = tuple(boxes[0]) if len(boxes) else None
    return square_crop(image, box, float(crop_cfg["margin"]), int(crop_cfg["size"])), status


def crop_key(data: bytes, crop_cfg: dict) -> str:
    """Cache key: the file's content and every parameter that changes the crop."""
    params = json.dumps({k: crop_cfg[k] for k in CROP_KEYS}, sort_keys=True)
    return hashlib.sha1(data + b"\0" + params.encode()).hexdigest()


@dataclass
class CropReport:
    """What happened to each photo of a cropping pass, so nothing is hidden."""
    counts: Counter = field(default_factory=Counter)
    no_face: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        c = self.counts
        total = sum(v for k, v in c.items() if k != "cached")
        text = (f"{total} photos: {c['face']} one face, {c['several']} several faces "
                f"(largest kept), {c['none']} no face (centre crop), {c['failed']} unreadable, "
                f"{c['cached']} from cache")
        if self.no_face:
            text += "\n  no face found in: " + ", ".join(self.no_face[:10])
            text += f" (+{len(self.no_face) - 10} more)" if len(self.no_face) > 10 else ""
        if self.failed:
            text += "\n  skipped, unreadable: " + ", ".join(self.failed[:10])
            text += f" (+{len(self.failed) - 10} more)" if len(self.failed) > 10 else ""
        return text


def _save_crop(path: Path, crop: np.ndarray, status: str, source: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("facematch_status", status)
    info.add_text("facematch_source", source)
    atomic_write(path, lambda tmp: Image.fromarray(crop).save(tmp, format="PNG", pnginfo=info))


def _load_crop(path: Path) -> tuple[np.ndarray, str] | None:
    try:
        with Image.open(path) as im:
            status = im.text.get("facematch_status")
            crop = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    return (crop, status) if status in ("face", "several", "none") else None


def crop_one(path: str | Path, crop_cfg: dict,
             cache_dir: str | Path | None) -> tuple[Path | np.ndarray, str, bool]:
    """Crop one photo through the cache: returns (cache file or crop array, status, from cache).

    Raises ImageReadError naming the file when it cannot be read.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror})") from None
    if cache_dir is not None:
        cached = Path(cache_dir) / f"{crop_key(data, crop_cfg)}.png"
        if cached.exists():
            hit = _load_crop(cached)
            if hit is not None:
                return cached, hit[1], True
    crop, status = crop_face(read_image(path), crop_cfg)
    if cache_dir is None:
        return crop, status, False
    _save_crop(cached, crop, status, path.name)
    return cached, status, False


def crop_paths(paths: list[str | Path], crop_cfg: dict, cache_dir: str | Path | None,
               desc: str = "cropping faces") -> tuple[list[Path | np.ndarray | None], CropReport]:
    """Crop many photos (cached), one entry per input; None where the photo could not be read
    and crop.on_error is 'skip'. Each crop is stored as soon as it is made, so an interrupted
    run keeps its work."""
    report = CropReport()
    out: list[Path | np.ndarray | None] = []
    for path in tqdm(paths, desc=desc, unit="img", leave=False,
                     disable=True if len(paths) < 20 else None):  # None: only on a terminal
        try:
            item, status, from_cache = crop_one(path, crop_cfg, cache_dir)
        except ImageReadError as exc:
            if crop_cfg.get("on_error", "skip") == "stop":
                raise
            warnings.warn(f"skipping {exc}", stacklevel=2)
            report.counts["failed"] += 1
            report.failed.append(str(path))
            out.append(None)
            continue
        report.counts["cached"] += from_cache
        report.counts[status] += 1
        if status == "none":
            report.no_face.append(str(path))
        out.append(item)
    return out, report


def load_crop(item: Path | np.ndarray) -> np.ndarray:
    """The crop array behind an entry of crop_paths (a cache file or the array itself)."""
    if isinstance(item, np.ndarray):
        return item
    return np.asarray(Image.open(item).convert("RGB"))


# ---------------------------------------------------------------- identity folders and splits

def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (and its sub-folders when recursive), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    return sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir())
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def list_identities(root: str | Path, min_photos: int = 1) -> dict[str, list[Path]]:
    """{person: [photo paths]} for every sub-folder of root with at least min_photos images."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected <root>/<person>/<photo>)")
    people: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = list_images(sub)
        if len(photos) < min_photos:
            if not photos:
                log.warning(f"{sub}: empty identity folder, skipped")
            continue
        people[sub.name] = photos
    if not people:
        raise DataError(f"{root}: no identity folder with {min_photos} or more photos")
    return people


def identity_split(people: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split identities (never photos) into (kept, held_out), held_out ≈ fraction of them."""
    order = sorted(people)
    random.Random(seed).shuffle(order)
    n_out = int(round(len(order) * fraction))
    if fraction > 0 and len(order) >= 2:
        n_out = min(max(n_out, 1), len(order) - 1)
    return sorted(order[n_out:]), sorted(order[:n_out])


# ---------------------------------------------------------------- transforms

def eval_transform(cfg: dict) -> A.Compose:
    """The one deterministic transform for validation, query and gallery images."""
    inp = cfg["input"]
    return A.Compose([
        A.Resize(inp["size"], inp["size"], interpolation=cv2.INTER_AREA),
        A.Normalize(mean=inp["mean"], std=inp["std"], max_pixel_value=255.0),
        ToTensorV2(),
    ])


def train_transform(cfg: dict) -> A.Compose:
    """Training augmentation followed by exactly the evaluation transform."""
    a = cfg["augment"]
    augment = [
        A.HorizontalFlip(p=a["hflip_p"]),
        A.ColorJitter(brightness=a["brightness"], contrast=a["contrast"],
                      saturation=a["saturation"], hue=a["hue"], p=a["color_p"]),
        A.RandomGamma(gamma_limit=tuple(a["gamma_limit"]), p=a["gamma_p"]),
        A.Affine(scale=tuple(a["scale"]), translate_percent=(-a["translate"], a["translate"]),
                 rotate=(-a["rotate"], a["rotate"]), border_mode=cv2.BORDER_REFLECT_101, p=a["affine_p"]),
        A.GaussianBlur(sigma_limit=tuple(a["blur_sigma"]), p=a["blur_p"]),
        A.CoarseDropout(num_holes_range=tuple(a["dropout_holes"]),
                        hole_height_range=tuple(a["dropout_size"]),
                        hole_width_range=tuple(a["dropout_size"]), p=a["dropout_p"]),
    ]
    return A.Compose(augment + list(eval_transform(cfg).transforms))


# ---------------------------------------------------------------- datasets and sampler

class FaceDataset(torch.utils.data.Dataset):
    """Face crops with integer identity labels.

    Indexed by (position, draw_seed) pairs from PKSampler: every draw seeds its own
    augmentation, so a batch is the same whatever the worker count and after a resume.
    """

    def __init__(self, crops: list[Path | np.ndarray], labels: list[int], transform: A.Compose):
        self.crops, self.labels, self.transform = crops, list(labels), transform

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, item):
        index, draw_seed = item if isinstance(item, tuple) else (item, None)
        if draw_seed is not None:
            # One generator shared by all steps (albumentations' set_random_seed would give each
            # step the same stream, making e.g. flip and blur always fire together).
            self.transform.set_random_state(np.random.default_rng(draw_seed), random.Random(draw_seed))
        image = self.transform(image=load_crop(self.crops[index]))["image"]
        return image, self.labels[index]


class PKSampler(torch.utils.data.Sampler):
    """Batches of P identities × K photos each, reproducible from (seed, epoch).

    Identities are visited in a shuffled cycle so every one is seen; a person with fewer than
    K photos has photos drawn again. Yields lists of (position, draw_seed).
    """

    def __init__(self, labels: list[int], P: int, K: int, batches_per_epoch: int = 0, seed: int = 0):
        self.by_label: dict[int, list[int]] = {}
        for pos, label in enumerate(labels):
            self.by_label.setdefault(label, []).append(pos)
        if len(self.by_label) < 2:
            raise DataError(f"P×K sampling needs at least 2 identities, got {len(self.by_label)}")
        self.P, self.K, self.seed, self.epoch = min(P, len(self.by_label)), K, seed, 0
        self.batches = batches_per_epoch or max(1, math.ceil(len(labels) / (self.P * self.K)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        rng = random.Random(f"{self.seed}:{self.epoch}")
        cycle: list[int] = []
        for _ in range(self.batches):
            if len(cycle) < self.P:
                fresh = sorted(self.by_label)
                rng.shuffle(fresh)
                cycle += [c for c in fresh if c not in cycle[:self.P]]
            chosen, cycle = cycle[:self.P], cycle[self.P:]
            batch = []
            for label in chosen:
                pool = self.by_label[label]
                picks = rng.sample(pool, self.K) if len(pool) >= self.K else [rng.choice(pool) for _ in range(self.K)]
                batch += [(pos, rng.getrandbits(63)) for pos in picks]
            yield batch


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    """Crop every photo under the given folders into the cache and report what was found."""
    import argparse

    from utils import load_config

    parser = argparse.ArgumentParser(
        description="Crop faces of every photo under FOLDER(s) into the crop cache and report "
                    "faces found, several faces, no face and unreadable files. Later steps reuse the cache.",
        epilog="example: python dataset.py data/competition --config config/demo.yaml")
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
    print(f"cropped {', '.join(map(str, folders))} into {cfg['data']['cache_dir']}: {report.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
