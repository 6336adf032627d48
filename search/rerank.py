"""Re-rankers chosen by name (`retrieval.rerank: [...]`, applied in order), each reordering every
query's shortlist: average and α-weighted query expansion, database-side augmentation, and
k-reciprocal re-ranking. Adding one is one function plus one line in RERANKERS.

A re-ranker takes (queries (Q, D), gallery (N, D), distances (Q, S), ids (Q, S), settings) with the
shortlist of S gallery ids per query in faiss's order (nearest first) and returns the same shapes,
reordered. Embeddings are unit vectors; distances are cosine distances (1 - similarity). Nothing
builds an N×N matrix: work grows with Q × S (and S × S for k-reciprocal), not with the gallery.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from search.exact import cosine_distance, exact_knn, unit
from search.retrieval_settings import RetrievalSettings
from utils import lookup


def _rescore(new_queries: np.ndarray, gallery: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances from each (new) query to its own shortlist, shortlist sorted again."""
    dist = cosine_distance(np.einsum("qd,qsd->qs", new_queries, gallery[ids]))
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(dist, order, 1).astype(np.float32), np.take_along_axis(ids, order, 1)


def _weighted_expansion(queries: np.ndarray, gallery: np.ndarray, dist: np.ndarray, ids: np.ndarray,
                        n: int, alpha: float) -> np.ndarray:
    """Each query plus its n nearest shortlist vectors, weighted by similarity^alpha (alpha 0: plain mean)."""
    n = min(n, ids.shape[1])
    sim = np.clip(1.0 - dist[:, :n], 0.0, None)
    weights = sim ** alpha if alpha else np.ones_like(sim)
    expanded = queries + np.einsum("qn,qnd->qd", weights, gallery[ids[:, :n]])
    return unit(expanded)


def aqe(queries, gallery, dist, ids, settings: RetrievalSettings):
    """Average query expansion (Chum et al. 2007): the query and its top retrieval.qe_k results, averaged."""
    return _rescore(_weighted_expansion(queries, gallery, dist, ids, int(settings.qe_k), 0.0), gallery, ids)


def alpha_qe(queries, gallery, dist, ids, settings: RetrievalSettings):
    """α-weighted query expansion (Radenović et al. 2018): results weighted by similarity^retrieval.qe_alpha."""
    return _rescore(_weighted_expansion(queries, gallery, dist, ids, int(settings.qe_k), float(settings.qe_alpha)),
                    gallery, ids)


def dba(queries, gallery, dist, ids, settings: RetrievalSettings):
    """Database-side augmentation: every shortlisted gallery vector is replaced by the α-weighted mean
    of itself and its retrieval.dba_k nearest gallery neighbours, then the shortlist is rescored."""
    n = int(settings.dba_k)
    alpha = float(settings.dba_alpha)
    shown = np.unique(ids)
    # Neighbours of the shortlisted photos only (itself first): Q × S rows at most, never N × N.
    g_dist, g_ids = exact_knn(gallery[shown], gallery, min(n + 1, len(gallery)), "cosine", int(settings.chunk_size),
                              normalized=True)
    sim = np.clip(1.0 - g_dist, 0.0, None)
    weights = sim ** alpha if alpha else np.ones_like(sim)
    augmented = unit(np.einsum("bn,bnd->bd", weights, gallery[g_ids]))
    local = np.searchsorted(shown, ids)
    dist = cosine_distance(np.einsum("qd,qsd->qs", queries, augmented[local]))
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(dist, order, 1).astype(np.float32), np.take_along_axis(ids, order, 1)


def k_reciprocal_distances(original: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """Zhong et al. (CVPR 2017) re-ranking of row 0 (the query) of a small all-pairs distance
    matrix over [query, shortlist…]: λ·original + (1-λ)·Jaccard distance of k-reciprocal sets.

    Written by hand: no maintained package ships it outside whole re-identification frameworks;
    this follows the authors' reference code, on one query's shortlist instead of the whole gallery.
    """
    n = len(original)
    k1, k2 = min(k1, n - 1), min(k2, n)
    dist = (original / np.maximum(original.max(axis=0, keepdims=True), 1e-12)).T  # as the reference code
    rank = np.argsort(dist, axis=1, kind="stable")
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        forward = rank[i, :k1 + 1]
        backward = rank[forward, :k1 + 1]
        reciprocal = forward[np.where(backward == i)[0]]
        expansion = reciprocal
        for j in reciprocal:
            cand_forward = rank[j, :int(np.around(k1 / 2)) + 1]
            cand_backward = rank[cand_forward, :int(np.around(k1 / 2)) + 1]
            cand = cand_forward[np.where(cand_backward == j)[0]]
            if len(np.intersect1d(cand, reciprocal)) > 2 / 3 * len(cand):
                expansion = np.append(expansion, cand)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        v[i, expansion] = weight / weight.sum()
    if k2 > 1:  # local query expansion over the k2 nearest
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    # Jaccard distance of row 0 against every row, as in the reference code.
    min_sum = np.minimum(v[0][None, :], v).sum(axis=1)
    jaccard = 1 - min_sum / (2 - min_sum)
    return jaccard * (1 - lam) + dist[0] * lam


def k_reciprocal(queries, gallery, dist, ids, settings: RetrievalSettings):
    """k-reciprocal re-ranking (retrieval.kr_k1, kr_k2, kr_lambda) within each query's shortlist."""
    k1, k2, lam = int(settings.kr_k1), int(settings.kr_k2), float(settings.kr_lambda)
    new = np.empty_like(dist, dtype=np.float32)
    for q in range(len(queries)):
        points = np.vstack([queries[q][None, :], gallery[ids[q]]])
        local = np.clip(1.0 - points @ points.T, 0.0, None)  # (S+1)², one query's shortlist only
        new[q] = k_reciprocal_distances(local, k1, k2, lam)[1:]
    order = np.argsort(new, axis=1, kind="stable")
    return np.take_along_axis(new, order, 1), np.take_along_axis(ids, order, 1)


RERANKERS: dict[str, Callable] = {
    "aqe": aqe,
    "alpha_qe": alpha_qe,
    "dba": dba,
    "k_reciprocal": k_reciprocal,
}


def rerank(queries: np.ndarray, gallery: np.ndarray, dist: np.ndarray, ids: np.ndarray,
           settings: RetrievalSettings) -> tuple[np.ndarray, np.ndarray]:
    """Apply settings.rerank's re-rankers in order to the shortlists (distances, ids)."""
    steps = [lookup(RERANKERS, name, "retrieval.rerank") for name in settings.rerank]  # all known before any work
    queries, gallery = unit(np.asarray(queries, np.float32)), unit(np.asarray(gallery, np.float32))
    for step in steps:
        dist, ids = step(queries, gallery, dist, ids, settings)
    return dist, ids
