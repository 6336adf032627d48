"""The one retrieval pipeline, used by evaluation, submission and the search page:
photos → crops → embeddings (optional flip TTA) → search → re-rank → top-k gallery names.

    retrieve(queries, gallery, k, cfg["retrieval"]) -> (distances, ids)   # faiss's order
    rank(queries, gallery, names, k, cfg["retrieval"]) -> [[name, ...], ...]
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataset import degrade
from detection import crop_paths, list_images, load_crop
from network import EmbeddingNet, batch_size_for, checkpoint_fingerprint, embed
from search.cache import EmbeddingCache, file_sha1, photo_key
from search.exact import distance_estimator
from search.index import build_index
from search.rerank import rerank
from utils import ConfigError, DataError, get_logger

log = get_logger()


def search(queries: np.ndarray, gallery: np.ndarray, k: int, chunk_size: int = 1024, metric: str = "cosine",
           index: str = "exact", nprobe: int = 16, ef_search: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest gallery rows in faiss's order, (distances, ids), nearest first, through the
    index named by `index` (search/index.py). Rows an approximate index leaves out of a list
    (IVF visits only nprobe clusters) are appended in exact order, so a full ranking stays full."""
    if index == "exact":
        return distance_estimator(queries, gallery, k, metric, chunk_size)

    built = build_index(index, gallery.shape[1], metric, nprobe=nprobe, ef_search=ef_search, chunk_size=chunk_size)
    built.add(np.asarray(gallery, dtype=np.float32), np.arange(len(gallery), dtype=np.int64))
    dist, ids = built.search(np.asarray(queries, dtype=np.float32), k)
    short = np.flatnonzero((ids < 0).any(axis=1))
    if len(short):
        e_dist, e_ids = distance_estimator(queries[short], gallery, k, metric, chunk_size)
        for row, exact_ids, exact_dist in zip(short, e_ids, e_dist):
            found = ids[row] >= 0
            rest = ~np.isin(exact_ids, ids[row][found])
            ids[row] = np.concatenate([ids[row][found], exact_ids[rest]])[:k]
            dist[row] = np.concatenate([dist[row][found], exact_dist[rest]])[:k]
    return dist, ids


