"""The detection chain: a photo walks `[crop.detector] + crop.fallback` until a step finds a face;
`guess` (dlib's landmarks in a box guessed at the centre) and `center` (the centred square) always do."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detection.align import (ALIGNMENTS, dlib_align, dlib_landmarks, dlib_shape, eyes_align, guessed_box,
                             similarity_align, square_crop)
from detection.crop_settings import CropSettings
from detection.detectors import DETECTORS, detect
from detection.occluders import fill_dark_patches
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


def find_face(seen: np.ndarray | Callable[[], np.ndarray], settings: CropSettings = CropSettings(),
              photo: tuple | None = None) -> Found | None:
    """The face found along the chain in `seen` (the photo, or its copy with dark patches filled; or a function that
    makes it, called only if a detector has to look): of several, the one settings.subject names; None when no step
    finds a face (a chain without 'center'). `photo` (the photo's digest and shape, from crop_face): each step's
    detections are remembered for another chain that runs the same step with the same settings on the same photo (a
    fusion's members whose chains differ in their fallbacks)."""
    view = seen if callable(seen) else lambda: seen
    for step in chain_steps(settings):
        if step == CENTER:
            return Found(CENTER, None, 0)
        if step == GUESS:
            return Found(GUESS, guessed_box(view(), float(settings.guess_side)), 0)
        found = detect(view(), settings, step) if photo is None else detect_remembered(view, settings, step, photo)
        if not len(found):
            continue
        if settings.subject == "central":
            found = found.central_first(*photo[1][:2] if photo is not None else view().shape[:2])
        return Found(step, found.boxes[0], len(found), None if found.landmarks is None else found.landmarks[0])
    return None


def landmark_points(seen: np.ndarray, box: np.ndarray, settings: CropSettings) -> np.ndarray | None:
    """The five points dlib's chip is aligned by when settings.landmarks names another source than dlib's own
    predictor (net: the landmark network of settings.landmark_net); None for dlib's predictor."""
    if settings.landmarks == "dlib":
        return None
    from detection import landmark_net

    return landmark_net.predict(landmark_net.loaded(settings.landmark_net), seen, box)


def cut_face(image: np.ndarray, found: Found, settings: CropSettings, seen: np.ndarray | None = None,
             points: np.ndarray | None = None) -> Crop:
    """The crop of a found face, aligned as settings.align asks; dlib's chip by `points` (dlib's order) when given,
    else by settings.landmarks' points, placed on `seen`."""
    size, margin, align = int(settings.size), float(settings.margin), settings.align
    seen = image if seen is None else seen
    if found.step == CENTER:
        return Crop(square_crop(image, None, margin, size), CENTER, 0, False)
    box, step, faces = found.box, found.step, found.faces
    if align == "dlib":
        points = landmark_points(seen, box, settings) if points is None else points
        return Crop(dlib_align(image, box, size, seen, points), step, faces, True)
    if align == "similarity":
        marks = found.landmarks
        if step == GUESS:  # no detector's landmarks: dlib's eyes (or the network's) inside the guessed box
            given = landmark_points(seen, box, settings) if points is None else points
            marks = dlib_landmarks(seen, box) if given is None else dlib_shape(given, box)
        try:
            if step == GUESS:
                return Crop(eyes_align(image, marks, size), step, faces, True)
            if marks is not None:
                return Crop(similarity_align(image, marks, size), step, faces, True)
        except ValueError:
            pass  # degenerate landmarks: the square crop below
    return Crop(square_crop(image, box, margin, size), step, faces, False)


NOT_DETECTION = ("align", "margin", "size", "landmarks", "landmark_net", "on_error")  # what only cuts the face out
NOT_STEP = ("detector", "fallback", "subject")  # what chooses the steps or the face among a step's, not what one finds
FOUND_KEPT = 8192  # detector runs remembered: a fusion's members crop the same photos one after another
_detected: OrderedDict = OrderedDict()
_found_lock = threading.Lock()


def forget_found() -> None:
    """Forget every face found (tests that replace a detector, and benchmarks' fresh passes, start afresh)."""
    with _found_lock:
        _detected.clear()


def photo_digest(image: np.ndarray) -> tuple:
    """What the memories of found faces know a photo by: its pixels' sha1 and its shape."""
    return hashlib.sha1(memoryview(np.ascontiguousarray(image)).cast("B")).hexdigest(), image.shape


def detect_remembered(view: Callable[[], np.ndarray], settings: CropSettings, step: str, photo: tuple):
    """detect(view(), settings, step), remembered (FOUND_KEPT photos) under the photo and the settings a step reads;
    view() (the photo as the detector sees it) is called only when the step has to run."""
    key = (photo, step, repr({k: v for k, v in settings.to_dict().items() if k not in NOT_DETECTION + NOT_STEP}))
    with _found_lock:
        found = _detected.get(key)
    if found is None:
        found = detect(view(), settings, step)
        with _found_lock:
            _detected[key] = found
            while len(_detected) > FOUND_KEPT:
                _detected.popitem(last=False)
    return found


def crop_face(image: np.ndarray, settings: CropSettings = CropSettings()) -> Crop | None:
    """Crop the face found along the chain (of several, the one settings.subject names), aligned as
    settings.align asks; None when no step finds a face (a chain without 'center'). Where a face was found in the
    same pixels by the same detector step a moment ago (another member of a fusion), it is not looked for again."""
    photo = photo_digest(image)
    seen = None

    def view() -> np.ndarray:  # the photo, or its copy with dark patches filled: made once, when something looks
        nonlocal seen
        if seen is None:
            seen = fill_dark_patches(image) if settings.fill_dark_patches else image
        return seen

    found = find_face(view, settings, photo)  # looked for on view(): the photo, or its copy with dark patches filled
    return None if found is None else cut_face(image, found, settings, None if settings.align == "none" else view())
