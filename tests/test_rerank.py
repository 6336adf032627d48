"""The retrieval pipeline's re-rankers, test-time augmentation and degraded queries, on tiny
hand-made embeddings where the right order is known."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from search import retrieval
from dataset import degrade
from search.retrieval import retrieve
from search.rerank import RERANKERS, k_reciprocal_distances
from search.retrieval_settings import RetrievalSettings
from utils import ConfigError
from settings import load_config

RCFG = load_config()["retrieval"]


def unit(*rows):
    x = np.array(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cfg(**kw):
    return RetrievalSettings(**dict(RCFG, **kw))


# A query q; g0 and g1 are the query's person (g1 seen from further away, but close to g0);
# g2 is another person, nearer to q than g1 and far from g0 and g1.
Q = unit([1.0, 0.0, 0.0])
G = unit([0.95, 0.31, 0.0],   # g0: same person, near
         [0.45, 0.89, 0.0],   # g1: same person, far from q, near g0
         [0.6, -0.2, 0.77])   # g2: another person, nearer q than g1


def test_plain_search_puts_the_other_person_second():
    _, ids = retrieve(Q, G, 3, cfg(rerank=[]))
    assert ids.tolist() == [[0, 2, 1]]


@pytest.mark.parametrize("name", ["aqe", "alpha_qe"])
def test_query_expansion_brings_the_far_photo_of_the_same_person_up(name):
    dist, ids = retrieve(Q, G, 3, cfg(rerank=[name], qe_k=1))
    assert ids.tolist() == [[0, 1, 2]]
    assert np.all(np.diff(dist[0]) >= 0)  # distances stay sorted, nearest first


def test_alpha_qe_weights_results_by_similarity():
    # The new query is q + Σ sim(q, g)^α g over the qe_k nearest, normalised (Radenović et al.).
    sims = (G @ Q[0])[[0, 2]]
    for name, alpha in (("aqe", 0.0), ("alpha_qe", 3.0)):
        weights = sims ** alpha
        new = Q[0] + weights[0] * G[0] + weights[1] * G[2]
        new /= np.linalg.norm(new)
        dist, ids = retrieve(Q, G, 3, cfg(rerank=[name], qe_k=2, qe_alpha=alpha))
        assert np.allclose(dist[0], np.sort(1 - G @ new), atol=1e-6), name
        assert ids[0].tolist() == np.argsort(1 - G @ new).tolist()


def test_dba_moves_a_gallery_photo_towards_its_neighbours():
    # Person A: a_near (near q) and a_far (far from q, near a_near); person B: two photos near each
    # other, both nearer q than a_far. DBA averages each photo with its nearest neighbour, so a_far
    # is pulled towards a_near, and B's photos stay where they were.
    gallery = unit([0.97, 0.24, 0], [0.55, 0.83, 0], [0.62, -0.3, 0.72], [0.6, -0.25, 0.76])
    _, plain = retrieve(Q, gallery, 4, cfg(rerank=[]))
    dist, ids = retrieve(Q, gallery, 4, cfg(rerank=["dba"], dba_k=1, dba_alpha=0.0))
    assert plain.tolist() == [[0, 2, 3, 1]] and ids.tolist() == [[0, 1, 2, 3]]
    a = (gallery[0] + gallery[1]) / np.linalg.norm(gallery[0] + gallery[1])
    assert dist[0, 1] == pytest.approx(1 - a @ Q[0], abs=1e-6)


def angles(*degrees):
    r = np.radians(np.array(degrees, dtype=float))
    return np.c_[np.cos(r), np.sin(r), np.zeros(len(r))].astype(np.float32)


def test_k_reciprocal_prefers_mutual_neighbours():
    # The query's person A is spread around the query; person B is a tight group to one side,
    # whose photos are each other's neighbours rather than the query's.
    q, gallery = angles(0), np.vstack([angles(-10, 12, 20, 28), angles(-16, -18, -20, -22)])

    def ap(ids):
        hits = np.isin(ids, [0, 1, 2, 3])
        return np.mean(np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1))

    _, plain = retrieve(q, gallery, 8, cfg(rerank=[]))
    _, kr = retrieve(q, gallery, 8, cfg(rerank=["k_reciprocal"], kr_k1=3, kr_k2=1, kr_lambda=0.3))
    assert plain[0].tolist() == [0, 1, 4, 5, 2, 6, 7, 3]
    assert kr[0].tolist() == [0, 1, 4, 2, 5, 6, 3, 7]  # A's 3rd and 4th photos move up past B's
    assert ap(kr[0]) > ap(plain[0])


def test_k_reciprocal_distance_matches_a_hand_computed_case():
    # Three points: the query (0), its mutual nearest neighbour (1) and a far point (2).
    original = np.array([[0.0, 0.1, 0.9], [0.1, 0.0, 0.8], [0.9, 0.8, 0.0]])
    final = k_reciprocal_distances(original, k1=1, k2=1, lam=0.0)
    # Row-normalised distances d[i, j] = original[i, j] / max_k original[k, i]; with k1=1 the
    # reciprocal sets are {0, 1}, {0, 1}, {2}: weights exp(-d) normalised, and the Jaccard
    # distance of the query with itself is 0 and with the far point 1.
    assert final[0] == pytest.approx(0.0, abs=1e-6) and final[2] == pytest.approx(1.0)
    assert 0 < final[1] < 1


def test_shortlist_bounds_the_work_and_the_tail_keeps_its_order(monkeypatch):
    rng = np.random.default_rng(1)
    gallery = rng.standard_normal((400, 8)).astype(np.float32)
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    seen = []
    import search.rerank as rerank_module

    real = rerank_module.exact_knn

    def spy(q, g, k, *args, **kwargs):  # DBA's own neighbour look-ups
        seen.append((len(q), len(g), k))
        return real(q, g, k, *args, **kwargs)

    monkeypatch.setattr(rerank_module, "exact_knn", spy)
    _, plain = retrieve(queries, gallery, 400, cfg(rerank=[]))
    assert not seen
    _, reranked = retrieve(queries, gallery, 400, cfg(rerank=["dba", "alpha_qe", "k_reciprocal"], shortlist=20))
    assert np.array_equal(reranked[:, 20:], plain[:, 20:])  # beyond the shortlist: untouched
    for a, b in zip(reranked, plain):
        assert set(a[:20]) == set(b[:20])  # within it: the same photos, reordered
    # DBA looked up neighbours of shortlisted photos only (at most 5 × 20 rows), never 400 × 400.
    assert seen and all(rows <= 5 * 20 for rows, _, _ in seen)


def test_unknown_reranker_and_euclidean_are_refused():
    with pytest.raises(ConfigError, match="retrieval.rerank 'magic'"):
        retrieve(Q, G, 2, cfg(rerank=["magic"]))
    with pytest.raises(ConfigError, match="metric=cosine"):
        retrieve(Q, G, 2, cfg(rerank=["aqe"], metric="euclidean"))
    assert set(RERANKERS) == {"aqe", "alpha_qe", "dba", "k_reciprocal"}


def test_rank_and_evaluation_share_the_pipeline():
    from pipeline.protocol import score_embeddings

    names = ["g0", "g1", "g2"]
    assert retrieval.rank(Q, G, names, 3, cfg(rerank=["aqe"], qe_k=1)) == [["g0", "g1", "g2"]]
    report, ranked = score_embeddings(Q, G, [{0, 1}], cfg(rerank=["aqe"], qe_k=1))
    assert ranked.tolist() == [[0, 1, 2]] and report["map"] == pytest.approx(1.0)
    report, _ = score_embeddings(Q, G, [{0, 1}], cfg(rerank=[]))
    assert report["map"] == pytest.approx((1 + 2 / 3) / 2)


# ---------------------------------------------------------------- test-time augmentation

def test_flip_tta_averages_the_photo_and_its_mirror():
    from network import embed
    from conftest import net

    torch.manual_seed(0)
    model = net("resnet18", 16, cfg=load_config(overrides=["input.size=32"])).eval()
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    plain = embed(model, crops)
    mirrored = embed(model, [c[:, ::-1].copy() for c in crops])
    flip = embed(model, crops, tta="flip")
    expected = (plain + mirrored) / np.linalg.norm(plain + mirrored, axis=1, keepdims=True)
    assert np.allclose(flip, expected, atol=1e-5)
    assert np.allclose(embed(model, [c[:, ::-1].copy() for c in crops], tta="flip"), flip, atol=1e-5)
    assert not np.allclose(flip, plain, atol=1e-3)
    with pytest.raises(ConfigError, match="embedding.tta"):
        embed(model, crops, tta="rotate")


# ---------------------------------------------------------------- degraded queries

def test_degradations_are_seeded_and_do_what_they_say():
    image = np.full((112, 112, 3), 128, np.uint8)
    cut = degrade(image, "cutout", 3)
    side = round(112 * 100 / 224)
    assert (cut == 0).all(axis=2).sum() == side * side and np.array_equal(cut, degrade(image, "cutout", 3))
    assert not np.array_equal(cut, degrade(image, "cutout", 4))
    gammas = {int(degrade(image, "gamma", s)[0, 0, 0]) for s in range(20)}
    assert all(abs(g - 128) > 20 for g in gammas) and any(g < 128 for g in gammas) and any(g > 128 for g in gammas)
    both = degrade(image, "both", 5)
    assert (both == 0).all(axis=2).sum() == side * side and len(np.unique(both)) == 2
    assert np.array_equal(degrade(image, "none", 1), image)
    with pytest.raises(ValueError, match="evaluate.degrade"):
        degrade(image, "blur", 1)


@pytest.mark.slow
def test_degraded_evaluation_degrades_queries_only(tiny_cfg, tmp_path, monkeypatch):
    from cli import split
    import train
    from conftest import PEOPLE
    from competition import scoring
    from cli.evaluate import evaluate_checkpoint

    embedded = []  # (folder name, degradation, embeddings) of every folder evaluation embeds
    real = scoring.embed_folder

    def spy(folder, model, device, degradation="none", **settings):
        out = real(folder, model, device, degradation=degradation, **settings)
        embedded.append((Path(folder).name, degradation, out.embeddings.copy()))
        return out

    monkeypatch.setattr(scoring, "embed_folder", spy)

    comp = tmp_path / "comp"
    assert split.main(["--people", str(PEOPLE), "--out", str(comp), "split.test_fraction=0.4"]) == 0
    train.train(load_config(overrides=[f"data.train_dir={comp / 'train'}", "train.epochs=1",
                                       "data.val_fraction=0"], base=tiny_cfg))
    ckpt = str(tmp_path / "run" / "best.pt")
    overrides = [f"data.cache_dir={tmp_path / 'cache'}", f"evaluate.figure={tmp_path / 'g.png'}"]
    clean = evaluate_checkpoint(ckpt, [], overrides, competition=str(comp))
    again = evaluate_checkpoint(ckpt, [], overrides + ["evaluate.degrade=both"], competition=str(comp))
    repeat = evaluate_checkpoint(ckpt, [], overrides + ["evaluate.degrade=both"], competition=str(comp))
    assert again == repeat  # seeded: every run and every variant sees the same degradations
    assert again["queries"] == clean["queries"]
    runs = {(name, how): emb for name, how, emb in embedded}
    assert set(runs) == {("query", "none"), ("gallery", "none"), ("query", "both")}  # the gallery never degraded
    assert np.allclose(embedded[1][2], embedded[3][2])  # the gallery's embeddings: the same in both runs
    assert not np.allclose(runs["query", "none"], runs["query", "both"], atol=1e-3)  # the queries: changed
    with pytest.raises(ConfigError, match="evaluate.degrade"):
        evaluate_checkpoint(ckpt, [], overrides + ["evaluate.degrade=fog"], competition=str(comp))
