"""Photos to embeddings, the one path used by evaluation, submission, the store, the search page and
calibration, for every model (runtime.FaceModel: one network or a fusion, PyTorch or ONNX Runtime): each network
crops through the crop cache (its own crop settings), embeds with its own preprocessing (optional flip TTA) and keeps
each embedding in the embedding cache under the photo's content and its fingerprint; the model fuses the parts.

    folder = embed_folder("data/competition/test/gallery", model, "cpu", data=DataSettings(),
                          embedding=EmbeddingSettings(tta="flip"))   # names, crops, embeddings
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataset import COVER_KINDS, DataSettings, degrade
from detection import Crop, CropReport, CropSettings, FaceFinder, ImageReadError, crop_paths, list_images, read_image
from occlusion.covers import EVALUATION, CoverRanges, cover, face_of
from runtime import EmbeddingSettings, FaceModel, FaceNetwork
from pipeline.embedding_cache import EmbeddingCache, file_sha1, photo_key
from utils import DataError, get_logger, progress

log = get_logger()


@dataclass
class EmbeddedFolder:
    """A folder's photos as embeddings; photos that could not be read are listed, not lost."""
    names: list[str]
    crops: list[np.ndarray]          # the crops embedded (a fusion's: its first network's), for figures and the store
    embeddings: np.ndarray
    skipped: list[str]
    embedded: int = 0                # photos run through the network this time
    from_cache: int = 0              # photos whose embedding came from the embedding cache
    paths: list[Path] = field(default_factory=list)  # the photos behind names, in the same order
    found_by: list[str] = field(default_factory=list)  # the chain step that found each face (as crops)


def embed_paths(paths: list[Path], model: FaceModel, device, what: str, *, data: DataSettings = DataSettings(),
                embedding: EmbeddingSettings = EmbeddingSettings(), degradation: str = "none", seed: int = 0,
                covers: CoverRanges = EVALUATION, finder: FaceFinder | None = None) -> EmbeddedFolder:
    """Photos cropped and embedded by every network of `model` (each as it was trained: its own crops, its own
    preprocessing), fused (runtime.FaceModel.fuse); a photo is kept where every network found its face. The settings
    are embed_network's; faces are found by `finder` (None: one of this call's, shared by the networks); the crops
    shown are the first network's."""
    networks, finder = model.networks(), finder or FaceFinder()
    parts = [embed_network(paths, net, device, what if len(networks) == 1 else f"{what} ({net.arch})", data=data,
                           embedding=embedding, degradation=degradation, seed=seed, covers=covers, finder=finder)
             for net in networks]
    kept = set.intersection(*(set(p.paths) for p in parts))
    order = [p for p in parts[0].paths if p in kept]
    rows = [{p: i for i, p in enumerate(part.paths)} for part in parts]
    emb = model.fuse([part.embeddings[[row[p] for p in order]] for part, row in zip(parts, rows)])
    first = rows[0]
    return EmbeddedFolder([p.name for p in order], [parts[0].crops[first[p]] for p in order], emb,
                          [str(p) for p in paths if p not in kept], max(p.embedded for p in parts),
                          min(p.from_cache for p in parts), order, [parts[0].found_by[first[p]] for p in order])


