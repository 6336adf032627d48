"""Validation on the held-out people every epoch: the competition's protocol (or every photo against
the others), on clean and degraded queries; the monitored metric's name checked."""
from __future__ import annotations

import torch

from dataset import degrade
from detection import load_crop
from evaluation.metrics import METRICS
from network import EmbeddingNet, embed
from pipeline.protocol import score_labelled, score_leave_one_out
from utils import ConfigError


def validate(model: EmbeddingNet, crops: list, labels: list[int], cfg: dict, device,
             features: torch.Tensor | None = None) -> dict:
    """Competition protocol on the held-out people: top-1/5/10, mAP and the rest (from the
    crops, or from a frozen backbone's stored plain-view features when given)."""
    if features is None:
        emb = embed(model, crops, cfg["train"]["batch_size_eval"], device, desc="validating")
    else:
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            emb = torch.cat([model.from_features(f.to(device)).float().cpu()
                             for f in features.split(cfg["train"]["batch_size_eval"])]).numpy()
        model.train(was_training)
    report = _score(emb, labels, cfg)
    mode = cfg["train"]["val_degrade"]
    if mode != "none" and features is None:
        # The same photos as queries, degraded as evaluate.degrade does (seeded per photo), against the clean ones.
        worse = [degrade(load_crop(c), mode, cfg["seed"] * 1_000_003 + i) for i, c in enumerate(crops)]
        degraded = _score(emb, labels, cfg, embed(model, worse, cfg["train"]["batch_size_eval"], device,
                                                 desc="validating, degraded"))
        for key in METRICS:
            if key in report and key in degraded:
                report[f"degraded_{key}"] = degraded[key]
                report[f"mean_{key}"] = (report[key] + degraded[key]) / 2
    return report


def _score(emb, labels: list[int], cfg: dict, query_emb=None) -> dict:
    if cfg["train"]["val_queries"] == "all":
        return score_leave_one_out(emb, labels, cfg["retrieval"], query_emb)
    report, *_ = score_labelled(emb, labels, cfg, query_emb)
    return report


def check_monitor(cfg: dict) -> None:
    """train.monitor: a name of metrics.METRICS, on clean validation queries, or degraded_<name> (degraded
    queries) or mean_<name> (the mean of both), which need train.val_degrade."""
    t = cfg["train"]
    name = t["monitor"]
    base = name.split("_", 1)[1] if name.startswith(("degraded_", "mean_")) else name
    if base not in METRICS:
        raise ConfigError(f"train.monitor '{name}' is not one of {', '.join(METRICS)} (or degraded_ / mean_ of one)")
    if base != name and t["val_degrade"] == "none":
        raise ConfigError(f"train.monitor '{name}' needs degraded validation queries: set train.val_degrade "
                          "(cutout, gamma or both)")
