"""The distance estimator, ranking, and the evaluation protocol's split and scoring (the metrics themselves: test_metrics.py)."""
from __future__ import annotations

import numpy as np
import pytest

from dataset import query_gallery_split
from pipeline.protocol import score_embeddings
from search.exact import distance_estimator
from evaluation.metrics import relevance_matrix
from search.retrieval import rank
from utils import ConfigError, DataError
from dataclasses import replace

from search.retrieval_settings import RetrievalSettings
from settings import load_config


def brute_force(q, g, metric):
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        gn = g / np.linalg.norm(g, axis=1, keepdims=True)
        d = 1 - qn @ gn.T
    elif metric == "manhattan":
        d = np.abs(q[:, None, :] - g[None, :, :]).sum(-1)
    else:
        d = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    return np.argsort(d, axis=1, kind="stable"), np.sort(d, axis=1)


def test_manhattan_by_hand_and_faiss_refuses_it():
    from search.index import build_index

    dist, idx = distance_estimator(np.array([[0.0, 0.0]]), np.array([[1.0, 1.0], [0.0, 1.5], [3.0, 0.0]]), 3,
                                   metric="manhattan")
    assert idx.tolist() == [[1, 0, 2]] and np.allclose(dist, [[1.5, 2.0, 3.0]])  # L2 would put row 0 first
    with pytest.raises(ConfigError, match="FAISS index 'Flat' serves cosine and euclidean only"):
        build_index("Flat", 4, "manhattan")
    assert build_index("exact", 2, "manhattan") is not None


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "manhattan"])
@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_distance_estimator_matches_brute_force(metric, chunk):
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(23, 16)), rng.normal(size=(57, 16))
    dist, idx = distance_estimator(q, g, k=10, metric=metric, chunk_size=chunk)  # faiss's order
    ref_idx, ref_dist = brute_force(q, g, metric)
    assert idx.shape == (23, 10)
    assert np.array_equal(idx, ref_idx[:, :10])
    assert np.allclose(dist, ref_dist[:, :10], atol=1e-4)


def test_distance_estimator_rejects_bad_input():
    g = np.zeros((5, 4), dtype=np.float32)
    with pytest.raises(DataError, match="k=6"):
        distance_estimator(np.ones((2, 4)), g, k=6)
    with pytest.raises(ValueError, match="equal width"):
        distance_estimator(np.ones((2, 3)), g, k=2)
    with pytest.raises(ConfigError, match="chebyshev"):
        distance_estimator(np.ones((2, 4)), g, k=2, metric="chebyshev")


def test_rank_gives_k_unique_gallery_names_best_first():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(30, 8))
    names = [f"{i:040x}.jpg" for i in range(30)]
    q = g[[3, 17]] + 0.01 * rng.normal(size=(2, 8))  # near-copies of gallery rows 3 and 17
    lists = rank(q, g, names, 10, RetrievalSettings(**load_config()["retrieval"]))
    assert [lst[0] for lst in lists] == [names[3], names[17]]
    for lst in lists:
        assert len(lst) == 10 and len(set(lst)) == 10 and set(lst) <= set(names)
    with pytest.raises(ValueError, match="unique"):
        rank(q, g, names[:-1] + names[:1], 10, RetrievalSettings(**load_config()["retrieval"]))


def test_relevance_matrix_from_names():
    rel = relevance_matrix([["a", "b", "c"], ["x", "y"]], [{"c", "a"}, {"z"}])
    assert rel.tolist() == [[True, False, True], [False, False, False]]


def test_score_embeddings_perfect_and_query_without_match():
    g = np.eye(6, dtype=np.float32)
    q = g[[0, 2]] + 0.01
    report, ranked = score_embeddings(q, g, [{0, 1}, set()], RetrievalSettings(**load_config()["retrieval"]))
    assert report["queries"] == 1 and report["queries_without_match"] == 1
    assert report["top1"] == 1.0 and ranked.shape == (2, 6)


def test_query_gallery_split_keeps_a_gallery_photo_for_every_query():
    labels = ["a"] * 3 + ["b"] * 1 + ["c"] * 2
    q, g = query_gallery_split(labels, queries_per_person=2, seed=0)
    assert not set(q) & set(g) and sorted(q + g) == list(range(6))
    assert [labels[i] for i in q].count("a") == 2 and "b" not in [labels[i] for i in q]
    for i in q:
        assert any(labels[j] == labels[i] for j in g)


def test_the_pipeline_searches_through_the_configured_index():
    from search.retrieval import retrieve
    from settings import load_config

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 16))
    gallery = (np.repeat(centres, 10, axis=0) + 0.1 * rng.standard_normal((200, 16))).astype(np.float32)
    queries = (centres + 0.1 * rng.standard_normal((20, 16))).astype(np.float32)
    rcfg = RetrievalSettings(**load_config()["retrieval"])
    exact_d, exact_i = retrieve(queries, gallery, 10, rcfg)
    flat_d, flat_i = retrieve(queries, gallery, 10, replace(rcfg, index="Flat"))
    assert np.array_equal(flat_i, exact_i) and np.allclose(flat_d, exact_d, atol=1e-5)
    hnsw_d, hnsw_i = retrieve(queries, gallery, 10, replace(rcfg, index="HNSW16", ef_search=64))
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hnsw_i, exact_i)]) >= 0.95
    # An IVF index visiting one cluster of 8 leaves photos out; a full ranking is completed in exact order.
    _, full = retrieve(queries, gallery, 200, replace(rcfg, index="IVF8,Flat", nprobe=1))
    assert all(sorted(row) == list(range(200)) for row in full)