def embed_network(paths: list[Path], net: FaceNetwork, device, what: str, *, data: DataSettings,
                  embedding: EmbeddingSettings, degradation: str, seed: int, covers: CoverRanges,
                  finder: FaceFinder) -> EmbeddedFolder:
    """Crop (through the crop cache, data.cache_dir) and embed photos with one network, both as it was trained
    (net.meta), with embedding.tta and embedding.batch_size.

    Embeddings are kept in data.embedding_cache under the photo's content and the network's
    fingerprint, so an unchanged photo is embedded once per network. With a degradation
    (evaluate.degrade), each crop is degraded first, seeded by the photo's name and `seed`
    (so every model sees the same degraded queries), and the cache is not used; a cover kind is drawn
    from `covers` (the evaluation's distribution unless a choice on validation people asks for training's).
    """
    if degradation in COVER_KINDS:  # drawn on the photo, before its face is looked for: as the world covers faces
        crops, report = covered_crops(paths, net.crop_settings(), degradation, seed, ranges=covers, finder=finder)
    else:
        crops, report = crop_paths(paths, net.crop_settings(), data.cache_dir, desc=f"cropping {what}",
                                   workers=int(data.num_workers), finder=finder)
    log.info(f"{what}: {report.summary()}")
    kept = [(p, c) for p, c in zip(paths, crops) if c is not None]
    tta = embedding.tta
    images = [c for _, c in kept]
    if degradation != "none" and degradation not in COVER_KINDS:
        images = [degrade(c, degradation, photo_seed(p.name, seed)) for p, c in kept]
    cache_file = data.embedding_cache if degradation == "none" else ""
    keys, found, cache = [], {}, None
    if cache_file:
        cache = EmbeddingCache(cache_file)
        fingerprint = net.content_fingerprint()
        keys = [photo_key(file_sha1(p), fingerprint, tta) for p, _ in kept]
        found = cache.get(keys)
    todo = [i for i in range(len(kept)) if cache is None or keys[i] not in found]
    emb = np.zeros((len(kept), net.embedding_size), dtype=np.float32)
    if todo:
        emb[todo] = net.embed_crops([images[i] for i in todo], embedding.batch_size, tta, device=device,
                                    desc=f"embedding {what}", num_workers=int(data.num_workers))
    if cache is not None:
        for i, key in enumerate(keys):
            if key in found:
                emb[i] = found[key]
        cache.put({keys[i]: emb[i] for i in todo})
        log.info(f"{what}: {len(todo)} photos embedded, {len(kept) - len(todo)} from the embedding cache")
    found_by = report.found_by()
    return EmbeddedFolder([p.name for p, _ in kept], images, emb,
                          [str(p) for p, c in zip(paths, crops) if c is None], len(todo), len(kept) - len(todo),
                          [p for p, _ in kept], [found_by[str(p)] for p, _ in kept])


def embed_photo(image: np.ndarray, model: FaceModel, device, embedding: EmbeddingSettings = EmbeddingSettings(),
                finder: FaceFinder | None = None) -> tuple[np.ndarray | None, list[Crop | None]]:
    """One photo already read (an upload held in memory: no file written, no cache kept) cropped by `finder` (None:
    one of its own) and embedded as embed_paths does it: (its unit embedding, or None where a network finds no face;
    each network's crop, or None)."""
    networks, finder = model.networks(), finder or FaceFinder()
    crops = [finder.crop_face(image, net.crop_settings()) for net in networks]
    if any(c is None for c in crops):
        return None, crops
    parts = [net.embed_crops([c.image], embedding.batch_size, embedding.tta, device=device, desc="embedding a photo")
             for net, c in zip(networks, crops)]
    return model.fuse(parts)[0], crops


def covered_crops(paths: list[Path], settings: CropSettings, kind: str, seed: int, textures: int = 8,
                  ranges: CoverRanges = EVALUATION, finder: FaceFinder | None = None
                  ) -> tuple[list[np.ndarray | None], CropReport]:
    """Each photo covered (occlusion.covers: `kind` placed on the face YuNet finds in the clean photo, drawn from
    `ranges` (the evaluation's distribution by default), seeded by the photo's name and `seed`), then cropped as `settings` say from
    the covered photo; None where it is unreadable or no face is found. Objects are cut from the first
    `textures` photos of the list (never the photo itself), so a run is the same whatever else is asked."""
    pool = []
    for p in paths[:textures]:
        try:
            pool.append((p, read_image(p)))
        except ImageReadError:
            continue
    report, out = CropReport(primary=settings.detector, subject=settings.subject), []
    finder = finder or FaceFinder()
    for path in progress(paths, desc=f"covering ({kind}) and cropping", unit="img", disable=len(paths) < 20):
        try:
            image = read_image(path)
        except ImageReadError as exc:
            log.warning(f"skipping {exc}")
            report.failed.append(str(path))
            out.append(None)
            continue
        rng = np.random.default_rng(photo_seed(f"{kind}:{path.name}", seed))
        covered = cover(image, kind, face_of(image), rng, ranges, [t for q, t in pool if q != path])
        crop = finder.crop_face(covered, settings)
        if crop is None:
            report.no_face.append(str(path))
        else:
            report.add(crop.path, str(path), crop.faces, crop.aligned, settings.align, False)
        out.append(None if crop is None else crop.image)
    return out, report


def photo_seed(name: str, seed: int) -> int:
    """A seed of one photo's own (its name and the run's seed), whatever order photos come in."""
    return int.from_bytes(hashlib.sha1(f"{seed}:{name}".encode()).digest()[:8], "little")


def embed_folder(folder: str | Path, model: FaceModel, device, **settings) -> EmbeddedFolder:
    """Every image directly in `folder`, cropped and embedded as embed_paths does with the same keyword
    settings (data, embedding, degradation, seed); an empty folder is an error."""
    paths = list_images(folder)
    if not paths:
        raise DataError(f"{folder}: no images in this folder")
    return embed_paths(paths, model, device, Path(folder).name, **settings)
