"""Nearest-neighbour indexes with faiss's shape: one interface, an exact backend and faiss's.

    index = build_index("exact" | "Flat" | "IVF1024,Flat" | "HNSW32" | …, dim, metric="cosine")
    index.add(vectors (N, D) float32, ids (N,) int64)
    index.remove(ids) -> how many were removed
    distances, ids = index.search(queries (Q, D), k)    # (Q, k) each, nearest first
    index.save(path); index = load_index(path)

Distances are cosine distances (1 - similarity; vectors are normalised on add and on search) or
true Euclidean distances (not squared), ascending. Where fewer than k vectors remain, rows are
padded with distance inf and id -1, as faiss pads with -1.

`ExactIndex` is the exact chunked matrix product (NumPy) the pipeline always used; `FaissIndex`
is any faiss factory string, trained on its first add where it needs training, with `nprobe`
(IVF) and `efSearch` (HNSW) set from the config. Adding a backend is a class plus a line in
INDEX_KINDS (and in `kind_of` when it claims specs of its own).
"""
from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from search.exact import check_metric, cosine_distance, exact_knn, unit
from utils import ConfigError, FacematchError, atomic_write, get_logger

FORMAT = 1                  # version of the saved file's layout
log = get_logger()


class SearchIndexError(FacematchError, ValueError):
    """Bad input to an index (shapes, duplicate or negative ids, an unreadable index file)."""


class Index(ABC):
    """A searchable set of vectors with int64 ids; arguments in faiss's order."""

    kind = ""   # the INDEX_KINDS key, written into saved files

    def __init__(self, spec: str, dim: int, metric: str = "cosine"):
        check_metric(metric)
        if int(dim) < 1:
            raise ConfigError(f"index dimension must be positive, got {dim}")
        self.spec, self.dim, self.metric = spec, int(dim), metric

    # ------------------------------------------------------------ the interface
    @abstractmethod
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add N vectors (N, dim) under N distinct int64 ids not already in the index."""

    @abstractmethod
    def remove(self, ids) -> int:
        """Remove these ids (unknown ids are ignored); returns how many were removed."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances (Q, k) float32 ascending, ids (Q, k) int64), padded with (inf, -1)."""

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Vectors in the index (removed ones not counted)."""

    def __len__(self) -> int:
        return self.ntotal

    def params(self) -> dict:
        """Settings saved with the index and given back to the constructor on load."""
        return {}

    def save(self, path: str | Path) -> None:
        """Write the index to one .npz file, atomically: a JSON header (kind, spec, metric, dim,
        params) and the backend's arrays."""
        header = {"format": FORMAT, "kind": self.kind, "spec": self.spec, "metric": self.metric,
                  "dim": self.dim, "params": self.params()}
        arrays = self._arrays()

        def write(tmp):
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)

        atomic_write(path, write)

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """The arrays save() stores besides the header."""

    @classmethod
    @abstractmethod
    def _restore(cls, header: dict, arrays) -> "Index":
        """The index that save() wrote, from its header and arrays."""

    # ------------------------------------------------------------ shared checks
    def _check_vectors(self, vectors, what: str) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1 and x.size == self.dim:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise SearchIndexError(f"{what} must be (n, {self.dim}) for this index, got {tuple(np.shape(vectors))}")
        if not np.isfinite(x).all():
            raise SearchIndexError(f"{what} hold NaN or infinite values")
        return unit(x) if self.metric == "cosine" else np.ascontiguousarray(x)

    def _check_new_ids(self, ids, n: int, existing: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 1 or len(ids) != n:
            raise SearchIndexError(f"{n} vectors need {n} ids in a 1-D array, got shape {ids.shape}")
        if n and not np.issubdtype(ids.dtype, np.integer):
            raise SearchIndexError(f"ids must be integers, got {ids.dtype}")
        ids = ids.astype(np.int64)
        if n and ids.min() < 0:
            raise SearchIndexError(f"ids must be ≥ 0 (-1 marks a missing result), got {sorted(set(ids[ids < 0].tolist()))[:10]}")
        uniq, counts = np.unique(ids, return_counts=True)
        twice = uniq[counts > 1]
        if len(twice):
            raise SearchIndexError(f"duplicate ids in this add: {_some(twice)}")
        already = ids[np.isin(ids, existing)]
        if len(already):
            raise SearchIndexError(f"ids already in the index: {_some(already)} (remove them first)")
        return ids

    @staticmethod
    def _check_k(k) -> int:
        if int(k) < 1:
            raise SearchIndexError(f"k must be at least 1, got {k}")
        return int(k)

    @staticmethod
    def _pad(dist: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if dist.shape[1] < k:
            extra = k - dist.shape[1]
            dist = np.pad(dist, ((0, 0), (0, extra)), constant_values=np.inf)
            ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=-1)
        return dist.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, dim={self.dim}, metric={self.metric!r}, ntotal={self.ntotal})"


