"""Photos to training batches: identity folders and splits, the albumentations transforms, the
Dataset of face crops and the P×K batch sampler. Reading and cropping faces live in detection/."""
from __future__ import annotations

import functools
import math
import os
import random
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from detection import list_images, load_crop
from runtime import model_input
from occlusion.covers import COVERS, TRAINING, cover, face_in_crop
from occlusion.covers import KINDS as COVER_KINDS
from utils import ConfigError, DataError, get_logger, lookup

log = get_logger()


# ---------------------------------------------------------------- settings (config/default.yaml documents each field)

@dataclass(frozen=True)
class DataSettings:
    """The data section: where training people are, how they are split, and the crop and embedding caches."""
    train_dir: str | list[str] = "data/competition/train"
    val_fraction: float = 0.2
    min_photos: int = 2
    unlabelled: list[str] = field(default_factory=list)
    cache_dir: str = "data/cache/crops"
    embedding_cache: str = "data/cache/embeddings.sqlite"
    num_workers: int = 0


@dataclass(frozen=True)
class SplitSettings:
    """The split section: how a competition (and validation) splits people and their photos."""
    test_fraction: float = 0.5
    queries_per_person: int = 1


@dataclass(frozen=True)
class AugmentSettings:
    """The augment section: the training-only albumentations pipeline's probabilities and ranges."""
    hflip_p: float = 0.5
    color_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    gamma_p: float = 0.3
    gamma_limit: list[float] = field(default_factory=lambda: [80, 120])
    affine_p: float = 0.5
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1])
    translate: float = 0.05
    rotate: float = 10
    blur_p: float = 0.1
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 1.5])
    dropout_p: float = 0.3
    dropout_holes: list[int] = field(default_factory=lambda: [1, 2])
    dropout_size: list[float] = field(default_factory=lambda: [0.1, 0.25])
    erase_p: float = 0.0
    erase_side: list[float] = field(default_factory=lambda: [0.3, 0.45])
    cover_p: float = 0.0
    cover_kinds: list[str] = field(default_factory=lambda: list(COVERS))



# ---------------------------------------------------------------- identity folders and splits

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





def pick_queries(items: list, queries_per_person: int, rng: random.Random) -> tuple[list, list]:
    """One person's (queries, gallery): the items shuffled by `rng`, the first queries_per_person of
    them queries, always leaving one for the gallery. The one rule of the competitions `facematch split` builds and of
    validation on labelled people, so both pick alike from the same random stream."""
    items = list(items)
    rng.shuffle(items)
    n = min(queries_per_person, len(items) - 1)
    return items[:n], items[n:]


def query_gallery_split(labels: list, queries_per_person: int, seed: int) -> tuple[list[int], list[int]]:
    """Positions of queries and gallery items: queries_per_person photos of every person with at
    least one photo left for the gallery become queries; all other photos form the gallery."""
    by_label: dict = {}
    for pos, label in enumerate(labels):
        by_label.setdefault(label, []).append(pos)
    rng = random.Random(seed)
    queries, gallery = [], []
    for label in sorted(by_label, key=str):
        q, g = pick_queries(by_label[label], queries_per_person, rng)
        queries += q
        gallery += g
    return sorted(queries), sorted(gallery)


# ---------------------------------------------------------------- verification pairs (LFW's pairs.txt)

class Pair(NamedTuple):
    """Two photos, whether they show the same person, and the fold the pair belongs to."""
    a: Path
    b: Path
    same: bool
    fold: int


def _lfw_photo(root: Path, name: str, number: str, where: str) -> Path:
    for ext in (".jpg", ".jpeg", ".png"):
        path = root / name / f"{name}_{int(number):04d}{ext}"
        if path.is_file():
            return path
    raise DataError(f"{where}: no photo {name}_{int(number):04d} under {root / name}")


def read_pairs(path: str | Path, root: str | Path) -> list[Pair]:
    """The pairs of a file in LFW's pairs.txt format: a line 'folds pairs-per-fold', then per fold that many
    same-person lines 'name n1 n2' and as many other-person lines 'name1 n1 name2 n2'; photos are
    <root>/<name>/<name>_<n, 4 digits>.jpg. A line that is neither, or a photo that is missing, is a DataError
    naming the file and line."""
    path, root = Path(path), Path(root)
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise DataError(f"{path}: cannot read the pairs file ({exc.strerror})") from None
    try:
        folds, per_fold = (int(v) for v in lines[0][:2])
    except (IndexError, ValueError):
        raise DataError(f"{path}:1: the first line must be 'folds pairs-per-fold' (as LFW's pairs.txt: 10 300)") from None
    if len(lines) - 1 != folds * 2 * per_fold:
        raise DataError(f"{path}: {len(lines) - 1} pair lines, but {folds} folds of 2 × {per_fold} make "
                        f"{folds * 2 * per_fold}")
    pairs = []
    for i, fields in enumerate(lines[1:]):
        where, fold = f"{path}:{i + 2}", i // (2 * per_fold)
        if len(fields) == 3:
            pairs.append(Pair(_lfw_photo(root, fields[0], fields[1], where),
                              _lfw_photo(root, fields[0], fields[2], where), True, fold))
        elif len(fields) == 4:
            pairs.append(Pair(_lfw_photo(root, fields[0], fields[1], where),
                              _lfw_photo(root, fields[2], fields[3], where), False, fold))
        else:
            raise DataError(f"{where}: a pair line is 'name n1 n2' or 'name1 n1 name2 n2', got {' '.join(fields)!r}")
    return pairs


