"""Training and validation people from the configured folders (split by identity, never by photo),
and their cropped photos."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from dataset import DataSettings, identity_split, list_identities
from detection import CropSettings, crop_paths, list_images
from utils import ConfigError, get_logger

log = get_logger()


class People(NamedTuple):
    """Cropped photos of some people: crops, integer labels, names by label, the photos kept."""
    crops: list
    labels: list[int]
    names: list[str]
    paths: list[Path]


def split_people(data: DataSettings, seed: int = 0,
                 loss: str = "triplet_batch_hard") -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Training and validation people from data.train_dir, split by identity, never by photo (dataset's
    identity_split, seeded); data.unlabelled photos join training only when `loss` is distill.

    With several folders, people are named <folder>/<person> so two folders never merge people.
    """
    roots = data.train_dir
    roots = [roots] if isinstance(roots, str) else list(roots)
    if len(roots) == 1:
        people = list_identities(roots[0], data.min_photos)
    else:
        people = {f"{Path(root).name}/{name}": photos for root in roots
                  for name, photos in list_identities(root, data.min_photos).items()}
    train_names, val_names = identity_split(list(people), data.val_fraction, seed)
    train_people = {n: people[n] for n in train_names}
    extra = data.unlabelled
    if extra:  # photos without an identity: each its own 'person', for distillation only, never validation
        if loss != "distill":
            raise ConfigError("data.unlabelled photos have no identity: they train only with loss.name=distill")
        for folder in [extra] if isinstance(extra, str) else extra:
            for photo in list_images(folder, recursive=True):
                train_people[f"unlabelled:{photo}"] = [photo]
    return train_people, {n: people[n] for n in val_names}


def crop_people(people: dict[str, list[Path]], crop: CropSettings, cache_dir: str, what: str) -> People:
    """Crop every photo (cached); returns People: crops, integer labels, names by label, the photos kept."""
    paths = [p for photos in people.values() for p in photos]
    owners = [name for name, photos in people.items() for _ in photos]
    crops, report = crop_paths(paths, crop, cache_dir, desc=f"cropping {what}")
    log.info(f"{what}: {report.summary()}")
    names = sorted({o for o, c in zip(owners, crops) if c is not None})
    index = {n: i for i, n in enumerate(names)}
    kept = [(c, index[o], p) for o, c, p in zip(owners, crops, paths) if c is not None]
    return People([c for c, _, _ in kept], [lab for _, lab, _ in kept], names, [p for _, _, p in kept])