def _some(ids: np.ndarray, n: int = 10) -> str:
    ids = sorted(set(int(i) for i in ids))
    return ", ".join(map(str, ids[:n])) + (f" … ({len(ids)} in all)" if len(ids) > n else "")


class ExactIndex(Index):
    """Exact search: the vectors in NumPy, chunked matrix products (exact_knn)."""

    kind = "exact"

    def __init__(self, dim: int, metric: str = "cosine", chunk_size: int = 1024, spec: str = "exact"):
        super().__init__(spec, dim, metric)
        self.chunk_size = int(chunk_size)
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._sq = None  # squared norms (euclidean), computed on the first search after a change

    @property
    def ntotal(self) -> int:
        return len(self._ids)

    def params(self) -> dict:
        return {"chunk_size": self.chunk_size}

    def add(self, vectors, ids) -> None:
        x = self._check_vectors(vectors, "vectors")
        ids = self._check_new_ids(ids, len(x), self._ids)
        if len(self._ids):
            x = np.concatenate([self._vectors, x])
        elif np.may_share_memory(x, vectors):  # euclidean: never keep the caller's array itself
            x = x.copy()
        self._vectors = x
        self._ids = np.concatenate([self._ids, ids])
        self._sq = None

    def remove(self, ids) -> int:
        gone = np.isin(self._ids, np.asarray(ids, dtype=np.int64).ravel())
        n = int(gone.sum())
        if n:
            self._vectors, self._ids, self._sq = self._vectors[~gone], self._ids[~gone], None
        return n

    def search(self, queries, k):
        k = self._check_k(k)
        q = self._check_vectors(queries, "queries")
        kk = min(k, self.ntotal)
        if kk == 0:
            return self._pad(np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64), k)
        if self.metric == "euclidean" and self._sq is None:
            self._sq = np.einsum("ij,ij->i", self._vectors, self._vectors)
        dist, rows = exact_knn(q, self._vectors, kk, self.metric, self.chunk_size,
                               normalized=True, gallery_sq=self._sq)
        return self._pad(dist, self._ids[rows], k)

    def size_bytes(self) -> int:
        """Bytes of the vectors and ids (what save() writes)."""
        return int(self._vectors.nbytes + self._ids.nbytes)

    def _arrays(self):
        return {"vectors": self._vectors, "ids": self._ids}

    @classmethod
    def _restore(cls, header, arrays):
        index = cls(header["dim"], header["metric"], spec=header["spec"], **header["params"])
        index._vectors = np.ascontiguousarray(arrays["vectors"], dtype=np.float32)
        index._ids = np.asarray(arrays["ids"], dtype=np.int64)
        return index