def retrieve(queries: np.ndarray, gallery: np.ndarray, k: int, rcfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """The k best gallery rows for every query: search, then the configured re-rankers reorder
    each query's first retrieval.shortlist results (the rest keep their order)."""
    k = min(int(k), len(gallery))
    names = rcfg.get("rerank") or []
    depth = max(k, min(int(rcfg.get("shortlist", k)), len(gallery))) if names else k
    dist, ids = search(queries, gallery, depth, int(rcfg["chunk_size"]), rcfg["metric"], rcfg.get("index", "exact"),
                       int(rcfg.get("nprobe", 16)), int(rcfg.get("ef_search", 64)))
    if names:
        if rcfg["metric"] != "cosine":
            raise ConfigError("retrieval.rerank needs retrieval.metric=cosine (re-rankers work on unit vectors)")
        short = min(int(rcfg["shortlist"]), depth)
        head_d, head_i = rerank(queries, gallery, dist[:, :short], ids[:, :short], rcfg)
        dist = np.concatenate([head_d, dist[:, short:]], axis=1)
        ids = np.concatenate([head_i, ids[:, short:]], axis=1)
    return dist[:, :k], ids[:, :k]


def rank(query: np.ndarray, gallery: np.ndarray, gallery_names: list[str], k: int,
         rcfg: dict) -> list[list[str]]:
    """The k best gallery names for every query embedding, best first, each name once, through
    the one pipeline (search and the re-rankers of `rcfg`, the retrieval config section)."""
    if len(set(gallery_names)) != len(gallery_names):
        raise ValueError("gallery names must be unique")
    if len(gallery_names) != len(gallery):
        raise ValueError(f"{len(gallery_names)} gallery names for {len(gallery)} embeddings")
    if not 1 <= k <= len(gallery):
        raise DataError(f"k={k} but the gallery holds {len(gallery)} images")
    _, idx = retrieve(query, gallery, k, rcfg)
    return [[gallery_names[j] for j in row] for row in idx]


@dataclass
class EmbeddedFolder:
    """A folder's photos as embeddings; photos that could not be read are listed, not lost."""
    names: list[str]
    crops: list[Path | np.ndarray]   # crop-cache files (or arrays), for figures
    embeddings: np.ndarray
    skipped: list[str]
    embedded: int = 0                # photos run through the network this time
    from_cache: int = 0              # photos whose embedding came from the embedding cache
    paths: list[Path] = field(default_factory=list)  # the photos behind names, in the same order


def embed_paths(paths: list[Path], model: EmbeddingNet, cfg: dict, device, what: str,
                degradation: str = "none") -> EmbeddedFolder:
    """Crop (through the crop cache) and embed photos, both as the model was trained (model.meta).

    Embeddings are kept in data.embedding_cache under the photo's content and the model's
    fingerprint, so an unchanged photo is embedded once per model. With a degradation
    (evaluate.degrade), each crop is degraded first, seeded by the photo's name and cfg['seed']
    (so every model sees the same degraded queries), and the cache is not used.
    """
    crops, report = crop_paths(paths, model.meta["crop"], cfg["data"]["cache_dir"], desc=f"cropping {what}",
                               workers=int(cfg["data"]["num_workers"]))
    log.info(f"{what}: {report.summary()}")
    kept = [(p, c) for p, c in zip(paths, crops) if c is not None]
    tta = cfg["retrieval"]["tta"]
    images = [c for _, c in kept]
    if degradation != "none":
        images = [degrade(load_crop(c), degradation, photo_seed(p.name, cfg["seed"])) for p, c in kept]
    cache_file = cfg["data"].get("embedding_cache") if degradation == "none" else ""
    keys, found, cache = [], {}, None
    if cache_file:
        cache = EmbeddingCache(cache_file)
        fingerprint = checkpoint_fingerprint(model)
        keys = [photo_key(file_sha1(p), fingerprint, tta) for p, _ in kept]
        found = cache.get(keys)
    todo = [i for i in range(len(kept)) if cache is None or keys[i] not in found]
    emb = np.zeros((len(kept), model.embedding_size), dtype=np.float32)
    if todo:
        batch = batch_size_for(model, cfg["retrieval"]["batch_size"], device)
        emb[todo] = embed(model, [images[i] for i in todo], batch, device,
                          desc=f"embedding {what}", tta=tta, num_workers=int(cfg["data"]["num_workers"]))
    if cache is not None:
        for i, key in enumerate(keys):
            if key in found:
                emb[i] = found[key]
        cache.put({keys[i]: emb[i] for i in todo})
        log.info(f"{what}: {len(todo)} photos embedded, {len(kept) - len(todo)} from the embedding cache")
    return EmbeddedFolder([p.name for p, _ in kept], images, emb,
                          [str(p) for p, c in zip(paths, crops) if c is None], len(todo), len(kept) - len(todo),
                          [p for p, _ in kept])


def photo_seed(name: str, seed: int) -> int:
    """A seed of one photo's own (its name and the run's seed), whatever order photos come in."""
    return int.from_bytes(hashlib.sha1(f"{seed}:{name}".encode()).digest()[:8], "little")


def embed_folder(folder: str | Path, model: EmbeddingNet, cfg: dict, device,
                 degradation: str = "none") -> EmbeddedFolder:
    """Every image directly in `folder`, cropped and embedded; an empty folder is an error."""
    paths = list_images(folder)
    if not paths:
        raise DataError(f"{folder}: no images in this folder")
    return embed_paths(paths, model, cfg, device, Path(folder).name, degradation)


def relevance_matrix(ranked: list[list[str]], correct: list[set[str]]) -> np.ndarray:
    """Boolean (queries × ranks) matrix: is each ranked name one of the query's correct names."""
    width = max((len(r) for r in ranked), default=0)
    rel = np.zeros((len(ranked), width), dtype=bool)
    for i, (names, good) in enumerate(zip(ranked, correct)):
        rel[i, :len(names)] = [n in good for n in names]
    return rel
