"""Exact nearest neighbours: the one exact search, in faiss's order (distances, ids), that the
pipeline, the exact index and the re-rankers share, and the unit-length normalisation they all use.

    distances, ids = distance_estimator(queries, gallery, k, metric="cosine")   # (Q, k) each, nearest first
"""
from __future__ import annotations

import numpy as np

from utils import DataError, lookup

DISTANCES = ("cosine", "euclidean", "manhattan")  # retrieval.metric
TILE_ELEMENTS = 2 ** 26     # most distances held at once (256 MB of float32)


def check_metric(metric: str) -> None:
    """A ConfigError naming retrieval.metric unless it is one of DISTANCES."""
    lookup(dict.fromkeys(DISTANCES), metric, "retrieval.metric")


def unit(x: np.ndarray, block: int = 65536) -> np.ndarray:
    """A new float32 array scaled to unit length along its last axis (a zero vector stays zero): one
    vector, or the rows of a matrix, in blocks of rows, so that no temporary as large as a
    10^6-row gallery is made."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return x / max(float(np.linalg.norm(x)), 1e-12)
    out = np.empty(x.shape, np.float32)
    for start in range(0, len(x), block):
        part = x[start:start + block]
        out[start:start + block] = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
    return out


def cosine_distance(similarity: np.ndarray) -> np.ndarray:
    """1 - cosine similarity, never below 0 and never -0.0: a photo's similarity with itself rounds a hair past 1 on
    some CPUs and in some orders of summation (1 - cos = -2e-7), which would print as "-0.000"."""
    return np.maximum(1.0 - np.asarray(similarity), 0.0) + 0.0


def smallest(dist: np.ndarray, k: int) -> np.ndarray:
    """The columns of each row's k smallest values, smallest first, ties by the lower column (np.argpartition, then
    a sort of those k): the same order on every machine, whichever install."""
    if k < dist.shape[1]:
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(dist, part, 1).max(axis=1, keepdims=True)
        if (np.count_nonzero(dist <= kth, axis=1) > k).any():  # a tie at the k-th value: argpartition chose among
            return np.argsort(dist, axis=1, kind="stable")[:, :k]  # the tied columns at will; the lower ones win
    else:
        part = np.broadcast_to(np.arange(dist.shape[1]), dist.shape)
    order = np.lexsort((part, np.take_along_axis(dist, part, 1)), axis=1)
    return np.take_along_axis(part, order, 1)


def _manhattan(block: np.ndarray, part: np.ndarray) -> np.ndarray:
    """L1 distances (len(block), len(part)), a few gallery rows at a time so no (Q, N, D) array larger than a tile."""
    out = np.empty((len(block), len(part)), np.float32)
    step = max(1, TILE_ELEMENTS // max(1, block.size))
    for g0 in range(0, len(part), step):
        out[:, g0:g0 + step] = np.abs(block[:, None, :] - part[None, g0:g0 + step, :]).sum(-1)
    return out


def exact_knn(queries: np.ndarray, gallery: np.ndarray, k: int, metric: str = "cosine",
              chunk_size: int = 1024, *, normalized: bool = False,
              gallery_sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest gallery rows for every query row, in faiss's order: (distances, rows),
    (Q, k) each, nearest first (a tie: the lower row first).

    Cosine distance is 1 - cosine similarity (both sides normalised here unless `normalized`);
    euclidean is the L2 distance (`gallery_sq`: the gallery's squared norms, when known); manhattan the
    L1 distance (sum of absolute differences).
    Queries are taken chunk_size at a time and, for large galleries, the gallery in blocks whose
    top-k are merged, so at most TILE_ELEMENTS distances exist at once whatever the sizes. NumPy only (BLAS's matrix
    product), so the inference install, without PyTorch, ranks exactly as the full one does.
    """
    check_metric(metric)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    g = np.ascontiguousarray(gallery, dtype=np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"query {tuple(q.shape)} and gallery {tuple(g.shape)} must be 2-D with equal width")
    if not 1 <= k <= len(g):
        raise ValueError(f"k={k} but the gallery holds {len(g)} vectors")
    chunk_size = max(1, int(chunk_size))
    if metric == "cosine" and not normalized:
        q, g = unit(q), unit(g)
    if metric == "euclidean" and gallery_sq is None:
        gallery_sq = np.einsum("ij,ij->i", g, g)
    dist_out, idx_out = [], []
    for start in range(0, len(q), chunk_size):
        block = q[start:start + chunk_size]
        block_sq = np.einsum("ij,ij->i", block, block)[:, None] if metric == "euclidean" else None
        step = max(k, TILE_ELEMENTS // len(block))
        parts_d, parts_i = [], []
        for g0 in range(0, len(g), step):
            part = g[g0:g0 + step]
            if metric == "cosine":
                dist = cosine_distance(block @ part.T)
            elif metric == "manhattan":
                dist = _manhattan(block, part)
            else:
                dist = np.sqrt(np.maximum(block_sq - 2.0 * (block @ part.T) + gallery_sq[None, g0:g0 + step], 0))
            i = smallest(dist, min(k, len(part)))
            parts_d.append(np.take_along_axis(dist, i, 1))
            parts_i.append(i + g0)
            del dist
        if len(parts_d) == 1:
            d, i = parts_d[0], parts_i[0]
        else:  # merge the blocks' top-k (lower rows first among ties, as the blocks come in order)
            both_d, both_i = np.concatenate(parts_d, 1), np.concatenate(parts_i, 1)
            order = np.lexsort((both_i, both_d), axis=1)[:, :k]
            d, i = np.take_along_axis(both_d, order, 1), np.take_along_axis(both_i, order, 1)
        dist_out.append(d.astype(np.float32, copy=False))
        idx_out.append(i.astype(np.int64, copy=False))
    if not dist_out:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
    return np.concatenate(dist_out), np.concatenate(idx_out)


def distance_estimator(queries: np.ndarray, gallery: np.ndarray, k: int, metric: str = "cosine",
                       chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The design's distance estimator: the exact k nearest gallery rows of every query row, checked
    input, in faiss's order (distances, ids), nearest first. Cosine distance is 1 - cosine
    similarity, euclidean the L2 distance, manhattan the L1 distance; memory stays bounded whatever the
    sizes (exact_knn)."""
    check_metric(metric)
    q, g = np.asarray(queries, dtype=np.float32), np.asarray(gallery, dtype=np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"query {tuple(q.shape)} and gallery {tuple(g.shape)} must be 2-D with equal width")
    if not 1 <= k <= len(g):
        raise DataError(f"k={k} but the gallery holds {len(g)} images")
    if not len(q):
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
    return exact_knn(q, g, k, metric, chunk_size)
