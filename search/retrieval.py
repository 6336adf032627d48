"""The one retrieval over embeddings, used by evaluation, submission and the search page: search (exact or
a FAISS index) → re-rank → top-k, in faiss's order (distances, ids). Vectors in, vectors out: photos become
embeddings in pipeline/embedding.py.

    retrieve(queries, gallery, k, RetrievalSettings(rerank=["aqe"])) -> (distances, ids)   # faiss's order
    rank(queries, gallery, names, k, RetrievalSettings()) -> [[name, ...], ...]
"""
from __future__ import annotations


import numpy as np

from search.exact import distance_estimator
from search.index import build_index
from search.rerank import rerank
from search.retrieval_settings import RetrievalSettings
from utils import ConfigError, DataError


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


def retrieve(queries: np.ndarray, gallery: np.ndarray, k: int,
             settings: RetrievalSettings = RetrievalSettings()) -> tuple[np.ndarray, np.ndarray]:
    """The k best gallery rows for every query: search, then the re-rankers of `settings` reorder
    each query's first settings.shortlist results (the rest keep their order)."""
    s = settings
    k = min(int(k), len(gallery))
    depth = max(k, min(int(s.shortlist), len(gallery))) if s.rerank else k
    dist, ids = search(queries, gallery, depth, int(s.chunk_size), s.metric, s.index, int(s.nprobe), int(s.ef_search))
    if s.rerank:
        if s.metric != "cosine":
            raise ConfigError("retrieval.rerank needs retrieval.metric=cosine (re-rankers work on unit vectors)")
        short = min(int(s.shortlist), depth)
        head_d, head_i = rerank(queries, gallery, dist[:, :short], ids[:, :short], s)
        dist = np.concatenate([head_d, dist[:, short:]], axis=1)
        ids = np.concatenate([head_i, ids[:, short:]], axis=1)
    return dist[:, :k], ids[:, :k]


def rank(query: np.ndarray, gallery: np.ndarray, gallery_names: list[str], k: int,
         settings: RetrievalSettings = RetrievalSettings()) -> list[list[str]]:
    """The k best gallery names for every query embedding, best first, each name once, through
    the one retrieval (search and the re-rankers of `settings`)."""
    if len(set(gallery_names)) != len(gallery_names):
        raise ValueError("gallery names must be unique")
    if len(gallery_names) != len(gallery):
        raise ValueError(f"{len(gallery_names)} gallery names for {len(gallery)} embeddings")
    if not 1 <= k <= len(gallery):
        raise DataError(f"k={k} but the gallery holds {len(gallery)} images")
    _, idx = retrieve(query, gallery, k, settings)
    return [[gallery_names[j] for j in row] for row in idx]