def make_pairs(people: dict[str, list[Path]], folds: int = 10, per_fold: int = 300, seed: int = 0) -> str:
    """A pairs file in LFW's format from identity folders of LFW-named photos (<name>_<n>.jpg): people dealt to
    the folds (a person in one fold only, as in LFW's own), then in each fold per_fold same-person pairs (two
    photos of one person) and per_fold other-person pairs, drawn with `seed`, no pair twice."""
    rng = random.Random(seed)
    names = sorted(people)
    rng.shuffle(names)
    lines = [f"{folds}\t{per_fold}"]
    for fold in range(folds):
        members = sorted(names[fold::folds])
        twos = [n for n in members if len(people[n]) >= 2]
        if not twos or len(members) < 2:
            raise DataError(f"fold {fold + 1} of {folds} has too few people (give fewer folds or more people)")
        number = {n: [p.stem.rsplit("_", 1)[1] for p in people[n]] for n in members}
        same, other = set(), set()
        for _ in range(50 * per_fold):
            if len(same) < per_fold:
                n = rng.choice(twos)
                same.add((n, *sorted(rng.sample(number[n], 2))))
            if len(other) < per_fold:
                a, b = sorted(rng.sample(members, 2))
                other.add((a, rng.choice(number[a]), b, rng.choice(number[b])))
            if len(same) == len(other) == per_fold:
                break
        if len(same) < per_fold or len(other) < per_fold:
            raise DataError(f"fold {fold + 1}: only {len(same)} same-person and {len(other)} other-person pairs "
                            f"can be drawn (asked {per_fold}): give fewer pairs per fold")
        lines += ["\t".join(p) for p in sorted(same)] + ["\t".join(p) for p in sorted(other)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- transforms

def albumentations():
    """albumentations, imported when training's transforms are first built: the inference install has neither it nor
    PyTorch (runtime.model_input is its preprocessing), and the commands turn its ModuleNotFoundError into one line
    naming `pip install -e .[train]` (utils.training_package)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network at run time: skip its version check
    import albumentations

    return albumentations


def eval_transform(inp: dict):
    """The one deterministic transform for validation, query and gallery images, from a model's
    resolved input settings (model.meta['input']: size, mean, std, max_pixel_value): an albumentations Compose."""
    A = albumentations()
    from albumentations.pytorch import ToTensorV2

    return A.Compose([A.Lambda(image=partial(evaluation_input, inp=inp), name="model_input"), ToTensorV2()])


def evaluation_input(image: np.ndarray, inp: dict, **_) -> np.ndarray:
    """runtime.model_input as an albumentations image function (it passes its parameters along)."""
    return model_input(image, inp)


@functools.cache
def _cover_class() -> type:
    """dataset.Cover, made when first asked for (it subclasses albumentations' transform, which the inference install
    lacks); module-level __getattr__ hands it out, so `from dataset import Cover` and pickling find it by name."""
    A = albumentations()

    class Cover(A.ImageOnlyTransform):
        """A cover as people wear them (occlusion/covers.py) drawn on a training crop, from training's own
        distribution (covers.TRAINING, never evaluation's), placed from where a crop has its face's landmarks
        (covers.face_in_crop); the kind drawn among `kinds`, each draw seeded by the augmentation's generator."""

        def __init__(self, kinds: list[str] | tuple[str, ...] = tuple(COVERS), p: float = 0.5):
            super().__init__(p=p)
            self.kinds = list(kinds)

        def get_params(self) -> dict:
            return {"seed": int(self.random_generator.integers(2 ** 62))}

        def apply(self, img: np.ndarray, seed: int = 0, **params) -> np.ndarray:
            rng = np.random.default_rng(seed)
            kind = self.kinds[int(rng.integers(len(self.kinds)))]
            return cover(img, kind, face_in_crop(img.shape), rng, TRAINING)

    Cover.__module__, Cover.__qualname__ = __name__, "Cover"
    return Cover


def __getattr__(name: str):
    """PEP 562: the names made only when first used (Cover, training's albumentations transform)."""
    if name == "Cover":
        return _cover_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def train_transform(s: AugmentSettings, inp: dict):
    """Training augmentation (the `augment` settings) followed by exactly the evaluation transform."""
    A = albumentations()
    augment = [
        A.HorizontalFlip(p=s.hflip_p),
        A.ColorJitter(brightness=s.brightness, contrast=s.contrast,
                      saturation=s.saturation, hue=s.hue, p=s.color_p),
        A.RandomGamma(gamma_limit=tuple(s.gamma_limit), p=s.gamma_p),
        A.Affine(scale=tuple(s.scale), translate_percent=(-s.translate, s.translate),
                 rotate=(-s.rotate, s.rotate), border_mode=cv2.BORDER_REFLECT_101, p=s.affine_p),
        A.GaussianBlur(sigma_limit=tuple(s.blur_sigma), p=s.blur_p),
        A.CoarseDropout(num_holes_range=tuple(s.dropout_holes),
                        hole_height_range=tuple(s.dropout_size),
                        hole_width_range=tuple(s.dropout_size), p=s.dropout_p),
        A.Erasing(scale=(s.erase_side[0] ** 2, s.erase_side[1] ** 2), ratio=(1.0, 1.0), fill=0,
                  p=s.erase_p),
        _cover_class()(s.cover_kinds, p=s.cover_p),
    ]
    return A.Compose(augment + list(eval_transform(inp).transforms))


CROP_DEGRADATIONS = ("none", "cutout", "gamma", "both")  # drawn on a crop (degrade below)
DEGRADATIONS = CROP_DEGRADATIONS + COVER_KINDS  # evaluate.degrade: covers are drawn on the photo (pipeline/embedding.py)
VAL_DEGRADATIONS = CROP_DEGRADATIONS + ("covers",)  # train.val_degrade: covers, one per crop (covered_crop below)


def covered_crop(image: np.ndarray, seed: int, kinds: list[str] | tuple[str, ...] = tuple(COVERS)) -> np.ndarray:
    """A validation crop with a cover drawn on it (one of `kinds`, from training's distribution, never the
    evaluation's, placed where a crop has its face): what train.val_degrade=covers scores, seeded per photo."""
    rng = np.random.default_rng(seed)
    kind = list(kinds)[int(rng.integers(len(kinds)))]
    return cover(image, kind, face_in_crop(image.shape), rng, TRAINING)


def degrade(image: np.ndarray, mode: str, seed: int) -> np.ndarray:
    """A degraded copy of a query crop, as in the relevance-feedback thesis: 'cutout' blacks out a
    square covering the share of the side that 100 px covers of 224 px, 'gamma' applies a gamma
    of 1.5–2.5 or its inverse, 'both' does both. The same seed gives the same degradation.

    Written with NumPy: two lines each, and exactly reproducible from one seed per photo.
    """
    lookup(dict.fromkeys(CROP_DEGRADATIONS), mode, "evaluate.degrade (on a crop)")
    rng = np.random.default_rng(seed)
    out = image.copy()
    if mode in ("gamma", "both"):
        gamma = rng.uniform(1.5, 2.5) ** rng.choice([-1, 1])
        out = (255.0 * (out / 255.0) ** gamma).round().astype(np.uint8)
    if mode in ("cutout", "both"):
        h, w = out.shape[:2]
        side = int(round(min(h, w) * 100 / 224))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        out[y:y + side, x:x + side] = 0
    return out


# ---------------------------------------------------------------- datasets and sampler

class FaceDataset:
    """Face crops with integer identity labels: a map-style dataset for torch's DataLoader (which asks only for
    __len__ and __getitem__, so this module imports no torch).

    Indexed by (position, draw_seed) pairs from PKSampler: every draw seeds its own
    augmentation, so a batch is the same whatever the worker count and after a resume.
    """

    def __init__(self, crops: list[Path | np.ndarray], labels: list[int], transform):
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


class PKSampler:
    """Batches of P identities × K photos each, reproducible from (seed, epoch): a DataLoader's batch_sampler.

    Identities are visited in a shuffled cycle so every one is seen; a person with fewer than
    K photos has photos drawn again. Yields lists of (position, draw_seed).

    Under torchrun every process draws the very same global batches and keeps its own contiguous
    share (rank r of world_size w gets photos r·P·K/w … (r+1)·P·K/w − 1), so the processes
    together see exactly the batches one process would, in the same order.
    """

    def __init__(self, labels: list[int], P: int, K: int, batches_per_epoch: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.by_label: dict[int, list[int]] = {}
        for pos, label in enumerate(labels):
            self.by_label.setdefault(label, []).append(pos)
        if len(self.by_label) < 2:
            raise DataError(f"P×K sampling needs at least 2 identities, got {len(self.by_label)}")
        self.P, self.K, self.seed, self.epoch = min(P, len(self.by_label)), K, seed, 0
        self.batches = batches_per_epoch or max(1, math.ceil(len(labels) / (self.P * self.K)))
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
        if (self.P * self.K) % world_size:
            clamped = f" (P is {self.P}: only {len(self.by_label)} training people)" if self.P != P else ""
            raise ConfigError(f"a batch of train.P × train.K = {self.P} × {self.K} = {self.P * self.K} photos{clamped} "
                              f"cannot be shared evenly by {world_size} processes: make P×K a multiple of "
                              f"--nproc_per_node × --nnodes")
        self.rank, self.world_size = rank, world_size

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
            if self.world_size == 1:
                yield batch
            else:
                share = len(batch) // self.world_size
                yield batch[self.rank * share:(self.rank + 1) * share]
