"""search/index.py: the exact backend against brute force, faiss backends against exact
(recall@10), removal, save/load, ids and the errors, on small seeded clustered unit vectors."""
from __future__ import annotations

import numpy as np
import pytest

from search.exact import exact_knn
from search.retrieval_settings import RetrievalSettings
from search.index import (INDEX_KINDS, ExactIndex, FaissIndex, SearchIndexError, build_index,
                          kind_of, load_index)
from utils import ConfigError

N, D, Q, K = 2000, 64, 50, 10
BACKENDS = {  # spec: build_index keywords, at the settings the recall test asks ≥ 0.95 of
    "exact": {},
    "Flat": {},
    "IVF32,Flat": {"nprobe": 8},
    "HNSW32": {"ef_search": 64},
}


def clustered(n: int, q: int, dim: int, per: int = 20, noise: float = 1.0, seed: int = 0):
    """n gallery and q query unit vectors in clusters of `per` (an identity's photos); noise of
    norm about `noise` around unit centres (photo-to-photo cosine about 0.5)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // per, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    of = np.concatenate([np.arange(n) % len(centres), rng.integers(0, len(centres), q)])
    x = centres[of] + noise / np.sqrt(dim) * rng.standard_normal((n + q, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


GALLERY, QUERIES = clustered(N, Q, D)
IDS = (np.random.default_rng(1).choice(10**12, N, replace=False) * 7 + 3).astype(np.int64)  # non-contiguous


def built(spec: str, metric: str = "cosine", n: int = N):
    index = build_index(spec, D, metric, **BACKENDS[spec])
    index.add(GALLERY[:n], IDS[:n])
    return index


def brute(queries, gallery, k, metric):
    if metric == "cosine":
        dist = 1.0 - queries.astype(np.float64) @ gallery.T.astype(np.float64)
    else:
        dist = np.sqrt(((queries[:, None, :].astype(np.float64) - gallery[None]) ** 2).sum(-1))
    rows = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, rows, 1), rows


def recall(ids, truth):
    return np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)])


@pytest.fixture(scope="module")
def exact_top():
    return built("exact").search(QUERIES, K)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_equals_brute_force_with_chunks_smaller_than_the_queries(metric):
    scale = np.linspace(0.5, 2.0, N, dtype=np.float32)[:, None]  # euclidean: vectors of many lengths
    gallery = GALLERY * scale if metric == "euclidean" else GALLERY
    index = ExactIndex(D, metric, chunk_size=7)
    index.add(gallery, IDS)
    dist, ids = index.search(QUERIES, K)
    want_d, want_rows = brute(QUERIES, gallery, K, metric)
    assert np.array_equal(ids, IDS[want_rows])
    assert dist.dtype == np.float32 and ids.dtype == np.int64 and dist.shape == ids.shape == (Q, K)
    assert np.allclose(dist, want_d, atol=1e-5)


def test_exact_knn_merges_gallery_blocks(monkeypatch):
    import search.exact as module

    whole = exact_knn(QUERIES, GALLERY, K, "euclidean", chunk_size=16)
    monkeypatch.setattr(module, "TILE_ELEMENTS", 16 * 100)  # 100 gallery rows per block: 20 blocks
    blocked = exact_knn(QUERIES, GALLERY, K, "euclidean", chunk_size=16)
    assert np.array_equal(whole[1], blocked[1]) and np.allclose(whole[0], blocked[0])


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "manhattan"])
@pytest.mark.parametrize("tile", [None, 4 * 7])
def test_exact_knn_breaks_ties_by_the_lower_row_in_every_block(monkeypatch, metric, tile):
    """NumPy's exact search (no PyTorch, so both installs rank alike) orders equal distances by gallery row, whether
    the k-th distance is tied or not and however the gallery is split into blocks (vectors whose distances are exact
    in float32: small whole numbers; for cosine, multiples of the axes)."""
    import search.exact as module

    if tile:
        monkeypatch.setattr(module, "TILE_ELEMENTS", tile)  # 7 gallery rows a block
    rng = np.random.default_rng(3)
    if metric == "cosine":
        base = np.eye(8, dtype=np.float32)[rng.integers(0, 8, 10)] * rng.integers(1, 4, (10, 1)) * rng.choice([-1, 1], (10, 1))
    else:
        base = rng.integers(-3, 4, (10, 8)).astype(np.float32)
    gallery = base[rng.integers(0, len(base), 40)]  # every row 4 times on average: ties everywhere, at k too
    queries = np.concatenate([base[:3], base[3:6] * 2]).astype(np.float32)
    for k in (1, 5, 9, 40):
        dist, rows = exact_knn(queries, gallery, k, metric, chunk_size=4)
        for q in range(len(queries)):
            want = np.lexsort((np.arange(40), _distances(queries[q], gallery, metric)))[:k]
            assert np.array_equal(rows[q], want), (metric, k, q)
        assert np.all(np.diff(dist, axis=1) >= 0)


def _distances(query: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """Distances in float64 (exact for these vectors)."""
    query, gallery = query.astype(np.float64), gallery.astype(np.float64)
    if metric == "cosine":
        return 1 - gallery @ query / np.linalg.norm(gallery, axis=1) / np.linalg.norm(query)
    if metric == "euclidean":
        return np.linalg.norm(gallery - query, axis=1)
    return np.abs(gallery - query).sum(1)


@pytest.mark.parametrize("spec", ["Flat", "IVF32,Flat", "HNSW32"])
def test_faiss_backends_against_exact(spec, exact_top):
    dist, ids = built(spec).search(QUERIES, K)
    assert dist.shape == ids.shape == (Q, K) and np.all(np.diff(dist, axis=1) >= 0)
    if spec == "Flat":
        assert np.array_equal(ids, exact_top[1])
        assert np.allclose(dist, exact_top[0], atol=1e-5)
    else:
        assert recall(ids, exact_top[1]) >= 0.95
        hit = ids == exact_top[1]
        assert np.allclose(dist[hit], exact_top[0][hit], atol=1e-5)  # same distances where they agree


def test_faiss_euclidean_distances_are_true_l2():
    dist, ids = built("Flat", "euclidean").search(QUERIES, K)
    want_d, want_rows = brute(QUERIES, GALLERY, K, "euclidean")
    assert np.array_equal(ids, IDS[want_rows]) and np.allclose(dist, want_d, atol=1e-5)


@pytest.mark.parametrize("spec", list(BACKENDS))
def test_remove_really_removes(spec):
    index = built(spec)
    _, before = index.search(QUERIES, K + Q)  # deep enough for every row to keep K after removal
    gone = np.unique(before[:, 0])  # every query's nearest
    assert index.remove(np.concatenate([gone, [10**15, 5]])) == len(gone)  # unknown ids: not counted
    assert len(index) == index.ntotal == N - len(gone)
    assert index.remove(gone) == 0  # already gone
    dist, ids = index.search(QUERIES, K)
    assert not np.isin(ids, gone).any()
    # The next nearest takes their place (exactly for exact/Flat; for the approximate ones, mostly).
    shifted = [row[~np.isin(row, gone)][:K] for row in before]
    if spec in ("exact", "Flat"):
        assert np.array_equal(ids, np.array(shifted))
    else:
        assert recall(ids, np.array(shifted)) >= 0.9
    # A removed id can be added again, with a new vector, and is found there.
    index.add(QUERIES[:1], gone[:1])
    d, i = index.search(QUERIES[:1], 1)
    assert i[0, 0] == gone[0] and d[0, 0] == pytest.approx(0.0, abs=1e-5)


def test_hnsw_removal_filters_inside_the_search_and_keeps_k_results():
    index = built("HNSW32")
    _, first = index.search(QUERIES, 50)
    gone = np.unique(first[:, :20])  # a lot of each query's neighbourhood
    assert index.remove(gone) == len(gone)
    assert index.index.ntotal == N  # faiss's HNSW cannot delete: they are tombstones
    dist, ids = index.search(QUERIES, K)
    assert (ids >= 0).all() and not np.isin(ids, gone).any() and np.isfinite(dist).all()


@pytest.mark.parametrize("spec", list(BACKENDS))
def test_save_load_round_trip(spec, tmp_path):
    index = built(spec)
    index.remove(IDS[::97])
    path = tmp_path / "sub" / "gallery.index"
    index.save(path)
    again = load_index(path)
    assert type(again) is type(index) and (again.spec, again.dim, again.metric, len(again)) == \
        (index.spec, D, "cosine", len(index))
    assert again.params() == index.params()
    for a, b in zip(index.search(QUERIES, K), again.search(QUERIES, K)):
        assert np.array_equal(a, b)
    assert [p.name for p in path.parent.iterdir()] == ["gallery.index"]  # no temporary file left
    if isinstance(index, FaissIndex):  # counted while written, never held whole in memory
        import faiss

        assert index.size_bytes() == faiss.serialize_index(index.index).nbytes
    else:
        assert index.size_bytes() == (N - len(IDS[::97])) * (D * 4 + 8)


def test_custom_ids_and_padding():
    for spec in ("exact", "Flat", "HNSW32"):
        index = build_index(spec, D, **BACKENDS[spec])
        ids = np.array([2**62, 17, 5_000_000_001], dtype=np.int64)
        index.add(GALLERY[:3], ids)
        dist, got = index.search(GALLERY[:3], 5)
        assert got[:, 0].tolist() == ids.tolist(), spec
        assert (got[:, 3:] == -1).all() and np.isinf(dist[:, 3:]).all() and np.isfinite(dist[:, :3]).all()
        assert index.remove([17]) == 1
        dist, got = index.search(GALLERY[:1], 3)
        assert got.tolist() == [[2**62, 5_000_000_001, -1]], spec
    empty = build_index("exact", D)
    dist, got = empty.search(QUERIES[:2], 2)
    assert got.tolist() == [[-1, -1]] * 2 and np.isinf(dist).all()


@pytest.mark.parametrize("spec", ["exact", "Flat", "HNSW32"])
def test_duplicate_ids_are_refused_by_name(spec):
    index = build_index(spec, D)
    with pytest.raises(SearchIndexError, match="duplicate ids in this add: 4, 9"):
        index.add(GALLERY[:5], [4, 9, 4, 9, 1])
    index.add(GALLERY[:3], [1, 2, 3])
    with pytest.raises(SearchIndexError, match="already in the index: 3"):
        index.add(GALLERY[3:5], [3, 8])
    assert len(index) == 3
    with pytest.raises(SearchIndexError, match="must be \\(n, 64\\)"):
        index.add(GALLERY[:2, :10], [5, 6])
    with pytest.raises(SearchIndexError, match="≥ 0"):
        index.add(GALLERY[:1], [-1])


def test_too_small_ivf_training_set_names_the_spec_and_the_count():
    index = build_index("IVF256,Flat", D)
    with pytest.raises(ConfigError, match=r"'IVF256,Flat' needs at least 256 vectors to train .* got 100: "
                                          r"use a smaller nlist"):
        index.add(GALLERY[:100], IDS[:100])
    assert len(index) == 0 and not index.is_trained


def test_bad_spec_and_metric_are_config_errors():
    with pytest.raises(ConfigError, match="retrieval.index 'IVFx,Magic'"):
        build_index("IVFx,Magic", D)
    with pytest.raises(ConfigError, match="retrieval.metric 'dot'"):
        build_index("exact", D, "dot")


def test_registry_and_config():
    assert set(INDEX_KINDS) == {"exact", "faiss"}
    assert kind_of("exact") == "exact" and kind_of("HNSW32") == kind_of("IVF1024,Flat") == "faiss"
    index = build_index("IVF16,Flat", D, nprobe=3, ef_search=9)
    assert isinstance(index, FaissIndex) and index.params()["nprobe"] == 3
    import faiss

    assert faiss.extract_index_ivf(index.index).nprobe == 3
    hnsw = build_index("HNSW16", D, ef_search=33)
    assert faiss.downcast_index(hnsw.index.index).hnsw.efSearch == 33


@pytest.mark.parametrize("spec", list(BACKENDS))
def test_a_vectors_distance_to_itself_is_never_below_zero_or_printed_negative(spec):
    """1 - cos of a unit vector with itself rounds a hair below 0 for about one vector in five (float32 sums; which
    ones depends on the CPU): every search answers 0 there, never -2e-7 or -0.0, which prints as "-0.000"."""
    from search.exact import cosine_distance
    from search.rerank import rerank

    vectors = np.random.default_rng(3).standard_normal((500, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert (1.0 - np.einsum("nd,nd->n", vectors, vectors) < 0).any(), "the data holds the case the test is about"
    index = build_index(spec, 128, "cosine", **BACKENDS[spec])
    index.add(vectors, np.arange(len(vectors)))
    dist, ids = index.search(vectors, 3)
    assert (ids[:, 0] == np.arange(len(vectors))).mean() > 0.95
    assert (dist >= 0).all() and not np.signbit(dist).any()
    assert {f"{d:.3f}" for d in dist[:, 0]} == {"0.000"}
    d2, _ = rerank(vectors, vectors, dist, ids, RetrievalSettings(rerank=["aqe"]))
    assert (d2 >= 0).all() and not np.signbit(d2).any()
    assert not np.signbit(cosine_distance(np.float32(1.0) + np.float32(1e-7))).any()
