"""Search backends compared (issue 9): exact, faiss Flat, IVF and HNSW on synthetic face galleries:
queries per second (one at a time on one thread, and batched on every thread), recall@10 against
exact search, build time and memory.

    .venv/bin/python bench/search_speed.py                                     # 10^4, 10^5 and 10^6 (~11 min on 2 quiet cores, 3 GB)
    .venv/bin/python bench/search_speed.py --sizes 10000 100000 --runs 3       # a few minutes

Data (seeded): normalised 256-d vectors in clusters around identity centres, as face embeddings
are. Centres are Gaussian with a decaying spectrum (variance of dimension j ∝ j^-decay, as learned
embeddings have), normalised; each identity has --photos gallery photos, each centre + isotropic
noise of norm --noise, normalised. Queries are one more photo of --queries distinct gallery identities.

Per gallery size N and backend: build time (index creation, IVF training, adding: in batches with
progress, exact in one add), index size (faiss.serialize_index bytes; exact: the vectors' and ids'
bytes), peak RSS delta of the build (VmHWM reset through /proc/self/clear_refs, minus VmRSS before); then per
search setting (IVF nprobe, HNSW efSearch): recall@10 against exact search (exact is the ground
truth, run first), single-thread queries/s (torch and faiss on 1 thread, --single queries one per
call) and batched queries/s (every thread, all --queries in one call); timings are medians of --runs.
IVF: nlist = 4·√N, capped at N/39 so that k-means gets the 39 points per list faiss asks for,
trained on a seeded sample of at most --train-per-list × nlist vectors.

Writes the `search` section of bench/RESULTS.md (the whole section, from the sizes of this run).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from benchlib import git_rev, libc, machine, proc_status, write_section  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import faiss  # noqa: E402

from search.index import ExactIndex, FaissIndex, build_index  # noqa: E402

DIM, K = 256, 10
ADD_BATCH = 100_000
CPUS = os.cpu_count() or 1


# ---------------------------------------------------------------- data

def make_data(n: int, n_queries: int, photos: int, noise: float, decay: float, seed: int):
    """(gallery (n, DIM), queries (n_queries, DIM)) float32 unit vectors, identity clusters."""
    rng = np.random.default_rng([seed, n])
    n_ids = math.ceil(n / photos)
    if n_queries > n_ids:
        raise SystemExit(f"--queries {n_queries} needs as many identities; {n} photos / {photos} give {n_ids}")
    scale = ((1 + np.arange(DIM)) ** (-decay / 2)).astype(np.float32)
    centres = rng.standard_normal((n_ids, DIM), dtype=np.float32) * scale
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def photos_of(ident: np.ndarray) -> np.ndarray:
        x = centres[ident] + (noise / math.sqrt(DIM)) * rng.standard_normal((len(ident), DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    gallery = np.empty((n, DIM), np.float32)
    for start in range(0, n, ADD_BATCH):  # in blocks: no float64 or second full-size temporary
        gallery[start:start + ADD_BATCH] = photos_of(np.arange(start, min(n, start + ADD_BATCH)) // photos)
    queries = photos_of(rng.choice(n_ids, n_queries, replace=False))
    return gallery, queries


# ---------------------------------------------------------------- memory

LIBC = libc()
if LIBC is not None and hasattr(LIBC, "mallopt"):
    # A fixed mmap threshold (M_MMAP_THRESHOLD = -3): glibc otherwise raises it after each large
    # free and serves the next index from memory it already holds, hiding the build's growth.
    LIBC.mallopt(-3, 1 << 20)


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- timing

def threads(n: int) -> None:
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def batched_qps(index, queries, runs: int):
    """(median queries/s, median seconds, the last run's ids): one search call with every query."""
    threads(CPUS)
    index.search(queries[:10], K)  # warm-up
    times, ids = [], None
    for _ in range(runs):
        started = time.perf_counter()
        _, ids = index.search(queries, K)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return len(queries) / seconds, seconds, ids


def single_qps(index, queries, runs: int) -> float:
    """Median queries/s with one query per call, torch and faiss on one thread."""
    threads(1)
    index.search(queries[:1], K)
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        for q in queries:
            index.search(q[None, :], K)
        rates.append(len(queries) / (time.perf_counter() - started))
    threads(CPUS)
    return statistics.median(rates)


def recall_at_k(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)]))


