"""Same-person decisions with known error rates: a model's calibration, measured on people it was never
trained on (the validation people of its training run), and the thresholds it gives.

    calib = calibrate(embeddings, labels)                 # all pairs: genuine and impostor distances
    threshold_for_far(calib, 1e-3)                        # verification: one photo against one photo
    threshold_for_gallery(calib, 1e-2, gallery_size=300)  # open-set search: a stranger against a gallery

Distances are what search answers for unit embeddings: cosine distance, 1 − cos. The calibration keeps
the lowest impostor distances (the tail every threshold of interest lies in) and the counts, so a
threshold says how many impostor pairs it rests on, and a rate finer than its data (fewer than
MIN_PAIRS impostor pairs beyond the threshold) is marked `supported: false` rather than invented.

Open-set identification: a stranger is (wrongly) matched when any of the gallery's photos is nearer
than the threshold; with a per-pair false-accept rate FAR and G gallery photos that chance (FPIR) is
about 1 − (1 − FAR)^G, so a gallery of G photos needs FAR = 1 − (1 − FPIR)^(1/G) per pair.
Torch-free: the store and the page use it.
"""
from __future__ import annotations

import numpy as np

from evaluation.metrics import rate_threshold

FARS = (1e-2, 1e-3, 1e-4)  # the verification rates a checkpoint carries thresholds for
MIN_PAIRS = 10  # impostor pairs at or below a threshold for its rate to count as measured
TAIL = 20_000  # the lowest impostor distances kept (every FAR ≥ TAIL / impostor pairs is exact)


def pair_distances(embeddings: np.ndarray, labels: list) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances (1 − cos) of every pair of photos: (genuine pairs, impostor pairs)."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    lab = np.asarray([hash(str(v)) for v in labels])
    rows, cols = np.triu_indices(len(x), k=1)
    dist = (1.0 - x @ x.T)[rows, cols]  # the matrix, not the pairs' rows: N² floats, not N² × D
    same = lab[rows] == lab[cols]
    return dist[same], dist[~same]


def calibrate(embeddings: np.ndarray, labels: list, fars=FARS, tail: int = TAIL, max_photos: int = 4000) -> dict:
    """The calibration of a model on labelled embeddings (people it was not trained on): thresholds for
    each FAR in `fars` with the pairs they rest on, and the impostor tail for any other rate. Past
    `max_photos` photos a seeded sample of them is used (the pairs grow with their square)."""
    if len(labels) > max_photos:
        keep = np.sort(np.random.default_rng(0).choice(len(labels), max_photos, replace=False))
        embeddings, labels = np.asarray(embeddings)[keep], [labels[i] for i in keep]
    genuine, impostor = pair_distances(embeddings, labels)
    if not len(genuine) or not len(impostor):
        raise ValueError(f"calibration needs genuine and impostor pairs: got {len(genuine)} and {len(impostor)} "
                         f"from {len(labels)} photos of {len(set(map(str, labels)))} people")
    calib = {"metric": "cosine", "photos": int(len(labels)), "people": int(len(set(map(str, labels)))),
             "genuine_pairs": int(len(genuine)), "impostor_pairs": int(len(impostor)),
             "impostor_tail": np.sort(impostor)[:tail].astype(np.float32).tolist(),
             "genuine_sorted": np.sort(genuine).astype(np.float32).tolist()}
    calib["thresholds"] = {f"{far:g}": threshold_for_far(calib, far) for far in fars}
    return calib


def tar_at(calib: dict, threshold: float) -> float:
    """The true-accept rate of a threshold: the fraction of genuine pairs at or below it."""
    genuine = np.asarray(calib["genuine_sorted"])
    return float(np.searchsorted(genuine, threshold, side="right")) / max(1, len(genuine))


def threshold_for_far(calib: dict, far: float) -> dict:
    """The largest distance whose false-accept rate is at most `far`: {threshold, far, tar, pairs,
    supported}; pairs: how many impostor pairs lie at or below it (supported when ≥ MIN_PAIRS)."""
    tail, total = np.asarray(calib["impostor_tail"], np.float32), calib["impostor_pairs"]  # kept as float32
    threshold, allowed = rate_threshold(tail, far, total)  # allowed: impostor pairs at or below the threshold
    if allowed >= len(tail):
        raise ValueError(f"FAR {far:g} lies beyond the kept impostor tail ({len(tail)} of {total} pairs)")
    return {"threshold": threshold, "far": far, "tar": tar_at(calib, threshold), "pairs": allowed,
            "supported": allowed >= MIN_PAIRS}


def threshold_for_gallery(calib: dict, fpir: float, gallery_size: int) -> dict:
    """The threshold under which a stranger is matched to someone in a gallery of `gallery_size` photos
    with probability about `fpir`; the per-pair FAR it needs, and whether the calibration supports it."""
    if not 0 < fpir < 1:
        raise ValueError(f"the false-positive identification rate must lie in (0, 1), got {fpir}")
    per_pair = 1.0 - (1.0 - fpir) ** (1.0 / max(1, int(gallery_size)))
    out = threshold_for_far(calib, per_pair)
    return dict(out, fpir=fpir, gallery_size=int(gallery_size), far=per_pair)


def decide(distance: float, threshold: dict) -> bool:
    """Same person? True when the distance is at or below the threshold."""
    return float(distance) <= threshold["threshold"]


def summary(calib: dict) -> str:
    """One line: the thresholds and the data they rest on."""
    parts = [f"FAR {k}: {v['threshold']:.3f} (TAR {v['tar']:.3f}, {v['pairs']} impostor pairs"
             f"{'' if v['supported'] else ', too few to trust'})" for k, v in calib["thresholds"].items()]
    return (f"calibrated on {calib['people']} people ({calib['photos']} photos, {calib['genuine_pairs']} genuine and "
            f"{calib['impostor_pairs']} impostor pairs): " + "; ".join(parts))


def match_words(best: float, limit: dict | None) -> str:
    """The open-set decision for a search, in words: someone matches, or no one in the gallery does."""
    if limit is None:
        return "no calibration in this model: every result is a candidate, none is a decision"
    rate = (f"threshold {limit['threshold']:.3f} at a false-positive identification rate of {limit['fpir']:g} for "
            f"{limit['gallery_size']} photos" + ("" if limit["supported"] else
                                                 ", resting on too few impostor pairs to trust"))
    if decide(best, limit):
        return f"a match: the best distance {best:.3f} is within the {rate}"
    return f"no one in the gallery matches: the best distance {best:.3f} is beyond the {rate}"
