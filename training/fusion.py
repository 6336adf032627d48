"""Several networks fused into one model (model.members, network.FusedNet): the weights chosen on the validation
people by the mean top-1 over clean queries and every cover kind (drawn from training's own distribution, never
evaluation's), one calibration on the fused distance. train.py gathers the members (training those named by a config
file first) and writes the one checkpoint that every entry point takes as it takes any other.

    model, rows = make_fusion(members, val_photos, val_labels, "cpu", data=..., retrieval=..., kinds=[...],
                              member_weights="auto", seed=0)
    ckpt, best = fuse_checkpoints(paths, "cpu", members=[...], data=..., ...)   # the checkpoint train.py writes
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from detection import FaceFinder
from occlusion.covers import TRAINING, CoverRanges
from evaluation.calibration import calibrate, summary as calibration_summary
from network import FusedNet, fused_checkpoint, model_from_checkpoint
from runtime import EmbeddingSettings, fuse_embeddings
from pipeline.embedding import embed_paths
from pipeline.protocol import format_report, score_leave_one_out
from search.retrieval_settings import RetrievalSettings
from dataset import DataSettings
from training.data import split_people
from utils import ConfigError, DataError, get_logger

log = get_logger()
STEP = 0.1  # model.member_weights auto: the weights tried are the multiples of this that sum to 1


def weight_grid(members: int, step: float = STEP) -> list[tuple[float, ...]]:
    """Every weighting of `members` networks in multiples of `step` that sums to 1, each member's weight above 0
    (a member weighted 0 is not a fusion: it is listed so that its absence can be measured, not chosen)."""
    n = round(1 / step)
    return [tuple(c / n for c in combo) for combo in itertools.product(range(1, n), repeat=members)
            if sum(combo) == n]


def embeddings_by_condition(members: list, paths: list[Path], device, kinds: list[str], *, data: DataSettings,
                            embedding: EmbeddingSettings, seed: int,
                            covers: CoverRanges = TRAINING) -> tuple[list[Path], dict[str, list[np.ndarray]]]:
    """Each member's embeddings of the photos, clean and under each cover kind (drawn from `covers`: training's
    distribution, what choices are made on), on the photos every member kept in every condition: (those photos,
    {condition: [one array per member]})."""
    found: dict[str, list] = {}
    finder = FaceFinder()  # one for every member: a photo's face found once per detector step
    for condition in ["clean", *kinds]:
        found[condition] = [embed_paths(paths, m, device, f"validation, {condition}", data=data, embedding=embedding,
                                        degradation="none" if condition == "clean" else condition, seed=seed,
                                        covers=covers, finder=finder) for m in members]
    kept = set.intersection(*(set(f.paths) for parts in found.values() for f in parts))
    order = [p for p in paths if p in kept]
    out = {}
    for condition, parts in found.items():
        out[condition] = []
        for part in parts:
            row = {p: i for i, p in enumerate(part.paths)}
            out[condition].append(part.embeddings[[row[p] for p in order]])
    return order, out


def choose_weights(embeddings: dict[str, list[np.ndarray]], labels: list[str], candidates: list[tuple[float, ...]],
                   retrieval: RetrievalSettings) -> tuple[tuple[float, ...], list[dict]]:
    """The weighting whose fused embeddings rank best on the validation people: every photo against the clean
    others (score_leave_one_out), clean and under each cover kind as the query; the mean top-1 over those
    conditions decides (mean MAP@R breaks ties). Returns (the weights, one row per candidate and single member)."""
    members = len(embeddings["clean"])
    singles = [tuple(1.0 if i == j else 0.0 for i in range(members)) for j in range(members)]
    rows = []
    for weights in [*singles, *candidates]:
        clean = fuse_embeddings(embeddings["clean"], weights)
        row = {"weights": weights}
        for condition, parts in embeddings.items():
            query = None if condition == "clean" else fuse_embeddings(parts, weights)
            rep = score_leave_one_out(clean, labels, retrieval, query)
            row[condition] = {"top1": rep["top1"], "map@r": rep["map@r"]}
        row["mean_top1"] = float(np.mean([row[c]["top1"] for c in embeddings]))
        row["mean_map@r"] = float(np.mean([row[c]["map@r"] for c in embeddings]))
        rows.append(row)
    best = max(rows[members:], key=lambda r: (round(r["mean_top1"], 6), r["mean_map@r"]))
    return best["weights"], rows


def make_fusion(models: list, paths: list[Path], labels: list[str], device, *, data: DataSettings,
                embedding: EmbeddingSettings, retrieval: RetrievalSettings, kinds: list[str], member_weights: list[float] | str,
                seed: int) -> tuple[FusedNet, list[dict]]:
    """The fusion of `models` (single networks), its weights chosen on the validation people's photos `paths`
    (`labels`: their people) unless `member_weights` gives them, calibrated on their fused clean embeddings:
    (the fused model, one row per weighting scored: choose_weights's)."""
    if len(models) < 2:
        raise ConfigError(f"model.members: a fusion needs two or more networks, got {len(models)}")
    if any(len(m.networks()) > 1 for m in models):
        raise ConfigError("model.members: a member is itself a fusion; members are single networks")
    if len(set(labels)) < 2:
        raise DataError(f"fewer than 2 validation people (data.val_fraction {data.val_fraction}) to choose the "
                        f"fusion's weights and calibrate it on")
    if member_weights == "auto":
        candidates = weight_grid(len(models))
    elif len(member_weights) != len(models):
        raise ConfigError(f"model.member_weights: one weight per member ({len(models)}), got {member_weights}")
    else:  # given: scored on the clean photos only (the calibration needs them), no covers to choose by
        candidates, kinds = [tuple(float(w) / sum(member_weights) for w in member_weights)], []
    owner = dict(zip(paths, labels))
    order, embeddings = embeddings_by_condition(models, paths, device, kinds, data=data, embedding=embedding,
                                                seed=seed)
    labels = [owner[p] for p in order]
    weights, rows = choose_weights(embeddings, labels, candidates, retrieval)
    for row in rows:
        log.info(f"fusion weights {', '.join(f'{w:.2f}' for w in row['weights'])}: mean top-1 {row['mean_top1']:.3f} "
                 f"over clean and {len(kinds)} cover kinds (clean {row['clean']['top1']:.3f})")
    model = FusedNet(models, list(weights))
    clean = model.fuse(embeddings["clean"])
    model.meta["calibration"] = calibrate(clean, labels)
    log.info(calibration_summary(model.meta["calibration"]))
    log.info(f"fusion: weights {weights} chosen on {len(set(labels))} validation people; clean "
             f"{format_report(score_leave_one_out(clean, labels, retrieval))}")
    return model, rows


def fuse_checkpoints(checkpoints: list[Path], device, *, members: list[str], data: DataSettings,
                     embedding: EmbeddingSettings, retrieval: RetrievalSettings, kinds: list[str],
                     member_weights: list[float] | str, seed: int) -> tuple[dict, float]:
    """The members' `checkpoints` (named in the config as `members`) fused by make_fusion on the validation people
    `data` and `seed` give: (the fused checkpoint, its config the first member's with the members and weights; the
    chosen weighting's mean top-1)."""
    loaded = [model_from_checkpoint(path, device) for path in checkpoints]
    _, val_people = split_people(data, seed)
    paths = [p for photos in val_people.values() for p in photos]
    labels = [name for name, photos in val_people.items() for _ in photos]
    model, rows = make_fusion([m for m, _ in loaded], paths, labels, device, data=data, embedding=embedding,
                              retrieval=retrieval, kinds=kinds, member_weights=member_weights, seed=seed)
    first = loaded[0][1]
    saved = {**first, "model": {**first["model"], "members": members, "member_weights": member_weights}}
    ckpt = fused_checkpoint(model, saved, [{k: c[k] for k in ("model", "input", "crop")} for _, c in loaded])
    ckpt["people"] = {"val": sorted(val_people)}
    ckpt["fusion"] = {"rows": rows, "kinds": kinds}
    chosen = next(r for r in rows if np.allclose(r["weights"], model.weights))
    return ckpt, chosen["mean_top1"]
