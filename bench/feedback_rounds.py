"""Relevance feedback, the thesis protocol (issue 10): on the development competition (data/dev,
built by bench/table.py prepare), for every query, rounds of k results; an oracle marks every
shown photo relevant or not by identity, and the next round comes from each feedback method
(search/feedback.py) with all marks so far. Clean and degraded (cutout + gamma) queries.

    .venv/bin/python bench/feedback_rounds.py                        # dlib_alone, 15 rounds of 8, every method
    .venv/bin/python bench/feedback_rounds.py --checkpoint checkpoints/table/mnv2_ms/best.pt --rounds 10

Round 1 is the k nearest gallery photos for every method (nothing is marked yet). Recall@k of a
round is 1 when that round shows at least one correct photo, averaged over queries (so a query whose
only correct photo came in round 1 scores 0 in every later round, for every method). Also: the
round by which every correct photo of the query's person has been shown (median over queries, ">R"
when most never get there, and the share that got there within R rounds; over all queries, and over
those with more than k correct photos, which no single round can finish), and the milliseconds one
round of each method takes here, on this gallery and on a synthetic gallery of --large rows.

Embeddings come through retrieval.embed_folder (gallery and clean queries from the embedding
cache after the first run; degraded queries are embedded each time). Writes the `feedback` section
of bench/RESULTS.md and figures/feedback.png (Recall@k per round, one line per method, a panel per
query condition).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from search.feedback import FEEDBACK, FeedbackSettings, next_round  # noqa: E402

CONDITIONS = {"clean": "none", "degraded": "both"}
REPORT_ROUNDS = (1, 2, 4, 8, 15)


def simulate(method: str, query: np.ndarray, gallery: np.ndarray, correct: set[int], rounds: int, k: int,
             settings: FeedbackSettings) -> tuple[np.ndarray, int | None, float]:
    """One query's feedback session with an oracle: (hit per round, the round by which every correct
    row had been shown or None, seconds spent in the method's calls after round 1)."""
    shown: set[int] = set()
    marks: dict[int, bool] = {}
    hits = np.zeros(rounds, dtype=bool)
    all_shown, spent = None, 0.0
    for r in range(rounds):
        if r == 0:
            rows = next_round("nearest", query, gallery, {}, set(), k, settings)
        else:
            started = time.perf_counter()
            rows = next_round(method, query, gallery, marks, shown, k, settings)
            spent += time.perf_counter() - started
        shown.update(rows)
        marks.update({i: i in correct for i in rows})
        hits[r] = any(i in correct for i in rows)
        if all_shown is None and correct <= shown:
            all_shown = r + 1
    return hits, all_shown, spent


def run_condition(queries: np.ndarray, gallery: np.ndarray, correct: list[set[int]], methods: list[str],
                  rounds: int, k: int, settings: FeedbackSettings) -> dict:
    """Every method over every query: {method: {'hits': (Q, rounds), 'all': [round or None], 'ms': per call}}."""
    out = {}
    for method in methods:
        hits, done, spent = [], [], 0.0
        for q, good in zip(queries, correct):
            h, a, s = simulate(method, q, gallery, good, rounds, k, settings)
            hits.append(h)
            done.append(a)
            spent += s
        out[method] = {"hits": np.asarray(hits), "all": done, "n_correct": [len(c) for c in correct],
                       "ms": 1000 * spent / max(1, len(queries) * (rounds - 1))}
        print(f"  {method:8s} recall@{k} per round {np.round(out[method]['hits'].mean(0), 3).tolist()}", flush=True)
    return out


def rounds_median(done: list[int | None], rounds: int) -> str:
    """Median round by which all correct rows were shown; never (None) counts as later than any."""
    values = sorted(d if d is not None else rounds + 1 for d in done)
    m = statistics.median_low(values)
    return f">{rounds}" if m > rounds else str(m)


def large_timing(n: int, dim: int, methods: list[str], k: int, rounds: int,
                 settings: FeedbackSettings) -> dict[str, float]:
    """Milliseconds for one late round (marks from rounds-1 rounds of k) on a synthetic gallery of n rows."""
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((n, dim), dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query = gallery[0] + 0.5 * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
    shown = {int(i) for i in rng.choice(n, k * (rounds - 1), replace=False)}
    marks = {i: j % 8 == 0 for j, i in enumerate(sorted(shown))}
    out = {}
    for method in methods:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            next_round(method, query, gallery, marks, shown, k, settings)
            times.append(time.perf_counter() - started)
        out[method] = 1000 * statistics.median(times)
    return out


def figure(results: dict, rounds: int, k: int, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils import atomic_write

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), sharey=True)
    x = np.arange(1, rounds + 1)
    for ax, (condition, res) in zip(np.atleast_1d(axes), results.items()):
        for method, r in res.items():
            ax.plot(x, r["hits"].mean(axis=0), marker="o", markersize=3, label=method)
        ax.set_title(f"{condition} queries")
        ax.set_xlabel("round")
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel(f"Recall@{k} of the round")
    np.atleast_1d(axes)[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)


