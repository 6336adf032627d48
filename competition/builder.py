"""A competition from labelled photos, deterministically from the seed: identity split, opaque
names, the query/gallery rule (dataset.pick_queries), and the files written."""
from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

from dataset import identity_split, list_identities, pick_queries
from detection import list_images
from utils import DataError, atomic_write


def opaque_name(seed: int, source: Path) -> str:
    """40 hex characters (a SHA-1 of the seed and the photo's folder and file name) plus its
    lower-case extension: the same on every machine, whatever the path to the data."""
    digest = hashlib.sha1(f"facematch:{seed}:{source.parent.name}/{source.name}".encode()).hexdigest()
    return digest + source.suffix.lower()


def make_split(people_dir: str | Path, distractors_dir: str | Path | None, seed: int,
               test_fraction: float, queries_per_person: int) -> dict:
    """Decide the split without touching the disk: {'train': {person: [paths]}, 'query': {name: path},
    'gallery': {name: path}, 'queries': {query name: [gallery names]}}."""
    if queries_per_person < 1:
        raise DataError("split.queries_per_person must be 1 or more")
    people = list_identities(people_dir, 1)
    several = [n for n, photos in people.items() if len(photos) >= 2]
    singles = [n for n, photos in people.items() if len(photos) == 1]
    if len(several) < 2:
        raise DataError(f"{people_dir}: need 2 or more people with 2+ photos to split, found {len(several)}")
    train_names, test_names = identity_split(several, test_fraction, seed)
    rng = random.Random(seed)
    query, gallery, queries = {}, {}, {}
    for name in test_names:
        q_photos, g_photos = pick_queries(people[name], queries_per_person, rng)
        g_names = [opaque_name(seed, p) for p in g_photos]
        gallery.update(zip(g_names, g_photos))
        for p in q_photos:
            q = opaque_name(seed, p)
            query[q] = p
            queries[q] = sorted(g_names)
    extra = [people[n][0] for n in singles]
    if distractors_dir:
        extra += list_images(distractors_dir, recursive=True)
    gallery.update((opaque_name(seed, p), p) for p in extra)
    if len(gallery) != len(set(gallery.values())) or set(gallery) & set(query):
        raise DataError("two photos got the same opaque name; are the same files listed twice?")
    return {"train": {n: people[n] for n in train_names}, "query": query, "gallery": gallery, "queries": queries}


def write_split(split: dict, out: str | Path, name: str, seed: int, force: bool = False) -> Path:
    """Copy the photos into the competition layout and write ground_truth.json and key.json."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise DataError(f"{out} already exists and is not empty: pass --force to rebuild it")
        for sub in ("train", "test"):
            shutil.rmtree(out / sub, ignore_errors=True)
    for person, photos in split["train"].items():
        (out / "train" / person).mkdir(parents=True, exist_ok=True)
        for p in photos:
            shutil.copy2(p, out / "train" / person / p.name)
    for role in ("query", "gallery"):
        (out / "test" / role).mkdir(parents=True, exist_ok=True)
        for opaque, p in split[role].items():
            shutil.copy2(p, out / "test" / role / opaque)
    truth = {"name": name, "seed": seed, "queries": split["queries"], "gallery": sorted(split["gallery"])}
    key = {n: str(p) for role in ("query", "gallery") for n, p in sorted(split[role].items())}
    atomic_write(out / "ground_truth.json", lambda tmp: Path(tmp).write_text(json.dumps(truth, indent=1)))
    atomic_write(out / "key.json", lambda tmp: Path(tmp).write_text(json.dumps(key, indent=1)))
    return out / "ground_truth.json"
