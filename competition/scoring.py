"""A model scored on a competition folder with its ground truth, as the server would score its submission
and with every metric of the evaluation protocol (pipeline/protocol.py), plus the figures."""
from __future__ import annotations

from pathlib import Path

from competition.rules import load_ground_truth
from dataset import DataSettings
from pipeline.embedding import embed_folder
from pipeline.protocol import EvaluateSettings, decision_report, draw_figures, score_ranking
from search.retrieval import retrieve
from runtime import EmbeddingSettings
from search.retrieval_settings import RetrievalSettings
from utils import get_logger

log = get_logger()


def score_competition(model, device, competition: str | Path, name: str, *, data: DataSettings = DataSettings(),
                      retrieval: RetrievalSettings = RetrievalSettings(),
                      embedding: EmbeddingSettings = EmbeddingSettings(),
                      evaluate: EvaluateSettings = EvaluateSettings(), seed: int = 0) -> dict:
    """Embed test/query (degraded as evaluate.degrade says) and test/gallery, rank the whole gallery
    and score it against ground_truth.json; queries the ground truth lacks are named, not scored."""
    comp = Path(competition)
    gt = load_ground_truth(comp)
    queries = embed_folder(comp / "test" / "query", model, device, data=data, embedding=embedding,
                           degradation=evaluate.degrade, seed=seed)
    gallery = embed_folder(comp / "test" / "gallery", model, device, data=data, embedding=embedding, seed=seed)
    g_index = {name: j for j, name in enumerate(gallery.names)}
    unknown = [q for q in queries.names if q not in gt["queries"]]
    if unknown:
        log.warning(f"{len(unknown)} query photos are not in the ground truth, e.g. {unknown[0]}")
    keep = [i for i, q in enumerate(queries.names) if q in gt["queries"]]
    correct = [{g_index[g] for g in gt["queries"][queries.names[i]] if g in g_index} for i in keep]
    q_emb = queries.embeddings[keep]
    retrieved = retrieve(q_emb, gallery.embeddings, len(gallery.embeddings), retrieval)  # once, for both
    ranked = retrieved[1]
    report = score_ranking(ranked, correct)
    report.update(decision_report(q_emb, gallery.embeddings, correct, retrieval, retrieved))
    q_crops, g_crops = [queries.crops[i] for i in keep], gallery.crops
    missing = len(set(gt["queries"]) - set(queries.names))
    if missing:
        report["queries_missing"] = missing
        log.warning(f"{missing} ground-truth queries have no readable photo in {comp / 'test' / 'query'}")
    draw_figures(name, report, q_crops, g_crops, ranked, correct, evaluate)
    return report
