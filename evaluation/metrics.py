"""Retrieval metrics over ranked lists: top-k accuracy, mAP, MAP@R, precision@k, recall@k,
R-precision, nDCG@k, and the one registry of their names (METRICS, SUMMARY).

Every function takes `relevance`, a (queries × ranked list) boolean array saying whether the
i-th result is a correct match, and most take `n_relevant`, how many correct matches each query
has in the whole gallery. Queries with no correct match must be left out by the caller (they
have no defined precision); the competition counts them as wrong in top-k accuracy.
Written by hand: scikit-learn's ranking metrics score one score vector per query, not truncated
ranked lists of names as the competition sends, and these are a few lines each.

precision@1, MAP@R and R-precision follow pytorch-metric-learning's AccuracyCalculator exactly
(tests/test_metrics.py checks them against it), including lists shorter than R (PML's k < R):
MAP@R still divides by R, the relevant items that were never listed counting as precision 0,
while R-precision looks at min(R, list length) results and divides by that. Our `map` differs
from PML's mean_average_precision on truncated lists only: it divides by min(R, list length)
(AP@k, as the competition scores), PML by R; on a full ranking the two agree.
Torch-free: the server imports this module.
"""
from __future__ import annotations

from typing import Callable

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


def average_precision_at_r(relevance: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """AP@R per query (Musgrave et al., "A Metric Learning Reality Check"; PML's MAP@R):
    (1/R) Σ_{i=1..R} P(i)·rel(i), R being the query's number of correct matches.

    A list shorter than R is scored on what it holds and still divided by R, as PML does when its
    k is below R: matches that were never listed count as precision 0. R = 0 scores 0.
    """
    rel, n = _check(relevance, n_relevant)
    if rel.shape[1] == 0:
        return np.zeros(len(rel))
    within_r = np.arange(1, rel.shape[1] + 1) <= n[:, None]
    hits = rel & within_r
    precision = np.cumsum(hits, axis=1) / np.arange(1, rel.shape[1] + 1)
    return (precision * hits).sum(axis=1) / n.clip(min=1)


def mean_average_precision_at_r(relevance: np.ndarray, n_relevant: np.ndarray) -> float:
    """MAP@R: the mean of average_precision_at_r over queries."""
    ap = average_precision_at_r(relevance, n_relevant)
    return float(ap.mean()) if len(ap) else 0.0


def precision_at_k(relevance: np.ndarray, k: int) -> float:
    """Mean over queries of (correct results among the first k) / k.

    Always divided by k, as PML does: a list shorter than k counts its missing places as wrong.
    """
    rel, _ = _check(relevance)
    return float((rel[:, :k].sum(axis=1) / k).mean()) if len(rel) else 0.0


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


# ---------------------------------------------------------------- the registry

Metric = Callable[[np.ndarray, np.ndarray], float]
KS = (1, 5, 10)


def build_metrics(ks=KS, ndcg_k: int = 10) -> dict[str, Metric]:
    """The metrics by name, in report order, each called as fn(relevance, n_relevant) -> float.

    Every metric is higher-is-better and lies in [0, 1].
    """
    out: dict[str, Metric] = {}
    for k in ks:
        out[f"top{k}"] = lambda rel, n, k=k: top_k_accuracy(rel, k)
    out["map"] = mean_average_precision
    out["map@r"] = mean_average_precision_at_r
    for k in ks:
        out[f"precision@{k}"] = lambda rel, n, k=k: precision_at_k(rel, k)
    for k in ks:
        out[f"recall@{k}"] = lambda rel, n, k=k: recall_at_k(rel, n, k)
    out["r_precision"] = r_precision
    out[f"ndcg@{ndcg_k}"] = lambda rel, n: ndcg_at_k(rel, n, ndcg_k)
    return out


# The one place metric names are spelled: training logs, evaluation and the server use these.
METRICS: dict[str, Metric] = build_metrics()
SUMMARY = ("top1", "top5", "top10", "map", "map@r")


def retrieval_report(relevance: np.ndarray, n_relevant: np.ndarray, ks=KS,
                     keys=None) -> dict[str, float]:
    """Metrics by name, in registry order: top1/5/10, map, map@r, precision@k, recall@k,
    r_precision, ndcg@10 (top{k}, precision@{k}, recall@{k} for each k in `ks`).

    With `keys` (e.g. SUMMARY) only those are computed, in the order given.
    """
    registry = METRICS if tuple(ks) == KS else build_metrics(ks)
    if keys is None:
        keys = tuple(registry)
    unknown = [k for k in keys if k not in registry]
    if unknown:
        raise KeyError(f"unknown metric {unknown[0]!r}; known: {', '.join(registry)}")
    rel, n = _check(relevance, n_relevant)
    return {key: registry[key](rel, n) for key in keys}


def format_metrics(report: dict, keys=SUMMARY, digits: int = 3) -> str:
    """One line 'top1=0.812  top5=0.934 …' of the `keys` present in `report`, in that order."""
    return "  ".join(f"{k}={report[k]:.{digits}f}" for k in keys if report.get(k) is not None)


# ---------------------------------------------------------------- verification and open-set identification
# Distances, not ranked lists: lower is more alike (cosine distance for unit embeddings), as search answers.

def rate_threshold(sorted_values: np.ndarray, rate: float, total: int | None = None) -> tuple[float, int]:
    """The largest distance with at most a fraction `rate` of `total` values at or below it (`sorted_values`:
    ascending, all of them or only the lowest; `total` defaults to their number): (threshold, how many values
    may lie at or below it). Just below the first value past that allowance, in the values' own precision;
    +inf when every value given is allowed. Calibration and the verification metrics share this rule."""
    total = len(sorted_values) if total is None else int(total)
    allowed = int(np.floor(rate * total))
    if allowed >= len(sorted_values):
        return float("inf"), allowed
    value = np.asarray(sorted_values[allowed])
    return float(np.nextafter(value, np.array(-np.inf, dtype=value.dtype))), allowed


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """Verification (IJB-C's TAR@FAR): the fraction of genuine pairs accepted at the largest threshold that
    accepts at most a fraction `far` of the impostor pairs."""
    genuine, impostor = np.sort(np.asarray(genuine, float)), np.sort(np.asarray(impostor, float))
    if not len(genuine) or not len(impostor):
        return 0.0
    threshold, _ = rate_threshold(impostor, far)
    return float(np.searchsorted(genuine, threshold, side="right")) / len(genuine)


def dir_at_fpir(mated_best: np.ndarray, mated_correct: np.ndarray, non_mated_best: np.ndarray, fpir: float) -> float:
    """Open-set identification (IJB-C's DIR@FPIR): at the threshold where a fraction `fpir` of the non-mated
    probes (people not in the gallery) match someone, the fraction of mated probes whose first result is
    their person and within the threshold. `mated_best`, `non_mated_best`: each probe's best distance;
    `mated_correct`: whether a mated probe's first result is its person."""
    non_mated = np.sort(np.asarray(non_mated_best, float))
    mated, correct = np.asarray(mated_best, float), np.asarray(mated_correct, bool)
    if not len(non_mated) or not len(mated):
        return 0.0
    threshold, _ = rate_threshold(non_mated, fpir)
    return float(np.mean(correct & (mated <= threshold)))


VERIFICATION = {"tar@far=1e-2": 1e-2, "tar@far=1e-3": 1e-3}  # names of the verification metrics, and their rates
OPEN_SET = {"dir@fpir=1e-2": 1e-2}  # names of the open-set identification metrics, and their rates


def relevance_matrix(ranked: list[list[str]], correct: list[set[str]]) -> np.ndarray:
    """Boolean (queries × ranks) matrix: is each ranked name one of the query's correct names."""
    width = max((len(r) for r in ranked), default=0)
    rel = np.zeros((len(ranked), width), dtype=bool)
    for i, (names, good) in enumerate(zip(ranked, correct)):
        rel[i, :len(names)] = [n in good for n in names]
    return rel
