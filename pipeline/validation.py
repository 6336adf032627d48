"""Validation on the held-out people every epoch: the competition's protocol (or every photo against
the others), on clean and degraded queries."""
from __future__ import annotations

from dataset import covered_crop, degrade
from detection import load_crop
from evaluation.metrics import METRICS
from pipeline.protocol import score_labelled, score_leave_one_out
from search.retrieval_settings import RetrievalSettings


def validate(model, crops: list, labels: list[int], device, *, batch_size: int,
             retrieval: RetrievalSettings, degradation: str, queries: str, queries_per_person: int, seed: int,
             features=None, cover_kinds: list[str] | tuple[str, ...] = ("square",)) -> dict:
    """Competition protocol on the held-out people (queries 'one': queries_per_person photos a person
    against the rest; 'all': every photo against all the others): top-1/5/10, mAP and the rest, from the
    crops, or from a frozen backbone's stored plain-view `features`; with a degradation, the same photos
    degraded as queries against the clean ones too (degraded_<metric>, mean_<metric>): 'covers' draws one of
    `cover_kinds` on each (dataset.covered_crop). `model`: the EmbeddingNet in training (PyTorch, imported here: only
    training validates); `features`: a tensor."""
    import torch

    from network import embed

    if features is None:
        emb = embed(model, crops, batch_size, device, desc="validating")
    else:
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            emb = torch.cat([model.from_features(f.to(device)).float().cpu()
                             for f in features.split(batch_size)]).numpy()
        model.train(was_training)

    def score(query_emb=None) -> dict:
        if queries == "all":
            return score_leave_one_out(emb, labels, retrieval, query_emb)
        return score_labelled(emb, labels, retrieval, query_emb, queries_per_person, seed)[0]

    report = score()
    if degradation != "none" and features is None:
        # The same photos as queries, degraded as evaluate.degrade does (seeded per photo), against the clean ones.
        worse = [covered_crop(load_crop(c), seed * 1_000_003 + i, cover_kinds) if degradation == "covers" else
                 degrade(load_crop(c), degradation, seed * 1_000_003 + i) for i, c in enumerate(crops)]
        degraded = score(embed(model, worse, batch_size, device, desc="validating, degraded"))
        for key in METRICS:
            if key in report and key in degraded:
                report[f"degraded_{key}"] = degraded[key]
                report[f"mean_{key}"] = (report[key] + degraded[key]) / 2
    return report
