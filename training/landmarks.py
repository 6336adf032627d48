"""Training the landmark network (detection/landmark_net.py, issue 27): dlib's five points on covered faces.

    python -m training.landmarks --photos data/dev/train --out checkpoints/landmarks/net.pt

Labels: dlib's 5-point predictor on the clean photo inside YuNet's box, kept only where the two detectors agree (YuNet's
eye centres within `agree` inter-ocular distances of dlib's, each dlib eye the mean of its two corners); computed once
and kept in outputs/landmarks/. Inputs: the photo mirrored half the time (the points swapped to dlib's order), turned a
little, covered from training's ranges (occlusion.covers.TRAINING; a share left clean), cut around a box moved and
resized as a detector's box on a covered face moves, or around the guessed centre box. The validation people
(data.val_fraction 0.1, seed 0 of the photos' folder) are never trained on.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from detection import landmark_net
from detection.align import dlib_landmarks, dlib_predictor, guessed_box
from occlusion.covers import TRAINING, Face, cover
from detection.crop_settings import CropSettings
from detection.detectors import detect
from detection.images import ImageReadError, read_image
from utils import DataError, get_logger, progress

log = get_logger()
LABELS_DIR = Path("outputs") / "landmarks"
YUNET = CropSettings(yunet_confidence=0.5, yunet_low_confidence=0.3, min_size=16)  # occlusion.covers.face_of's
YUNET_FLIP = [1, 0, 2, 4, 3]  # YuNet's points in a mirror image: the eyes and the mouth's corners swap


def training_photos(root: str | Path, val_fraction: float = 0.1, seed: int = 0) -> list[Path]:
    """Every photo under root/<person>/ except those of the validation people train.py holds out (identity_split of
    the people with two or more photos, `val_fraction`, `seed`)."""
    from dataset import identity_split, list_identities  # albumentations, only where photos are listed

    root = Path(root)
    people = list_identities(root, 1)
    _, val = identity_split(list(list_identities(root, 2)), val_fraction, seed)
    held = set(val)
    return [p for name, photos in people.items() if name not in held for p in photos]


def eye_centres(points: np.ndarray) -> np.ndarray:
    """dlib's 5 points to the two eye centres, the image's left eye first (each the mean of its two corners)."""
    points = np.asarray(points, np.float32)
    return np.stack([points[..., 2:4, :].mean(-2), points[..., 0:2, :].mean(-2)], axis=-2)


def label_photo(image: np.ndarray, agree: float, predictor=None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(YuNet's box, YuNet's 5 points, dlib's 5 points in that box, placed by `predictor`: dlib_predictor()'s) for the
    photo's central face, or None where YuNet finds no face or the detectors disagree (an eye centre further than
    `agree` inter-ocular distances apart)."""
    found = detect(image, YUNET, "yunet")
    if not len(found):
        return None
    found = found.central_first(*image.shape[:2])
    box, marks = found.boxes[0], found.landmarks[0]
    shape = dlib_landmarks(image, box, predictor)
    points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
    eyes = eye_centres(points)
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    if iod < 1 or np.linalg.norm(eyes - marks[:2], axis=1).max() > agree * iod:
        return None
    return box.astype(np.float32), marks.astype(np.float32), points


def label_photos(paths: list[Path], root: Path, agree: float = 0.2, cache_dir: Path = LABELS_DIR) -> dict:
    """Labels of every photo (label_photo), kept in a .npz under cache_dir named by the photos and the rule:
    {'paths': relative to root, 'boxes', 'yunet', 'points'} of the photos kept, and how many were seen."""
    rel = sorted(str(Path(p).relative_to(root)) for p in paths)
    key = hashlib.sha1(json.dumps([rel, agree, str(root.resolve())]).encode()).hexdigest()[:16]
    cache = cache_dir / f"labels-{key}.npz"
    if cache.exists():
        with np.load(cache) as f:
            return {k: f[k] for k in f.files}
    kept: dict[str, list] = {"paths": [], "boxes": [], "yunet": [], "points": []}
    predictor = dlib_predictor()
    for name in progress(rel, desc="labelling (yunet + dlib)", unit="img"):
        try:
            label = label_photo(read_image(root / name), agree, predictor)
        except ImageReadError as exc:
            log.warning(f"skipping {exc}")
            continue
        if label is not None:
            for k, v in zip(("paths", "boxes", "yunet", "points"), (name, *label)):
                kept[k].append(v)
    if not kept["paths"]:
        raise DataError(f"{root}: no photo where YuNet and dlib agree on the eyes: nothing to train on")
    out = {"paths": np.array(kept["paths"]), "boxes": np.stack(kept["boxes"]), "yunet": np.stack(kept["yunet"]),
           "points": np.stack(kept["points"]), "seen": np.array(len(rel))}
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def _turn(image: np.ndarray, points: list[np.ndarray], angle: float, centre: np.ndarray):
    """The photo turned by `angle` degrees about `centre`, and each array of points turned with it."""
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
    h, w = image.shape[:2]
    out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, [p @ matrix[:, :2].T + matrix[:, 2] for p in points]