def table(results: dict, rounds: int, k: int) -> str:
    cols = [r for r in REPORT_ROUNDS if r <= rounds]
    head = ("| queries | method | " + " | ".join(f"R@{k} round {r}" for r in cols)
            + f" | mean over {rounds} rounds | all correct shown by round: median, all queries / more than {k} correct"
            + f" | all correct shown within {rounds} rounds: all / more than {k} correct | ms per round |")
    lines = [head, "|" + "---|" * (len(cols) + 6)]
    for condition, res in results.items():
        for method, r in res.items():
            per_round = r["hits"].mean(axis=0)
            many = [d for d, n in zip(r["all"], r["n_correct"]) if n > k]
            share = lambda done: np.mean([d is not None for d in done]) if done else float("nan")  # noqa: E731
            lines.append(f"| {condition} | {method} | " + " | ".join(f"{per_round[c - 1]:.3f}" for c in cols)
                         + f" | {per_round.mean():.3f} | {rounds_median(r['all'], rounds)} / "
                         + f"{rounds_median(many, rounds) if many else '–'} | {share(r['all']):.1%} / "
                         + f"{share(many):.1%} ({len(many)} queries) | {r['ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchlib import git_rev, machine, write_section  # here: the simulation above is imported by a test

    from settings import load_config

    fcfg = load_config()["feedback"]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/table/dlib_alone/best.pt")
    p.add_argument("--dev", default="data/dev",
                   help="a competition folder: ground_truth.json, test/query, test/gallery")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--k", type=int, default=int(fcfg["k"]), help="results per round (default feedback.k)")
    p.add_argument("--methods", nargs="+", default=list(FEEDBACK), choices=list(FEEDBACK))
    p.add_argument("--large", type=int, default=100_000, help="synthetic gallery rows for the timing line (0: none)")
    p.add_argument("--figure", default="figures/feedback.png")
    p.add_argument("--no-write", action="store_true", help="print the table, leave bench/RESULTS.md alone")
    args = p.parse_args(argv)

    from competition import load_ground_truth
    from settings import load_for_inference
    from pipeline.embedding import embed_folder
    from settings import embed_settings

    started = time.time()
    dev = ROOT / args.dev
    model, cfg, device = load_for_inference(ROOT / args.checkpoint, [], ["data.cache_dir=data/cache/crops"])
    gt = load_ground_truth(dev)
    gallery = embed_folder(dev / "test" / "gallery", model, device, **embed_settings(cfg))
    g_index = {n: j for j, n in enumerate(gallery.names)}
    g_emb = gallery.embeddings / np.linalg.norm(gallery.embeddings, axis=1, keepdims=True)
    results, missing = {}, 0
    for condition, degradation in CONDITIONS.items():
        queries = embed_folder(dev / "test" / "query", model, device, degradation=degradation, **embed_settings(cfg))
        keep = [i for i, q in enumerate(queries.names) if q in gt["queries"]]
        correct = [{g_index[g] for g in gt["queries"][queries.names[i]] if g in g_index} for i in keep]
        keep, correct = [i for i, c in zip(keep, correct) if c], [c for c in correct if c]
        missing = len(gt["queries"]) - len(keep)
        print(f"{condition}: {len(keep)} queries, {len(g_emb)} gallery photos", flush=True)
        results[condition] = run_condition(queries.embeddings[keep], g_emb, correct, args.methods,
                                           args.rounds, args.k, FeedbackSettings(**fcfg))
    large = large_timing(args.large, g_emb.shape[1], args.methods, args.k, args.rounds,
                         FeedbackSettings(**fcfg)) if args.large else {}
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    command = "python bench/feedback_rounds.py" + ("" if argv is None and len(sys.argv) == 1 else
                                            " " + " ".join(argv if argv is not None else sys.argv[1:]))
    n_q = len(gt["queries"]) - missing
    title = (f"{Path(args.checkpoint).parent.name}, {n_q} queries, {len(g_emb)} gallery photos, "
             f"{args.rounds} rounds of {args.k}")
    figure(results, args.rounds, args.k, ROOT / args.figure, title)
    settings = ", ".join(f"{key}={value}" for key, value in fcfg.items() if key not in ("method", "k"))
    md = f"""## Relevance feedback: the thesis protocol

`{command}` at commit {git_rev()}, {time.strftime('%Y-%m-%d')}; {machine()}; load average {load} at the end
(other jobs shared the CPU); {time.time() - started:.0f} s in all.

Development competition (data/dev: {n_q} queries{f', {missing} without a usable photo left out' if missing else ''},
{len(g_emb)} gallery photos), checkpoint `{args.checkpoint}`. For every query, {args.rounds} rounds of {args.k}:
round 1 shows the {args.k} nearest (the same for every method); an oracle marks every shown photo relevant when
it is of the query's person; each later round is `search.feedback.next_round(method, …)` with all marks so far.
Degraded queries: cutout + gamma (`evaluate.degrade=both`), gallery clean. R@{args.k} of a round: 1 when that
round shows at least one correct photo, averaged over queries; a query whose correct photos were all shown
already scores 0 in later rounds, for every method. Feedback settings (config/default.yaml): {settings}.

{table(results, args.rounds, args.k)}

ms per round: mean time of one `next_round` call here ({len(g_emb)} rows, {g_emb.shape[1]}-d);
on a synthetic gallery of {args.large:,} rows with {args.k * (args.rounds - 1)} marks:
{', '.join(f'{m} {t:.0f} ms' for m, t in large.items()) or 'not run'}.

![Recall@{args.k} per round](../{args.figure})
"""
    print(md)
    if not args.no_write:
        write_section("feedback", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
