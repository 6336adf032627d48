"""Retrieval metrics over ranked lists: top-k accuracy, mAP, recall@k, R-precision, nDCG@k.

Every function takes `relevance`, a (queries × ranked list) boolean array saying whether the
i-th result is a correct match, and most take `n_relevant`, how many correct matches each query
has in the whole gallery. Queries with no correct match must be left out by the caller (they
have no defined precision); the competition counts them as wrong in top-k accuracy.
Written by hand: scikit-learn's ranking metrics score one score vector per query, not truncated
ranked lists of names as the competition sends, and these are a few lines each.
"""
from __future__ import annotations

import numpy as np


def _check(relevance: np.ndarray, n_relevant: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    rel = np.asarray(relevance, dtype=bool)
    if rel.ndim != 2:
        raise ValueError(f"relevance must be 2-D (queries × ranks), got shape {rel.shape}")
    if n_relevant is None:
        return rel, None
    n = np.asarray(n_relevant, dtype=np.int64)
    if n.shape != (rel.shape[0],):
        raise ValueError(f"n_relevant must have one entry per query ({rel.shape[0]}), got {n.shape}")
    if (n < rel.sum(1)).any():
        raise ValueError("n_relevant is smaller than the number of relevant results in a list")
    return rel, n


def top_k_accuracy(relevance: np.ndarray, k: int) -> float:
    """Fraction of queries with a correct match among their first k results."""
    rel, _ = _check(relevance)
    return float(rel[:, :k].any(axis=1).mean()) if len(rel) else 0.0


def average_precision(relevance: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """AP per query: mean precision at each correct result, over min(n_relevant, list length).

    On a full ranking this is the usual AP; on a top-10 list it is AP@10.
    """
    rel, n = _check(relevance, n_relevant)
    if rel.shape[1] == 0:
        return np.zeros(len(rel))
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, rel.shape[1] + 1)
    denom = np.minimum(n, rel.shape[1]).clip(min=1)
    return (precision * rel).sum(axis=1) / denom


def mean_average_precision(relevance: np.ndarray, n_relevant: np.ndarray) -> float:
    """mAP: the mean of average_precision over queries."""
    ap = average_precision(relevance, n_relevant)
    return float(ap.mean()) if len(ap) else 0.0


def recall_at_k(relevance: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """Mean fraction of each query's correct matches found in its first k results."""
    rel, n = _check(relevance, n_relevant)
    return float((rel[:, :k].sum(axis=1) / n.clip(min=1)).mean()) if len(rel) else 0.0


def r_precision(relevance: np.ndarray, n_relevant: np.ndarray) -> float:
    """Mean precision at rank R, R being the query's number of correct matches."""
    rel, n = _check(relevance, n_relevant)
    if not len(rel):
        return 0.0
    hits = np.cumsum(rel, axis=1)
    r = np.minimum(n, rel.shape[1]).clip(min=1)
    return float((hits[np.arange(len(rel)), r - 1] / r).mean())


def ndcg_at_k(relevance: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """Mean normalised discounted cumulative gain of the first k results (binary gains)."""
    rel, n = _check(relevance, n_relevant)
    if not len(rel):
        return 0.0
    k = min(k, rel.shape[1])
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (rel[:, :k] * discount).sum(axis=1)
    ideal = np.cumsum(discount)[np.minimum(n, k).clip(min=1) - 1]
    return float((dcg / ideal).mean())


def retrieval_report(relevance: np.ndarray, n_relevant: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """All metrics in one dict: top1/5/10, map, recall@k, r_precision, ndcg@10."""
    out = {f"top{k}": top_k_accuracy(relevance, k) for k in ks}
    out["map"] = mean_average_precision(relevance, n_relevant)
    out.update({f"recall@{k}": recall_at_k(relevance, n_relevant, k) for k in ks})
    out["r_precision"] = r_precision(relevance, n_relevant)
    out["ndcg@10"] = ndcg_at_k(relevance, n_relevant, 10)
    return out