class CoveredFaces(torch.utils.data.Dataset):
    """Item i: photo i mirrored or not, turned a little, covered (or left clean), cut around a moved box; the crop
    (size×size RGB uint8) and dlib's five points as fractions of it, (5, 2). Draws are seeded by (seed, epoch, i)."""

    def __init__(self, images: list[np.ndarray], labels: dict, size: int, margin: float, clean_share: float = 0.25,
                 seed: int = 0, textures: int = 8, turn: float = 12.0, guess_p: float = 0.1):
        self.images, self.labels, self.size, self.margin = images, labels, size, margin
        self.clean_share, self.seed, self.turn, self.guess_p, self.epoch = clean_share, seed, turn, guess_p, 0
        self.textures = images[:textures]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        image = self.images[i]
        box, marks, points = (self.labels[k][i].astype(np.float32) for k in ("boxes", "yunet", "points"))
        if rng.random() < 0.5:  # mirrored: x -> w-1-x, the boxes' left edges and the points' order follow
            w = image.shape[1]
            image = image[:, ::-1]
            box = np.array([w - box[0] - box[2], box[1], box[2], box[3]], np.float32)
            marks = np.column_stack([w - 1 - marks[:, 0], marks[:, 1]])[YUNET_FLIP]
            points = np.column_stack([w - 1 - points[:, 0], points[:, 1]])[landmark_net.FLIP]
        angle = rng.uniform(-self.turn, self.turn)
        image, (marks, points) = _turn(np.ascontiguousarray(image), [marks, points], angle, box[:2] + box[2:] / 2)
        if rng.random() >= self.clean_share:
            others = [t for j, t in enumerate(self.textures) if j != i]
            image = cover(image, "mixed", Face(marks.astype(np.float32), box), rng, TRAINING, others)
        if rng.random() < self.guess_p:  # the chain's last resort: dlib's points in the centred box
            seen = guessed_box(image, 0.6)
        else:  # a detector's box on a covered face: moved and resized
            side = float(max(box[2:]))
            scale = np.exp(rng.uniform(np.log(0.85), np.log(1.2)))
            centre = box[:2] + box[2:] / 2 + np.clip(rng.normal(0, 0.06, 2), -0.15, 0.15) * side
            size = box[2:] * scale * np.exp(rng.uniform(-0.05, 0.05, 2))
            seen = np.array([*(centre - size / 2), *size], np.float32)
        crop = landmark_net.crop_input(image, seen, self.size, self.margin)
        if rng.random() < 0.5:  # light and contrast
            crop = np.clip(crop.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25), 0, 255).astype(np.uint8)
        return torch.from_numpy(np.ascontiguousarray(crop)), torch.from_numpy(landmark_net.to_crop(points, seen, self.margin))


def _batch(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    crops = np.stack([c.numpy() for c, _ in items])
    return landmark_net.to_tensor(crops), torch.stack([t for _, t in items]).reshape(len(items), 10)


def train_landmarks(images: list[np.ndarray], labels: dict, out: str | Path | None = None, *, epochs: int = 4,
                    batch_size: int = 64, lr: float = 1e-3, size: int = 112, margin: float = 0.25,
                    clean_share: float = 0.25, seed: int = 0, steps: int = 0, workers: int = 0,
                    imagenet: bool = True, device: str = "cpu", init: str | Path | None = None) -> dict:
    """Train the landmark network on the labelled photos (Adam, cosine decay, L1 on the points as fractions of the
    crop) for `epochs` (or `steps` batches in all, when given), from ImageNet's trunk or a saved network (`init`, whose
    size and margin it keeps); save it to `out` when given. Returns {'losses': each batch's loss, 'module', 'seconds'}."""
    torch.manual_seed(seed)
    if init is not None:
        start = landmark_net.load(init)
        module, size, margin = start.module, start.size, start.margin
    else:
        module = landmark_net.build(imagenet=imagenet)
    module = module.to(device).train()
    data = CoveredFaces(images, labels, size, margin, clean_share, seed)
    per_epoch = len(data) // batch_size if len(data) > batch_size else 1  # drop_last: whole batches only
    total = steps or epochs * per_epoch
    optimiser = torch.optim.Adam(module.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=total, pct_start=0.05)
    losses, started, step = [], time.time(), 0
    bar = progress(total=total, desc="training the landmark network", unit="batch")
    while step < total:
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers,
                                             collate_fn=_batch, drop_last=len(data) > batch_size,
                                             generator=torch.Generator().manual_seed(seed + data.epoch),
                                             persistent_workers=False, pin_memory=device != "cpu")
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = torch.nn.functional.smooth_l1_loss(module(x), y, beta=0.01)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", epoch=data.epoch)
            if step >= total:
                break
        data.epoch += 1
    bar.close()
    seconds = time.time() - started
    module.cpu().eval()
    if out is not None:
        landmark_net.save(out, module, size, margin, photos=len(images), epochs=data.epoch, steps=total,
                          seconds=round(seconds), clean_share=clean_share, init=str(init or ""))
    return {"losses": losses, "module": module, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    """`python -m training.landmarks --photos DIR --out FILE`: label, then train and save the landmark network."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default="data/dev/train", help="identity folders (never the test split)")
    parser.add_argument("--out", default="checkpoints/landmarks/net.pt")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--size", type=int, default=112, help="the crop's side in pixels")
    parser.add_argument("--margin", type=float, default=0.25, help="added to the box on every side, of its side")
    parser.add_argument("--clean-share", type=float, default=0.25, help="share of the inputs left uncovered")
    parser.add_argument("--agree", type=float, default=0.2, help="YuNet's and dlib's eyes this close, in eye distances")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader processes drawing the covers")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", help="go on training this saved landmark network (its size and margin)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.photos)
    paths = training_photos(root)
    labels = label_photos(paths, root, args.agree)
    log.info(f"{len(labels['paths'])} of {int(labels['seen'])} photos labelled (YuNet and dlib agree); "
             f"the validation people's photos left out")
    images = [read_image(root / name) for name in progress(labels["paths"], desc="reading", unit="img")]
    result = train_landmarks(images, labels, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             size=args.size, margin=args.margin, clean_share=args.clean_share, seed=args.seed,
                             workers=args.workers, init=args.init)
    log.info(f"{args.out}: trained in {result['seconds'] / 60:.1f} min, last loss "
             f"{np.mean(result['losses'][-20:]):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