# ---------------------------------------------------------------- one backend

def build(spec: str, gallery: np.ndarray, nlist: int | None, train_per_list: int, seed: int):
    """(index, build seconds, index bytes, peak RSS delta bytes) with progress on stdout."""
    n = len(gallery)
    gc.collect()
    if LIBC is not None and hasattr(LIBC, "malloc_trim"):
        LIBC.malloc_trim(0)
    exact_peak = reset_peak()
    before = proc_status("VmRSS") if exact_peak else proc_status("VmHWM")
    started = time.perf_counter()
    threads(CPUS)
    index = build_index(spec, DIM, "cosine", threads=CPUS)
    if nlist:
        sample = min(n, train_per_list * nlist)
        rows = np.sort(np.random.default_rng([seed, n, 1]).choice(n, sample, replace=False))
        print(f"  {spec}: training on {sample} vectors …", flush=True)
        if sample > 100_000:  # k-means prints its iterations: minutes at 10^6
            faiss.extract_index_ivf(index.index).cp.verbose = True
        index.train(gallery[rows])
        print(f"  {spec}: trained in {time.perf_counter() - started:.1f} s", flush=True)
    batch = n if isinstance(index, ExactIndex) else ADD_BATCH  # exact: one add, no growing copies
    for start in range(0, n, batch):
        index.add(gallery[start:start + batch], np.arange(start, min(n, start + batch), dtype=np.int64))
        if n > batch:
            done = min(n, start + batch)
            spent = time.perf_counter() - started
            print(f"  {spec}: {done}/{n} added, {spent:.0f} s, about {spent / done * (n - done):.0f} s to go",
                  flush=True)
    seconds = time.perf_counter() - started
    peak = proc_status("VmHWM") - before
    return index, seconds, index.size_bytes(), max(0, peak)


def settings_of(spec: str, args) -> list[tuple[str, dict]]:
    if spec.startswith("IVF"):
        return [(f"nprobe {p}", {"nprobe": p}) for p in args.nprobe]
    if spec.startswith("HNSW"):
        return [(f"efSearch {e}", {"ef_search": e}) for e in args.ef]
    return [("", {})]