class FaissIndex(Index):
    """Any faiss factory string ("Flat", "IVF1024,Flat", "HNSW32", "IVF256,PQ32", …).

    Cosine uses METRIC_INNER_PRODUCT on normalised vectors (distance 1 - ip); euclidean uses
    METRIC_L2 (distance sqrt of faiss's squared L2).

    Ids: faiss holds labels of our own, 0, 1, 2, … in order of addition (IVF indexes take them
    with add_with_ids natively; any other index is wrapped in an IndexIDMap, whose remove_ids
    works where the inner index's does: no reconstruct is needed, so no IndexIDMap2 reverse map),
    and `_ids[label]` gives the caller's int64 id. So the caller's ids may be any non-negative
    int64, and an id removed from an HNSW index can be added again (it gets a new label).

    Removal: remove_ids where faiss implements it (Flat, IVF, PQ…). HNSW cannot delete in faiss,
    so removed labels become tombstones, filtered out DURING the graph search by a selector
    (SearchParametersHNSW(sel=IDSelectorNot(IDSelectorBatch(tombstones)), efSearch), checked on
    faiss 1.15: the search still walks through tombstoned nodes but never returns them, so a
    query still gets k live results). Tombstones keep their memory; rebuild an index where a large
    share of it was removed. Other kinds without remove_ids over-fetch k + tombstones and filter.
    """

    kind = "faiss"

    def __init__(self, spec: str, dim: int, metric: str = "cosine", nprobe: int = 16, ef_search: int = 64,
                 threads: int | None = None):
        import faiss

        super().__init__(spec, dim, metric)
        if metric not in ("cosine", "euclidean"):
            raise ConfigError(f"retrieval.metric {metric}: the FAISS index '{spec}' serves cosine and euclidean "
                              f"only; search by {metric} with retrieval.index=exact")
        self._faiss = faiss
        if threads:
            faiss.omp_set_num_threads(int(threads))  # process-wide, as faiss has it
        self.threads = int(threads) if threads else None
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        try:
            index = faiss.index_factory(self.dim, spec, faiss_metric)
        except RuntimeError as exc:
            msg = str(exc).strip().splitlines()
            raise ConfigError(f"retrieval.index '{spec}' is not a faiss factory string faiss can build "
                              f"({msg[-1] if msg else exc}); e.g. exact, Flat, IVF1024,Flat or HNSW32") from None
        if faiss.try_extract_index_ivf(index) is None and not isinstance(index, faiss.IndexIDMap):
            index = faiss.IndexIDMap(index)
        self.index = index
        self._ids = np.zeros(0, np.int64)      # caller's id of each faiss label
        self._live = np.zeros(0, bool)         # False: removed (gone from faiss, or a tombstone)
        self._removable = self._can_remove()
        self._selector = None                  # cached tombstone filter
        self.nprobe, self.ef_search = int(nprobe), int(ef_search)
        self.set_search_params(nprobe, ef_search)

    # ------------------------------------------------------------ set-up
    def _can_remove(self) -> bool:
        try:
            self.index.remove_ids(self._faiss.IDSelectorBatch(np.zeros(0, np.int64)))
            return True
        except RuntimeError:  # "remove_ids not implemented for this type of index" (HNSW, NSG…)
            return False

    def _inner(self):
        """The factory's index, inside our IndexIDMap where there is one."""
        faiss = self._faiss
        return faiss.downcast_index(self.index.index if isinstance(self.index, faiss.IndexIDMap) else self.index)

    def _hnsw(self):
        """The IndexHNSW inside (None if the index is not a graph index)."""
        inner = self._inner()
        return inner if isinstance(inner, self._faiss.IndexHNSW) else None

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """nprobe (IVF lists visited per query) and efSearch (HNSW candidate list), where the
        index has them (faiss's ParameterSpace, which reaches through wrappers)."""
        faiss = self._faiss
        space = faiss.ParameterSpace()
        self._selector = None  # the tombstone search parameters carry efSearch
        if nprobe is not None:
            self.nprobe = int(nprobe)
            if faiss.try_extract_index_ivf(self.index) is not None:
                space.set_index_parameter(self.index, "nprobe", self.nprobe)
        if ef_search is not None:
            self.ef_search = int(ef_search)
            if self._hnsw() is not None:
                space.set_index_parameter(self.index, "efSearch", self.ef_search)
            ivf = faiss.try_extract_index_ivf(self.index)
            if ivf is not None and isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW):
                space.set_index_parameter(self.index, "quantizer_efSearch", self.ef_search)

    def params(self) -> dict:
        return {"nprobe": self.nprobe, "ef_search": self.ef_search, "threads": self.threads}

    @property
    def ntotal(self) -> int:
        return int(self._live.sum())

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def _training_minimum(self) -> tuple[int, int, str]:
        """(vectors faiss needs, vectors it asks for without warning, what needs them)."""
        faiss = self._faiss
        ivf = faiss.try_extract_index_ivf(self.index)
        need, ask, what = 1, 1, "training"
        if ivf is not None:
            need, ask, what = ivf.nlist, 39 * ivf.nlist, f"{ivf.nlist} IVF lists"
        holder = faiss.downcast_index(ivf) if ivf is not None else self._inner()
        pq = getattr(holder, "pq", None)
        if pq is not None and pq.ksub > need:
            need, ask, what = pq.ksub, 39 * pq.ksub, f"{pq.ksub} PQ centroids per sub-quantizer"
        return need, ask, what

    def train(self, vectors) -> None:
        """Train an index that needs it (IVF's k-means, PQ's codebooks) on these vectors; add()
        does this itself on the first add when the index is untrained."""
        x = self._check_vectors(vectors, "training vectors")
        need, ask, what = self._training_minimum()
        if len(x) < need:
            suggest = max(1, min(int(4 * math.sqrt(len(x))), len(x) // 39))
            raise ConfigError(
                f"retrieval.index '{self.spec}' needs at least {need} vectors to train ({what}), "
                f"got {len(x)}: use a smaller nlist (e.g. 'IVF{suggest},Flat') or 'Flat' / exact")
        if len(x) < ask:
            log.warning(f"retrieval.index '{self.spec}': {len(x)} training vectors for {what}; faiss asks for "
                        f"{ask} (39 per centroid): clusters will be poor, consider a smaller nlist")
        try:
            self.index.train(x)
        except RuntimeError as exc:
            raise ConfigError(f"retrieval.index '{self.spec}': faiss could not train on {len(x)} vectors "
                              f"({str(exc).strip().splitlines()[-1]})") from None

    # ------------------------------------------------------------ the interface
    def add(self, vectors, ids) -> None:
        x = self._check_vectors(vectors, "vectors")
        ids = self._check_new_ids(ids, len(x), self._ids[self._live])
        if not len(x):
            return
        if not self.index.is_trained:
            self.train(x)
        labels = np.arange(len(self._ids), len(self._ids) + len(x), dtype=np.int64)
        self.index.add_with_ids(x, labels)
        self._ids = np.concatenate([self._ids, ids])
        self._live = np.concatenate([self._live, np.ones(len(x), bool)])

    def remove(self, ids) -> int:
        gone = np.flatnonzero(self._live & np.isin(self._ids, np.asarray(ids, dtype=np.int64).ravel()))
        if not len(gone):
            return 0
        if self._removable:
            removed = self.index.remove_ids(self._faiss.IDSelectorBatch(gone.astype(np.int64)))
            assert removed == len(gone), (removed, len(gone))
        self._live[gone] = False
        self._selector = None
        return len(gone)

    def _tombstones(self) -> np.ndarray:
        return np.flatnonzero(~self._live) if not self._removable else np.zeros(0, np.int64)

    def search(self, queries, k):
        k = self._check_k(k)
        q = self._check_vectors(queries, "queries")
        kk = min(k, self.ntotal)
        if kk == 0 or not len(q):
            return self._pad(np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64), k)
        dead = self._tombstones()
        if not len(dead):
            dist, labels = self.index.search(q, kk)
        elif self._hnsw() is not None:
            # faiss.contrib.torch_utils (imported by pytorch-metric-learning) replaces Index.search with a
            # wrapper that takes no `params`; it keeps faiss's own method as search_numpy.
            search = getattr(self.index, "search_numpy", self.index.search)
            dist, labels = search(q, kk, params=self._hnsw_params(dead))
        else:  # no selector support assumed: over-fetch past every tombstone, then filter
            dist, labels = self.index.search(q, min(kk + len(dead), int(self.index.ntotal)))
            keep = (labels >= 0) & self._live[np.maximum(labels, 0)]
            order = np.argsort(~keep, axis=1, kind="stable")[:, :kk]
            dist, labels = np.take_along_axis(dist, order, 1), np.take_along_axis(labels, order, 1)
            labels[~np.take_along_axis(keep, order, 1)] = -1
        missing = labels < 0
        dist = np.sqrt(np.maximum(dist, 0)) if self.metric == "euclidean" else cosine_distance(dist)
        dist[missing] = np.inf
        ids = np.where(missing, -1, self._ids[np.maximum(labels, 0)])
        # faiss's approximate distances can be out of order by rounding; keep them ascending
        order = np.argsort(dist, axis=1, kind="stable")
        return self._pad(np.take_along_axis(dist, order, 1), np.take_along_axis(ids, order, 1), k)

    def _hnsw_params(self, dead: np.ndarray):
        if self._selector is None:
            faiss = self._faiss
            batch = faiss.IDSelectorBatch(dead.astype(np.int64))
            sel = faiss.IDSelectorNot(batch)
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=self.ef_search)
            self._selector = (batch, sel, params)  # the C++ objects point at each other: keep all alive
        return self._selector[2]

    def _arrays(self):
        return {"faiss": self._faiss.serialize_index(self.index), "ids": self._ids, "live": self._live}

    @classmethod
    def _restore(cls, header, arrays):
        index = cls(header["spec"], header["dim"], header["metric"], **header["params"])
        index.index = index._faiss.deserialize_index(np.asarray(arrays["faiss"], dtype=np.uint8))
        index._ids = np.asarray(arrays["ids"], dtype=np.int64)
        index._live = np.asarray(arrays["live"], dtype=bool)
        index.set_search_params(index.nprobe, index.ef_search)
        return index

    def size_bytes(self) -> int:
        """Bytes of the serialised faiss index (what save() writes for it), counted as faiss
        writes it rather than held in memory."""
        count = [0]

        def write(chunk) -> int:
            count[0] += len(chunk)
            return len(chunk)

        writer = self._faiss.PyCallbackIOWriter(write)
        self._faiss.write_index(self.index, writer)
        del writer
        return count[0]


