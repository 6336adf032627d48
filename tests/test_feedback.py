"""Relevance feedback (search/feedback.py) on hand-made embeddings whose right answers are known,
and the oracle simulation of bench/feedback_rounds.py on a seeded synthetic set."""
from __future__ import annotations


from dataclasses import replace

import numpy as np
import pytest

from search.feedback import FEEDBACK, FeedbackSettings, next_round, rocchio
from utils import ConfigError
from settings import load_config

METHODS = list(FEEDBACK)
LEARNED = ["rocchio", "svm", "mlp", "triplet"]


@pytest.fixture(scope="module")
def cfg():
    return FeedbackSettings(**load_config()["feedback"])


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def angles(degrees):
    """Unit 2-D vectors at these angles, as gallery rows."""
    rad = np.radians(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


# Two clusters on the circle: A around 0° (rows 0-5, the query's side), B around 100° (rows 6-11).
NEAR = [0, 4, 8, 12, 16, 20]
FAR = [92, 96, 100, 104, 108, 112]
CLUSTERS = angles(NEAR + FAR)
QUERY = angles([30])[0]   # off-centre: A is nearer, but the query's person is B


def test_nearest_returns_next_unseen_by_distance(cfg):
    assert next_round("nearest", QUERY, CLUSTERS, {}, set(), 3, cfg) == [5, 4, 3]  # 20°, 16°, 12° from 30°
    assert next_round("nearest", QUERY, CLUSTERS, {5: True, 4: False}, {5, 4, 3}, 3, cfg) == [2, 1, 0]
    # marks are ignored: the same with opposite marks
    assert next_round("nearest", QUERY, CLUSTERS, {5: False, 4: True}, {5, 4, 3}, 3, cfg) == [2, 1, 0]


@pytest.mark.parametrize("method", LEARNED)
def test_one_relevant_far_photo_brings_its_cluster(method, cfg):
    # Round 1 (nearest) showed A's six photos and B's nearest; B's photo is marked relevant.
    shown = {0, 1, 2, 3, 4, 5, 6}
    marks = {i: i == 6 for i in shown}
    got = next_round(method, QUERY, CLUSTERS, marks, shown, 5, cfg)
    assert sorted(got) == [7, 8, 9, 10, 11]
    if method not in ("mlp", "triplet"):  # a kernel or a centroid ranks by closeness; a learned map need not
        assert got[0] == 7


@pytest.mark.parametrize("method", LEARNED)
def test_relevant_mark_without_negatives_uses_pseudo_negatives(method, cfg):
    # Three clusters in 3-D; only one relevant mark, no irrelevant one yet.
    rng = np.random.default_rng(0)
    centres = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    gallery = unit(np.repeat(centres, 10, axis=0) + 0.05 * rng.standard_normal((30, 3)))
    query = unit([0.7, 0.7, 0.1])        # between clusters 0 and 1; the person is cluster 1
    got = next_round(method, query, gallery, {10: True}, {10}, 9, cfg)
    assert sorted(got) == list(range(11, 20))


@pytest.mark.parametrize("method", METHODS)
def test_never_returns_shown_or_marked_and_stops_when_exhausted(method, cfg):
    rng = np.random.default_rng(1)
    gallery = unit(rng.standard_normal((40, 8)))
    query = gallery[0]
    shown, marks = set(), {}
    for _ in range(6):
        rows = next_round(method, query, gallery, marks, shown, 8, cfg)
        assert len(rows) == min(8, 40 - len(shown)) and len(set(rows)) == len(rows)
        assert not set(rows) & shown
        shown.update(rows)
        marks.update({i: i % 3 == 0 for i in rows})
    assert shown == set(range(40))
    assert next_round(method, query, gallery, marks, shown, 8, cfg) == []
    # marked rows count as shown even when the caller left them out of `shown`
    rows = next_round(method, query, gallery, {1: True, 2: False}, set(), 40, cfg)
    assert 1 not in rows and 2 not in rows and len(rows) == 38


@pytest.mark.parametrize("method", METHODS)
def test_fewer_than_k_left(method, cfg):
    shown = set(range(10))
    got = next_round(method, QUERY, CLUSTERS, {6: True, 0: False}, shown, 8, cfg)
    assert sorted(got) == [10, 11]


@pytest.mark.parametrize("method", METHODS)
def test_nothing_marked_is_plain_nearest(method, cfg):
    assert next_round(method, QUERY, CLUSTERS, {}, {5}, 4, cfg) == [4, 3, 2, 1]


@pytest.mark.parametrize("method", ["svm", "mlp", "triplet"])
def test_no_relevant_mark_falls_back_to_rocchio(method, cfg):
    shown = {5, 4, 3}
    marks = {5: False, 4: False, 3: False}
    expected = rocchio(QUERY, CLUSTERS, marks, shown, 5, cfg)
    assert next_round(method, QUERY, CLUSTERS, marks, shown, 5, cfg) == expected


def test_rocchio_without_relevant_moves_away_from_irrelevant(cfg):
    # Query at 30°; A at 0-20° marked irrelevant: q − γ·mean(A) turns towards B. With a large γ,
    # B's photos come before A's remaining ones.
    shown = {3, 4, 5}
    marks = {i: False for i in shown}
    strong = replace(cfg, rocchio_gamma=1.0)
    # q − mean(A's 12-20°) points at about 113°: B's far end first
    assert next_round("rocchio", QUERY, CLUSTERS, marks, shown, 3, strong) == [11, 10, 9]
    assert next_round("nearest", QUERY, CLUSTERS, marks, shown, 3, strong) == [2, 1, 0]


@pytest.mark.parametrize("method", METHODS)
def test_deterministic(method, cfg):
    rng = np.random.default_rng(2)
    gallery = unit(rng.standard_normal((200, 16)))
    marks = {int(i): bool(i % 2) for i in rng.choice(200, 12, replace=False)}
    first = next_round(method, gallery[0], gallery, marks, set(marks), 10, cfg)
    assert next_round(method, gallery[0], gallery, marks, set(marks), 10, cfg) == first


def test_svm_decision_by_matrix_products_matches_sklearn(cfg):
    from sklearn.svm import SVC

    from search.feedback import _svm_decision

    rng = np.random.default_rng(3)
    x = unit(rng.standard_normal((30, 16)))
    y = (x[:, 0] > 0).astype(int)
    model = SVC(C=1.0, kernel="rbf", gamma=2.0, class_weight="balanced").fit(x, y)
    rows = unit(rng.standard_normal((50, 16)))
    np.testing.assert_allclose(_svm_decision(model, rows, 2.0), model.decision_function(rows), atol=1e-5)


def test_ties_go_to_the_lower_row(cfg):
    gallery = unit([[1, 0], [0, 1], [1, 0], [0, 1], [1, 0]])
    assert next_round("nearest", unit([1, 0.1]), gallery, {}, {0}, 2, cfg) == [2, 4]
    assert next_round("nearest", unit([1, 0.1]), gallery, {}, set(), 5, cfg) == [0, 2, 4, 1, 3]


def test_unknown_method_and_bad_input(cfg):
    with pytest.raises(ConfigError, match=r"feedback\.method.*'knn'.*nearest, rocchio, svm, mlp"):
        next_round("knn", QUERY, CLUSTERS, {}, set(), 3, cfg)
    with pytest.raises(ValueError, match="out of range"):
        next_round("svm", QUERY, CLUSTERS, {99: True}, set(), 3, cfg)
    with pytest.raises(ValueError, match="gallery"):
        next_round("svm", np.ones(3), CLUSTERS, {}, set(), 3, cfg)
    assert next_round("svm", QUERY, CLUSTERS, {6: True}, {6}, 0, cfg) == []


def test_the_default_method_is_registered():
    assert load_config()["feedback"]["method"] in FEEDBACK


def _bench():
    """bench/feedback_rounds.py, a script (bench/ is not installed), loaded from its file."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("feedback_rounds", ROOT / "bench" / "feedback_rounds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oracle_simulation_svm_beats_nearest_on_degraded_queries(cfg):
    """Seeded, 32-D: each of 6 people has 30 photos around their centre and 2 photos like the
    degraded query, which sits 60 % of the way towards a look-alike distractor (40 tight photos);
    200 other people. Nearest neighbours find the 2 look-alike photos in round 1, then walk down the
    distractor's photos; the SVM learns from them and brings the person's other photos."""
    bench = _bench()
    rng = np.random.default_rng(0)
    dim, photos = 32, 30
    rows, queries, correct = [], [], []
    for _ in range(6):
        person, other = unit(rng.standard_normal(dim)), unit(rng.standard_normal(dim))
        distractor = unit(0.4 * person + 0.9 * other)
        between = unit(0.4 * person + 0.6 * distractor)
        start = sum(len(r) for r in rows)
        rows += [unit(person + 0.35 * rng.standard_normal((photos, dim)) / np.sqrt(dim)),
                 unit(between + 0.15 * rng.standard_normal((2, dim)) / np.sqrt(dim)),
                 unit(distractor + 0.15 * rng.standard_normal((40, dim)) / np.sqrt(dim))]
        correct.append(set(range(start, start + photos + 2)))
        queries.append(unit(between + 0.1 * rng.standard_normal(dim) / np.sqrt(dim)))
    gallery = np.vstack(rows + [unit(rng.standard_normal((200, dim)))])
    results = bench.run_condition(np.asarray(queries), gallery, correct, ["nearest", "svm"], 5, 8, cfg)
    nn, sv = results["nearest"]["hits"], results["svm"]["hits"]
    assert nn[:, 0].all() and sv[:, 0].all()            # round 1, the same for both, finds a look-alike
    assert sv[:, 4].mean() > nn[:, 4].mean()            # round 5: the SVM still finds the person
    assert sv[:, 1:5].mean() > nn[:, 1:5].mean() + 0.5  # rounds 2-5 on the whole
    assert "| degraded | svm |" in bench.table({"degraded": results}, 5, 8)