def bench_size(n: int, args) -> list[dict]:
    print(f"gallery of {n}: generating …", flush=True)
    gallery, queries = make_data(n, args.queries, args.photos, args.noise, args.decay, args.seed)
    nlist = max(1, min(round(4 * math.sqrt(n)), n // 39))
    specs = ["exact", "Flat", f"IVF{nlist},Flat", "HNSW32"]
    rows, truth = [], None
    single = queries[:args.single]
    for spec in specs:
        index, build_s, size, peak = build(spec, gallery, nlist if spec.startswith("IVF") else None,
                                           args.train_per_list, args.seed)
        print(f"  {spec}: built in {build_s:.1f} s, {size / 2**20:.0f} MB, peak RSS +{peak / 2**20:.0f} MB", flush=True)
        for label, params in settings_of(spec, args):
            if isinstance(index, FaissIndex):
                index.set_search_params(**params)
            qps, seconds, ids = batched_qps(index, queries, args.runs)
            if truth is None:  # exact runs first: the ground truth
                truth = ids
            rec = recall_at_k(ids, truth)
            one = single_qps(index, single, args.runs)
            rows.append({"n": n, "spec": spec, "setting": label, "build_s": build_s, "size": size, "peak": peak,
                         "recall": rec, "single": one, "batched": qps, "batch_ms": 1000 * seconds})
            print(f"  {spec} {label}: recall@10 {rec:.3f}, {one:.0f} q/s one at a time, {qps:.0f} q/s batched "
                  f"({1000 * seconds:.0f} ms for {len(queries)})", flush=True)
        del index
        gc.collect()
    return rows


# ---------------------------------------------------------------- report

def table(rows: list[dict], n_queries: int) -> str:
    head = (f"| gallery | backend | setting | recall@10 | single thread, q/s | batched, q/s | {n_queries:,} queries, ms "
            "| build, s | index, MB | peak RSS Δ, MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['spec']} | {r['setting'] or '–'} | {r['recall']:.3f} | {r['single']:,.0f} "
                     f"| {r['batched']:,.0f} | {r['batch_ms']:,.0f} | {r['build_s']:.1f} | {r['size'] / 2**20:,.0f} "
                     f"| {r['peak'] / 2**20:,.0f} |")
    return "\n".join(lines)


def verdict(rows: list[dict], n_queries: int) -> str:
    out = []
    for n in sorted({r["n"] for r in rows}):
        ok = [r for r in rows if r["n"] == n and r["spec"] != "exact" and r["recall"] >= 0.95
              and r["batch_ms"] * 1000 / n_queries < 1000]
        exact = next(r for r in rows if r["n"] == n and r["spec"] == "exact")
        best = min(ok, key=lambda r: r["batch_ms"], default=None)
        out.append(f"- {n:,}: exact answers {n_queries:,} queries in {exact['batch_ms']:,.0f} ms; "
                   + (f"fastest at recall@10 ≥ 0.95: {best['spec']} {best['setting']} "
                      f"({best['batch_ms']:,.0f} ms, recall {best['recall']:.3f})" if best
                      else "no approximate backend reaches recall@10 ≥ 0.95 in under 1 s"))
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3, help="timings are the median of this many runs")
    parser.add_argument("--queries", type=int, default=1000, help="queries (each one photo of a gallery identity)")
    parser.add_argument("--single", type=int, default=200, help="of which this many are timed one per call")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64], help="IVF settings to time")
    parser.add_argument("--ef", type=int, nargs="+", default=[64, 128], help="HNSW efSearch settings to time")
    parser.add_argument("--train-per-list", type=int, default=64, help="IVF training sample: this many × nlist")
    parser.add_argument("--photos", type=int, default=4, help="gallery photos per identity")
    parser.add_argument("--noise", type=float, default=0.7, help="norm of a photo's offset from its identity centre")
    parser.add_argument("--decay", type=float, default=1.0, help="centres' variance spectrum ∝ j^-decay")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.time()
    load_start = os.getloadavg()[0]
    rows = []
    for n in args.sizes:
        rows += bench_size(n, args)
    minutes = (time.time() - started) / 60
    load_end = os.getloadavg()[0]
    command = "python bench/search_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    peak_note = "" if reset_peak() else " (VmHWM could not be reset here: deltas are over the process's earlier peak)"
    md = f"""## Search backends: speed, recall, build time and memory

Command: `{command.strip()}` (commit {git_rev()}), {datetime.date.today().isoformat()}, {minutes:.1f} min in all.
Machine: {machine()}, faiss {faiss.__version__}; load average {load_start:.1f} at the start, {load_end:.1f} at
the end (this bench's own threads included).
Data: seeded synthetic face embeddings, {DIM}-d unit vectors: identity centres with a decaying variance
spectrum (j^-{args.decay}), {args.photos} gallery photos per identity (centre + noise of norm {args.noise},
normalised; photos of one identity have cosine ≈ {1 / (1 + args.noise ** 2):.2f}); {args.queries:,} queries, each one
more photo of a distinct gallery identity. Cosine distance throughout (`search/index.py`, `build_index`).

Recall@10: share of exact search's 10 nearest that the backend returns. Single thread: torch and faiss
on 1 thread, one query per call ({args.single} queries). Batched: {CPUS} threads, all {args.queries:,}
queries in one call. Timings: median of {args.runs} runs. Build: creating the index, IVF training
(nlist = 4·√N capped at N/39, on ≤ {args.train_per_list}·nlist sampled vectors) and adding (faiss: in
batches of {ADD_BATCH:,}; exact: one add). Index: `faiss.serialize_index` bytes (exact: the vectors and ids). Peak RSS Δ: VmHWM after
the build minus VmRSS before it{peak_note}.

{table(rows, args.queries)}

Target, {args.queries:,} queries in under 1 s at recall@10 ≥ 0.95 (batched):
{verdict(rows, args.queries)}

Removal (`Index.remove`): exact drops rows; Flat and IVF use faiss's `remove_ids`; HNSW cannot
delete in faiss, so removed vectors are tombstones skipped inside the graph search
(`SearchParametersHNSW(sel=IDSelectorNot(IDSelectorBatch(…)))`), their memory kept until a rebuild.
"""
    write_section("search", md)
    print(md)


if __name__ == "__main__":
    main()