# ---------------------------------------------------------------- the registry

INDEX_KINDS: dict[str, type[Index]] = {
    "exact": ExactIndex,   # retrieval.index: exact
    "faiss": FaissIndex,   # retrieval.index: any faiss factory string
}


def kind_of(spec: str) -> str:
    """Which INDEX_KINDS entry serves a retrieval.index spec."""
    return "exact" if spec.strip().lower() == "exact" else "faiss"


def build_index(spec: str, dim: int, metric: str = "cosine", nprobe: int = 16, ef_search: int = 64,
                chunk_size: int = 1024, threads: int | None = None) -> Index:
    """An empty index: "exact" (ExactIndex) or a faiss factory string (FaissIndex)."""
    spec = str(spec).strip()
    if not spec:
        raise ConfigError("retrieval.index is empty: use exact or a faiss factory string (Flat, IVF1024,Flat, HNSW32)")
    if kind_of(spec) == "exact":
        return ExactIndex(dim, metric, chunk_size)
    return FaissIndex(spec, dim, metric, nprobe=nprobe, ef_search=ef_search, threads=threads)


def load_index(path: str | Path) -> Index:
    """The index that Index.save wrote to `path`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            kind = header.get("kind")
            if kind not in INDEX_KINDS:
                raise SearchIndexError(f"{path}: unknown index kind {kind!r} (known: {', '.join(INDEX_KINDS)})")
            if header.get("format") != FORMAT:
                raise SearchIndexError(f"{path}: index file format {header.get('format')}, this code reads {FORMAT}")
            return INDEX_KINDS[kind]._restore(header, z)
    except FacematchError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise SearchIndexError(f"{path}: not a readable index file ({exc})") from None
