"""The detection chain: a photo walks `[crop.detector] + crop.fallback` until a step finds a face;
`guess` (dlib's landmarks in a box guessed at the centre) and `center` (the centred square) always do."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detection.align import ALIGNMENTS, dlib_align, dlib_landmarks, eyes_align, guessed_box, similarity_align, square_crop
from detection.crop_settings import CropSettings
from detection.detectors import DETECTORS, detect
from detection.occluders import fill_dark_patches
from utils import lookup

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


def chain_steps(settings: CropSettings) -> list[str]:
    """The detection chain: settings.detector, then settings.fallback, each step once (an unknown step
    or alignment is a ConfigError naming the key, before any work)."""
    steps = list(dict.fromkeys([settings.detector, *settings.fallback]))
    for step in steps:
        lookup(dict.fromkeys(STEPS), step, "crop.detector/crop.fallback")
    lookup(dict.fromkeys(ALIGNMENTS), settings.align, "crop.align")
    return steps


def describe_chain(settings: CropSettings) -> str:
    """The chain in words, for reports and tables: 'yunet 0.6, else 0.3 → mtcnn → haar → guess, central face'."""
    sure, low = settings.yunet_confidence, settings.yunet_low_confidence
    names = {"yunet": f"yunet {sure}" + (f", else {low}" if low < sure else "")}
    return " → ".join(names.get(s, s) for s in chain_steps(settings)) + f", {settings.subject} face" + \
        (", dark patches filled" if settings.fill_dark_patches else "")


def crop_face(image: np.ndarray, settings: CropSettings = CropSettings()) -> Crop | None:
    """Crop the face found along the chain (of several, the one settings.subject names), aligned as
    settings.align asks; None when no step finds a face (a chain without 'center')."""
    size, margin, align = int(settings.size), float(settings.margin), settings.align
    seen = fill_dark_patches(image) if settings.fill_dark_patches else image  # where faces are looked for
    for step in chain_steps(settings):
        if step == CENTER:
            return Crop(square_crop(image, None, margin, size), CENTER, 0, False)
        if step == GUESS:  # no detector found a face: dlib's landmarks inside a guessed box, aligned
            box = guessed_box(image, float(settings.guess_side))
            if align == "dlib":
                return Crop(dlib_align(image, box, size, seen), GUESS, 0, True)
            if align == "similarity":
                try:
                    return Crop(eyes_align(image, dlib_landmarks(seen, box), size), GUESS, 0, True)
                except ValueError:
                    pass
            return Crop(square_crop(image, box, margin, size), GUESS, 0, False)
        found = detect(seen, settings, step)
        if not len(found):
            continue
        if settings.subject == "central":
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
