"""The detection chain: a photo walks `[crop.detector] + crop.fallback` until a step finds a face;
`guess` (dlib's landmarks in a box guessed at the centre) and `center` (the centred square) always do."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detection.align import ALIGNMENTS, dlib_align, dlib_landmarks, eyes_align, guessed_box, similarity_align, square_crop
from detection.detectors import DETECTORS, detect
from detection.occluders import fill_dark_patches
from utils import ConfigError

CENTER = "center"
GUESS = "guess"  # a chain step: dlib's landmarks in a box guessed at the photo's centre, aligned
STEPS = (*DETECTORS, GUESS, CENTER)  # what crop.detector and crop.fallback may name


@dataclass
class Crop:
    """One photo's face crop and how it was made: the chain step that found it (a detector's
    name, or 'center'), how many faces that step saw, and whether it was aligned."""
    image: np.ndarray
    path: str
    faces: int
    aligned: bool


def chain_steps(cfg: dict) -> list[str]:
    """The detection chain: crop.detector, then crop.fallback, each step once."""
    steps = [cfg["detector"]] + list(cfg.get("fallback") or [])
    for step in steps:
        if step not in STEPS:
            raise ConfigError(f"crop.detector/crop.fallback: '{step}' is not one of {', '.join(STEPS)}")
    if cfg["align"] not in ALIGNMENTS:
        raise ConfigError(f"crop.align '{cfg['align']}' is not one of {', '.join(ALIGNMENTS)}")
    return list(dict.fromkeys(steps))


def describe_chain(cfg: dict) -> str:
    """The chain in words, for reports and tables: 'yunet 0.6, else 0.3 → mtcnn → haar → guess, central face'."""
    sure, low = cfg.get("yunet_confidence"), cfg.get("yunet_low_confidence", 1.0)
    names = {"yunet": f"yunet {sure}" + (f", else {low}" if sure is not None and low < sure else "")}
    return " → ".join(names.get(s, s) for s in chain_steps(cfg)) + f", {cfg.get('subject', 'largest')} face" + \
        (", dark patches filled" if cfg.get("fill_dark_patches") else "")


def crop_face(image: np.ndarray, cfg: dict) -> Crop | None:
    """Crop the face found along the chain (of several, the one crop.subject names), aligned as
    crop.align asks; None when no step finds a face (a chain without 'center')."""
    size, margin, align = int(cfg["size"]), float(cfg["margin"]), cfg["align"]
    seen = fill_dark_patches(image) if cfg.get("fill_dark_patches") else image  # where faces are looked for
    for step in chain_steps(cfg):
        if step == CENTER:
            return Crop(square_crop(image, None, margin, size), CENTER, 0, False)
        if step == GUESS:  # no detector found a face: dlib's landmarks inside a guessed box, aligned
            box = guessed_box(image, float(cfg.get("guess_side", 0.6)))
            if align == "dlib":
                return Crop(dlib_align(image, box, size, seen), GUESS, 0, True)
            if align == "similarity":
                try:
                    return Crop(eyes_align(image, dlib_landmarks(seen, box), size), GUESS, 0, True)
                except ValueError:
                    pass
            return Crop(square_crop(image, box, margin, size), GUESS, 0, False)
        found = detect(seen, cfg, step)
        if not len(found):
            continue
        if cfg.get("subject", "largest") == "central":
            found = found.central_first(*image.shape[:2])
        box = found.boxes[0]
        if align == "dlib":
            return Crop(dlib_align(image, box, size, seen), step, len(found), True)
        if align == "similarity" and found.landmarks is not None:
            try:
                return Crop(similarity_align(image, found.landmarks[0], size), step, len(found), True)
            except ValueError:
                pass  # degenerate landmarks: the square crop below
        return Crop(square_crop(image, box, margin, size), step, len(found), False)
    return None
