"""The evaluation protocol: rank the whole gallery through the one retrieval and score it (top-1/5/10, mAP,
MAP@R, recall@k, R-precision, nDCG@10, TAR@FAR, DIR@FPIR), on identity folders split into queries and
gallery, plus the figures; leave-one-out for validation. A competition folder with its ground truth is
scored by competition/scoring.py over these parts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from evaluation.metrics import (METRICS, OPEN_SET, VERIFICATION, dir_at_fpir, format_metrics,
                                mean_average_precision, relevance_matrix, retrieval_report, tar_at_far)
from evaluation.plots import curves_for, retrieval_figure
from evaluation.verification import pair_report
from dataset import DataSettings, list_identities, query_gallery_split
from pipeline.embedding import embed_paths
from search.exact import cosine_distance, unit
from search.retrieval import retrieve
from runtime import EmbeddingSettings
from search.retrieval_settings import RetrievalSettings
from utils import TRAIN_INSTALL, DataError, get_logger, installed

log = get_logger()


@dataclass(frozen=True)
class EvaluateSettings:
    """The evaluate section (config/default.yaml documents each field): degraded queries and the figures."""
    degrade: str = "none"
    figure: str = "figures/retrieval.png"
    figure_queries: int = 6
    figure_top: int = 5


def score_embeddings(query: np.ndarray, gallery: np.ndarray, correct: list[set[int]],
                     retrieval: RetrievalSettings = RetrievalSettings()) -> tuple[dict, np.ndarray]:
    """Rank the whole gallery for every query through the retrieval pipeline (re-rankers
    included) and score it: (metrics, ranked gallery indices).

    `correct[i]` holds the gallery positions that match query i. Queries without any match
    cannot be scored and are left out, and counted in the result.
    """
    _, ranked = retrieve(query, gallery, len(gallery), retrieval)
    return score_ranking(ranked, correct), ranked


def score_ranking(ranked: np.ndarray, correct: list[set[int]]) -> dict:
    """The metrics of a ranking of the gallery (every query's gallery positions, best first)."""
    rel, n_rel = relevance_of(ranked, correct)
    report = retrieval_report(rel, n_rel)
    report["map@10"] = mean_average_precision(rel[:, :10], n_rel)  # the server's mAP over top-10 lists
    report["queries"] = len(rel)
    report["queries_without_match"] = len(correct) - len(rel)
    return report


def relevance_of(ranked: np.ndarray, correct: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(relevance matrix, number of correct gallery photos) of the queries that have a match."""
    keep = [i for i, c in enumerate(correct) if c]
    rel = relevance_matrix([list(ranked[i]) for i in keep], [correct[i] for i in keep])
    return rel.reshape(len(keep), -1), np.array([len(correct[i]) for i in keep], dtype=np.int64)


def score_labelled(embeddings: np.ndarray, labels: list, retrieval: RetrievalSettings,
                   query_embeddings: np.ndarray | None, queries_per_person: int, seed: int) -> tuple[dict, list[int], list[int], np.ndarray, list[set[int]]]:
    """Validation protocol on labelled embeddings: (metrics, query positions, gallery positions,
    ranking, each query's matching gallery indices). `query_embeddings` (one row per photo, e.g.
    of degraded photos) replaces the query rows when given; queries_per_person and seed pick the queries
    (dataset.query_gallery_split)."""
    q_pos, g_pos = query_gallery_split(labels, queries_per_person, seed)
    if not q_pos:
        raise DataError("no person has two or more photos: nothing to query")
    g_labels = [labels[j] for j in g_pos]
    correct = [{n for n, gl in enumerate(g_labels) if gl == labels[i]} for i in q_pos]
    queries = (embeddings if query_embeddings is None else query_embeddings)[q_pos]
    report, ranked = score_embeddings(queries, embeddings[g_pos], correct, retrieval)
    return report, q_pos, g_pos, ranked, correct


def score_leave_one_out(embeddings: np.ndarray, labels: list, retrieval: RetrievalSettings = RetrievalSettings(),
                        query_embeddings: np.ndarray | None = None) -> dict:
    """Every photo of a person with two or more queries all the others (plain ranking, no
    re-ranking: the query itself is in the set): N queries instead of one per person, so
    validation numbers that choose between close checkpoints move less by chance.
    `query_embeddings` (one row per photo, e.g. of degraded photos) replaces the query side."""
    n = len(labels)
    queries = embeddings if query_embeddings is None else query_embeddings
    _, ranked = retrieve(queries, embeddings, n, replace(retrieval, rerank=[]))
    ranked = np.asarray(ranked)
    others = ranked[ranked != np.arange(n)[:, None]].reshape(n, n - 1)  # each row holds itself once
    lab = np.asarray([str(x) for x in labels])
    n_rel = np.array([(lab == lab[i]).sum() - 1 for i in range(n)], dtype=np.int64)
    keep = n_rel > 0
    if not keep.any():
        raise DataError("no person has two or more photos: nothing to query")
    rel = lab[others[keep]] == lab[keep][:, None]
    report = retrieval_report(rel, n_rel[keep])
    report["map@10"] = mean_average_precision(rel[:, :10], n_rel[keep])
    report["queries"] = int(keep.sum())
    return report


def decision_report(query: np.ndarray, gallery: np.ndarray, correct: list[set[int]],
                    retrieval: RetrievalSettings = RetrievalSettings(),
                    retrieved: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Same-person decisions on a competition: TAR@FAR over every query-gallery pair (genuine: the query's
    correct photos), and DIR@FPIR with each query as a mated probe (its gallery as it is) and as a
    non-mated one (its own person's photos taken out of the gallery), ranked by the retrieval pipeline
    (`retrieved`: its (distances, ranked) when the caller has them already)."""
    q, g = unit(np.asarray(query, np.float32)), unit(np.asarray(gallery, np.float32))
    dist = cosine_distance(q @ g.T)
    genuine_mask = np.zeros(dist.shape, bool)
    for i, c in enumerate(correct):
        genuine_mask[i, list(c)] = True
    report = {name: tar_at_far(dist[genuine_mask], dist[~genuine_mask], far) for name, far in VERIFICATION.items()}
    d, ranked = retrieved if retrieved is not None else retrieve(query, gallery, min(len(gallery), 50), retrieval)
    mated_best = d[:, 0]
    mated_correct = np.array([ranked[i, 0] in c for i, c in enumerate(correct)])
    non_mated_best = np.array([next((d[i, j] for j in range(d.shape[1]) if ranked[i, j] not in c), np.inf)
                               for i, c in enumerate(correct)])  # the first result that is not their person
    report.update({name: dir_at_fpir(mated_best, mated_correct, non_mated_best, fpir) for name, fpir in OPEN_SET.items()})
    return report


# ---------------------------------------------------------------- reports and figures

def format_report(report: dict, keys=(*METRICS, *VERIFICATION, *OPEN_SET)) -> str:
    """Metrics in their registry order (those present), then the query count."""
    return format_metrics(report, keys) + f"  ({report.get('queries', '?')} queries)"


def draw_figures(name: str, report: dict, q_crops: list, g_crops: list, ranked: np.ndarray, correct: list[set[int]],
                 evaluate: EvaluateSettings) -> None:
    """The retrieval grid, the recall@k curve and the precision-recall curve of one evaluation; left out, saying so,
    where matplotlib is not installed (the inference install: pip install -e .)."""
    if not installed("matplotlib"):
        log.warning(f"figures left out: matplotlib is not installed here ({TRAIN_INSTALL} installs it)")
        return
    title = f"{name}: top-1 {report['top1']:.2f}, mAP {report['map']:.2f}"
    fig = retrieval_figure(evaluate.figure, q_crops, g_crops, ranked, correct, evaluate.figure_queries,
                           evaluate.figure_top, title=title)
    recall, pr = curves_for(fig, *relevance_of(ranked, correct), title=title)
    log.info(f"figures: {fig} (retrieval grid), {recall} (recall@k), {pr} (precision-recall)")


def evaluate_labelled(model, device, labelled: str | Path, name: str, *, data: DataSettings = DataSettings(),
                      embedding: EmbeddingSettings = EmbeddingSettings(),
                      retrieval: RetrievalSettings = RetrievalSettings(), evaluate: EvaluateSettings = EvaluateSettings(),
                      queries_per_person: int, seed: int) -> dict:
    """Score a model on identity folders (never trained on), split into queries and gallery, with figures."""
    degradation = evaluate.degrade
    people = list_identities(labelled, 1)
    paths = [p for photos in people.values() for p in photos]
    labels = [person for person, photos in people.items() for _ in photos]
    emb = embed_paths(paths, model, device, Path(labelled).name, data=data, embedding=embedding, seed=seed)
    skipped = set(emb.skipped)
    labels = [label for p, label in zip(paths, labels) if str(p) not in skipped]
    q_emb = emb
    if degradation != "none":  # every photo may be a query: embed the degraded copies too
        q_emb = embed_paths([p for p in paths if str(p) not in skipped], model, device, "degraded queries",
                            data=data, embedding=embedding, degradation=degradation, seed=seed)
    report, q_pos, g_pos, ranked, correct = score_labelled(emb.embeddings, labels, retrieval, q_emb.embeddings,
                                                           queries_per_person, seed)
    draw_figures(name, report, [q_emb.crops[i] for i in q_pos], [emb.crops[j] for j in g_pos], ranked, correct,
                 evaluate)
    return report


def evaluate_pairs(model, device, pairs: list, *, data: DataSettings = DataSettings(),
                   embedding: EmbeddingSettings = EmbeddingSettings(), degradation: str = "none", seed: int = 0) -> dict:
    """Verification on pairs (dataset.read_pairs): every photo embedded once (the second photo of each pair
    degraded or covered as `degradation` says), cosine distances, ten-fold accuracy and TAR@FAR
    (evaluation.verification). A pair whose photo is left out (unreadable, no face on a chain without centre)
    counts as wrong, as it would in the field: it is scored at an infinite distance."""
    firsts = sorted({p.a for p in pairs} | ({p.b for p in pairs} if degradation == "none" else set()))
    clean = embed_paths(firsts, model, device, "pair photos", data=data, embedding=embedding, seed=seed)
    vectors = dict(zip(clean.paths, unit(clean.embeddings)))
    seconds = vectors
    if degradation != "none":
        covered = embed_paths(sorted({p.b for p in pairs}), model, device, f"pair photos, {degradation}", data=data,
                              embedding=embedding, degradation=degradation, seed=seed)
        seconds = dict(zip(covered.paths, unit(covered.embeddings)))
    distances = np.array([1.0 - float(vectors[p.a] @ seconds[p.b]) if p.a in vectors and p.b in seconds else np.inf
                          for p in pairs])
    report = pair_report(distances, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
    report["pairs_left_out"] = int(np.isinf(distances).sum())
    return report
