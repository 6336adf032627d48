"""The detection chain: a photo walks `[crop.detector] + crop.fallback` until a step finds a face;
`guess` (dlib's landmarks in a box guessed at the centre) and `center` (the centred square) always do. What a chain
is and what it finds; detection.FaceFinder walks it."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from detection.align import ALIGNMENTS
from detection.crop_settings import CropSettings
from detection.detectors import DETECTORS
from utils import ConfigError, lookup

CENTER = "center"
GUESS = "guess"  # a chain step: dlib's landmarks in a box guessed at the photo's centre, aligned
STEPS = (*DETECTORS, GUESS, CENTER)  # what crop.detector and crop.fallback may name
LANDMARKS = ("dlib", "net")  # what places the points dlib's chip is aligned by (crop.landmarks)


@dataclass
class Crop:
    """One photo's face crop and how it was made: the chain step that found it (a detector's
    name, or 'center'), how many faces that step saw, and whether it was aligned."""
    image: np.ndarray
    path: str
    faces: int
    aligned: bool


def chain_steps(settings: CropSettings) -> list[str]:
    """The detection chain: settings.detector, then settings.fallback, each step once (an unknown step,
    alignment or landmark source is a ConfigError naming the key, before any work)."""
    steps = list(dict.fromkeys([settings.detector, *settings.fallback]))
    for step in steps:
        lookup(dict.fromkeys(STEPS), step, "crop.detector/crop.fallback")
    lookup(dict.fromkeys(ALIGNMENTS), settings.align, "crop.align")
    lookup(dict.fromkeys(LANDMARKS), settings.landmarks, "crop.landmarks")
    if settings.landmarks == "net" and not settings.landmark_net:
        raise ConfigError("crop.landmarks=net needs crop.landmark_net: the file of a trained landmark network "
                          "(python -m training.landmarks --out FILE)")
    return steps


def describe_chain(settings: CropSettings) -> str:
    """The chain in words, for reports and tables: 'yunet 0.6, else 0.3 → mtcnn → haar → guess, central face'."""
    sure, low = settings.yunet_confidence, settings.yunet_low_confidence
    names = {"yunet": f"yunet {sure}" + (f", else {low}" if low < sure else "")}
    return " → ".join(names.get(s, s) for s in chain_steps(settings)) + f", {settings.subject} face" + \
        (", dark patches filled" if settings.fill_dark_patches else "") + \
        (", the landmark network's points" if settings.landmarks == "net" else "")


@dataclass
class Found:
    """Where the chain found a face: the step, its box (None for the centred square), how many faces that step saw,
    and the detector's five landmarks (None where it gives none)."""
    step: str
    box: np.ndarray | None
    faces: int
    landmarks: np.ndarray | None = None


NOT_DETECTION = ("align", "margin", "size", "landmarks", "landmark_net", "on_error")  # what only cuts the face out
NOT_STEP = ("detector", "fallback", "subject")  # what chooses the steps or the face among a step's, not what one finds


def photo_digest(image: np.ndarray) -> tuple:
    """What the memories of found faces know a photo by: its pixels' sha1 and its shape."""
    return hashlib.sha1(memoryview(np.ascontiguousarray(image)).cast("B")).hexdigest(), image.shape
