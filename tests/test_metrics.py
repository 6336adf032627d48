"""evaluation/metrics.py by hand and against pytorch-metric-learning's AccuracyCalculator; evaluation/plots.py's
curves and figures."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from evaluation.metrics import (METRICS, SUMMARY, average_precision, average_precision_at_r, format_metrics,
                     mean_average_precision, mean_average_precision_at_r, ndcg_at_k, precision_at_k, r_precision,
                     recall_at_k, retrieval_report, top_k_accuracy)
from evaluation.plots import (curves_for, draw_curve, precision_recall_curve, precision_recall_points, recall_at_k_curve,
                   recall_curve, retrieval_figure, top_k_curve)

# Hand case. A: correct at ranks 1 and 3, R = 2.  B: correct at rank 2, R = 3 (one never listed).
# C: nothing correct in its 4 results, R = 1.
REL = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
N_REL = np.array([2, 3, 1])
OLD_KEYS = {"top1", "top5", "top10", "map", "recall@1", "recall@5", "recall@10", "r_precision", "ndcg@10"}


# ---------------------------------------------------------------- hand-computed cases

def test_top_k_accuracy_by_hand():
    # a match within the first 1 / 2 / 4: A only; A and B; A and B
    assert [top_k_accuracy(REL, k) for k in (1, 2, 4, 10)] == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3])


def test_precision_at_k_by_hand():
    # p@1: A 1, B 0, C 0.  p@2: A 1/2, B 1/2.  p@4: A 2/4, B 1/4.
    assert precision_at_k(REL, 1) == pytest.approx(1 / 3)
    assert precision_at_k(REL, 2) == pytest.approx((1 / 2 + 1 / 2) / 3)
    assert precision_at_k(REL, 4) == pytest.approx((2 / 4 + 1 / 4) / 3)
    # k beyond the list: still divided by k (PML), the missing places count as wrong: A 2/5, B 1/5
    assert precision_at_k(REL, 5) == pytest.approx((2 / 5 + 1 / 5) / 3)


def test_average_precision_by_hand():
    # A: (P(1) + P(3)) / 2 = (1 + 2/3) / 2;  B: P(2) / 3 = (1/2) / 3;  C: 0
    assert average_precision(REL, N_REL) == pytest.approx([(1 + 2 / 3) / 2, 0.5 / 3, 0.0])
    assert mean_average_precision(REL, N_REL) == pytest.approx(((1 + 2 / 3) / 2 + 0.5 / 3) / 3)


def test_map_at_r_by_hand():
    # Only the first R ranks count.  A (R=2): ranks 1-2 = [1, 0] -> P(1)/2 = 1/2 (rank 3 is past R).
    # B (R=3): ranks 1-3 = [0, 1, 0] -> P(2)/3 = (1/2)/3.  C (R=1): rank 1 wrong -> 0.
    assert average_precision_at_r(REL, N_REL) == pytest.approx([1 / 2, 1 / 6, 0.0])
    assert mean_average_precision_at_r(REL, N_REL) == pytest.approx((1 / 2 + 1 / 6) / 3)
    # [1, 0, 1, 1] with R = 3: (P(1) + P(3)) / 3 = (1 + 2/3) / 3 (rank 4 is past R)
    assert mean_average_precision_at_r(np.array([[1, 0, 1, 1]], bool), [3]) == pytest.approx((1 + 2 / 3) / 3)


def test_recall_r_precision_ndcg_by_hand():
    assert recall_at_k(REL, N_REL, 1) == pytest.approx((1 / 2 + 0 + 0) / 3)
    assert recall_at_k(REL, N_REL, 4) == pytest.approx((2 / 2 + 1 / 3 + 0) / 3)
    # R-precision: A precision@2 = 1/2; B precision@3 = 1/3; C precision@1 = 0
    assert r_precision(REL, N_REL) == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    # nDCG@4: A (1 + 1/log2 4) / (1 + 1/log2 3); B (1/log2 3) / (1 + 1/log2 3 + 1/log2 4); C 0
    a = (1 + 1 / 2) / (1 + 1 / np.log2(3))
    b = (1 / np.log2(3)) / (1 + 1 / np.log2(3) + 1 / 2)
    assert ndcg_at_k(REL, N_REL, 4) == pytest.approx((a + b) / 3)


def test_perfect_ranking_scores_one():
    rel = np.array([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], bool)
    report = retrieval_report(rel, np.array([2, 1]))
    for key in ("top1", "top5", "map", "map@r", "precision@1", "recall@5", "recall@10", "r_precision", "ndcg@10"):
        assert report[key] == pytest.approx(1.0), key
    assert report["precision@5"] == pytest.approx((2 / 5 + 1 / 5) / 2)


def test_no_relevant_item_in_the_list_scores_zero():
    rel = np.zeros((1, 5), bool)
    assert all(v == 0.0 for v in retrieval_report(rel, np.array([3])).values())


def test_r_larger_than_the_list():
    # [1, 1] with R = 5 (three matches never listed), as PML with k = 2 < R:
    rel, n = np.array([[1, 1]], bool), np.array([5])
    assert mean_average_precision_at_r(rel, n) == pytest.approx((1 + 1) / 5)   # still divided by R
    assert r_precision(rel, n) == pytest.approx(2 / 2)                         # min(R, length) results
    assert mean_average_precision(rel, n) == pytest.approx(1.0)                # AP@2: / min(R, length)
    assert recall_at_k(rel, n, 2) == pytest.approx(2 / 5)
    assert precision_at_k(rel, 2) == pytest.approx(1.0)


def test_empty_and_inconsistent_inputs():
    empty = np.zeros((0, 4), bool)
    assert all(v == 0.0 for v in retrieval_report(empty, np.zeros(0, int)).values())
    with pytest.raises(ValueError, match="smaller"):
        mean_average_precision_at_r(REL, np.array([1, 0, 0]))
    with pytest.raises(ValueError, match="2-D"):
        precision_at_k(np.zeros(3, bool), 1)
    with pytest.raises(ValueError, match="smaller"):
        mean_average_precision(REL, np.array([1, 0, 0]))
    with pytest.raises(ValueError, match="one entry per query"):
        recall_at_k(REL, np.array([1, 1]), 1)


# ---------------------------------------------------------------- the registry

def test_registry_order_and_report():
    assert list(METRICS) == ["top1", "top5", "top10", "map", "map@r", "precision@1", "precision@5", "precision@10",
                             "recall@1", "recall@5", "recall@10", "r_precision", "ndcg@10"]
    assert set(SUMMARY) <= set(METRICS)
    report = retrieval_report(REL, N_REL)
    assert list(report) == list(METRICS) and set(report) >= OLD_KEYS
    assert report["map@r"] == pytest.approx(mean_average_precision_at_r(REL, N_REL))
    assert report["precision@5"] == pytest.approx(precision_at_k(REL, 5))
    assert report["ndcg@10"] == pytest.approx(ndcg_at_k(REL, N_REL, 10))
    for key, fn in METRICS.items():
        assert report[key] == pytest.approx(fn(REL, N_REL)) and 0 <= report[key] <= 1


def test_report_other_ks_and_chosen_keys():
    report = retrieval_report(REL, N_REL, ks=(1, 4))
    assert list(report) == ["top1", "top4", "map", "map@r", "precision@1", "precision@4", "recall@1", "recall@4",
                            "r_precision", "ndcg@10"]
    assert report["precision@4"] == pytest.approx(precision_at_k(REL, 4))
    assert list(retrieval_report(REL, N_REL, keys=SUMMARY)) == list(SUMMARY)
    with pytest.raises(KeyError, match="unknown metric 'map@5'"):
        retrieval_report(REL, N_REL, keys=("map@5",))


def test_format_metrics():
    report = {"top1": 0.5, "top5": 1.0, "map": 1 / 3, "recall@1": 0.25, "queries": 3}
    assert format_metrics(report) == "top1=0.500  top5=1.000  map=0.333"
    assert format_metrics(report, keys=METRICS, digits=2) == "top1=0.50  top5=1.00  map=0.33  recall@1=0.25"


def test_metrics_plots_and_the_server_import_without_torch():
    code = ("import sys, evaluation.metrics, evaluation.plots, competition.server; "
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---------------------------------------------------------------- against pytorch-metric-learning

PML_KEYS = {"precision_at_1": "precision@1", "mean_average_precision_at_r": "map@r", "r_precision": "r_precision",
            "mean_average_precision": "map"}


@pytest.fixture(scope="module")
def pml():
    torch = pytest.importorskip("torch")
    pytest.importorskip("faiss")
    acc = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    return torch, acc


def _clustered(rng, n_classes: int, dim: int = 16):
    """Unit-norm float32 embeddings of n_classes people with 2-8 photos each, noisy enough to rank badly."""
    labels = np.repeat(np.arange(n_classes), rng.integers(2, 9, n_classes))
    centers = rng.normal(size=(n_classes, dim))
    x = (centers[labels] + rng.normal(scale=1.2, size=(len(labels), dim))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def _rank(query, reference, exclude_self: bool):
    """Our ranking by cosine similarity (float64), the query itself dropped when it is in the reference."""
    sim = query.astype(np.float64) @ reference.astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")
    if exclude_self:
        order = order[:, :-1]
    gaps = -np.diff(np.take_along_axis(sim, order, axis=1), axis=1)
    assert gaps.min() > 1e-6, "near-tied neighbours: float32 k-NN may order them differently"
    return order


def _pml_accuracy(pml, k, *args, **kwargs):
    torch, acc = pml
    calc = acc.AccuracyCalculator(include=tuple(PML_KEYS), k=k, device=torch.device("cpu"))
    return calc.get_accuracy(*args, **kwargs)


@pytest.mark.parametrize("k", [None, "max_bin_count", 3])
def test_agrees_with_pml_reference_includes_query(pml, k):
    x, y = _clustered(np.random.default_rng(0), 8)
    order = _rank(x, x, exclude_self=True)
    counts = np.bincount(y)
    n_rel = counts[y] - 1                     # the query is not its own match
    length = {None: len(y) - 1, "max_bin_count": n_rel.max(), 3: 3}[k]
    rel = (y[order] == y[:, None])[:, :length]
    ours = retrieval_report(rel, n_rel)
    theirs = _pml_accuracy(pml, k, x, y)      # reference None: the query set is the reference, self excluded
    for pml_key, key in PML_KEYS.items():
        if key == "map" and k == 3:
            continue                          # PML's truncated mAP divides by R; ours by min(R, k): below
        assert ours[key] == pytest.approx(theirs[pml_key], abs=1e-6), (pml_key, k)
    assert ours["top1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    if k == 3:                                # R > list length for most queries
        assert (n_rel > 3).any()
        per_query = average_precision(rel, n_rel) * np.minimum(n_rel, 3) / n_rel
        assert per_query.mean() == pytest.approx(theirs["mean_average_precision"], abs=1e-6)


def test_agrees_with_pml_separate_query_and_reference(pml):
    rng = np.random.default_rng(1)
    x, y = _clustered(rng, 10)
    is_query = np.zeros(len(y), bool)
    is_query[rng.choice(len(y), len(y) // 3, replace=False)] = True
    is_query[y == 9] = True                   # person 9 has no reference photo: PML leaves such queries out
    q, qy, r, ry = x[is_query], y[is_query], x[~is_query], y[~is_query]
    order = _rank(q, r, exclude_self=False)
    n_rel = np.array([(ry == label).sum() for label in qy])
    scored = n_rel > 0
    assert not scored.all()
    rel = (ry[order] == qy[:, None])[scored]
    ours = retrieval_report(rel, n_rel[scored])
    theirs = _pml_accuracy(pml, None, q, qy, r, ry, ref_includes_query=False)
    for pml_key, key in PML_KEYS.items():
        assert ours[key] == pytest.approx(theirs[pml_key], abs=1e-6), pml_key


def test_agrees_with_pml_precision_at_k(pml):
    # AccuracyCalculator only reports precision_at_1; its module function takes any k.
    torch, acc = pml
    x, y = _clustered(np.random.default_rng(2), 6)
    order = _rank(x, x, exclude_self=True)
    knn_labels = torch.as_tensor(y[order])
    for k in (1, 3, 5):
        theirs = acc.precision_at_k(knn_labels, torch.as_tensor(y)[:, None], k, False, False, torch.eq)
        assert precision_at_k(y[order] == y[:, None], k) == pytest.approx(theirs, abs=1e-6)


# ---------------------------------------------------------------- curve data

def test_recall_and_top_k_curves_by_hand():
    # recall@k: k=1 (1/2 + 0 + 0)/3; k=2 (1/2 + 1/3)/3; k=3,4 (2/2 + 1/3)/3
    assert recall_curve(REL, N_REL) == pytest.approx([1 / 6, 5 / 18, 4 / 9, 4 / 9])
    assert top_k_curve(REL) == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3])
    for k in range(1, 5):
        assert recall_curve(REL, N_REL)[k - 1] == pytest.approx(recall_at_k(REL, N_REL, k))
        assert top_k_curve(REL)[k - 1] == pytest.approx(top_k_accuracy(REL, k))


def test_precision_recall_points_by_hand():
    # Interpolated precision = best precision at any rank whose recall reaches the level.
    # A: precision [1, 1/2, 2/3, 1/2], recall [.5, .5, 1, 1] -> 1 up to recall .5, then 2/3.
    # B: precision [0, 1/2, 1/3, 1/4], recall [0, 1/3, 1/3, 1/3] -> 1/2 up to .3, 0 past 1/3 (never reached).
    # C: precision 0 everywhere -> 0.
    levels, precision = precision_recall_points(REL, N_REL)
    assert levels == pytest.approx(np.linspace(0, 1, 11))
    assert precision == pytest.approx([1 / 2] * 4 + [1 / 3] * 2 + [2 / 9] * 5)
    _, perfect = precision_recall_points(np.array([[1, 1, 0]], bool), np.array([2]), points=5)
    assert perfect == pytest.approx(np.ones(5))


# ---------------------------------------------------------------- figures

def _is_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100
    assert not list(path.parent.glob(".*.tmp"))


def test_curve_figures(tmp_path):
    _is_png(recall_at_k_curve(tmp_path / "recall.png", REL, N_REL, title="hand case"))
    _is_png(recall_at_k_curve(tmp_path / "recall_log.png", REL, N_REL, log_x=True))
    _is_png(precision_recall_curve(tmp_path / "sub" / "pr.png", REL, N_REL, title="hand case"))
    recall, pr = curves_for(tmp_path / "run" / "retrieval.png", REL, N_REL, "run")
    assert (recall.name, pr.name) == ("retrieval_recall.png", "retrieval_pr.png")
    assert recall.parent == pr.parent == tmp_path / "run"
    _is_png(recall)
    _is_png(pr)


def test_retrieval_figure_and_training_curve(tmp_path):
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (24, 24, 3), dtype=np.uint8) for _ in range(5)]
    ranked = np.array([[1, 2, 3], [0, 4, 2]])
    path = retrieval_figure(tmp_path / "grid.png", crops[:2], crops, ranked, [{1, 3}, {4}], n_queries=2, top=3,
                            title="grid")
    _is_png(path)
    history = [{"epoch": e, "train_loss": 1 / e, "top1": 0.1 * e, "top5": 0.2 * e, "top10": 0.25 * e,
                "map": 0.15 * e, "map@r": 0.1 * e} for e in (1, 2, 3)]
    assert draw_curve(tmp_path / "curve.png", history, "training") is None
    _is_png(tmp_path / "curve.png")
