"""Face finding as one object its caller owns, as facenet-pytorch's MTCNN is: a FaceFinder holds the detectors,
dlib's predictor and the landmark networks it has loaded, and its memory of the faces found a moment ago, so a
fusion's members crop one photo with one detector run per step. Nothing here is kept by the module.

    finder = FaceFinder()
    crop = finder.crop_face(image, settings)      # a Crop, or None where the chain finds no face
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from detection import landmark_net
from detection.align import dlib_align, dlib_landmarks, dlib_predictor, dlib_shape, eyes_align, guessed_box, \
    similarity_align, square_crop
from detection.chain import CENTER, GUESS, NOT_DETECTION, NOT_STEP, Crop, Found, chain_steps, photo_digest
from detection.crop_settings import CropSettings
from detection.detectors import Detections, Models, detect
from detection.occluders import fill_dark_patches

FOUND_KEPT = 8192  # detector runs remembered: a fusion's members crop the same photos one after another


class FaceFinder:
    """Finds and crops faces along detection chains with the models it loaded (`models`) and its memory of detector
    runs (the last `remember`). Thread-safe; a copy sent to a worker process starts with nothing loaded or
    remembered. State is real (loaded networks, a memory), hence a class."""

    def __init__(self, remember: int = FOUND_KEPT):
        self.models = Models()
        self.remember = remember
        self._found: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"remember": self.remember}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["remember"])

    def detect(self, image: np.ndarray, settings: CropSettings, step: str) -> Detections:
        """The faces detector `step` finds in `image`, with the models this finder keeps."""
        return detect(image, settings, step, self.models)

    def detect_remembered(self, view: Callable[[], np.ndarray], settings: CropSettings, step: str,
                          photo: tuple) -> Detections:
        """detect(view(), settings, step), remembered under the photo and the settings a step reads; view() (the
        photo as the detector sees it) is called only when the step has to run."""
        key = (photo, step, repr({k: v for k, v in settings.to_dict().items() if k not in NOT_DETECTION + NOT_STEP}))
        with self._lock:
            found = self._found.get(key)
        if found is None:
            found = self.detect(view(), settings, step)
            with self._lock:
                self._found[key] = found
                while len(self._found) > self.remember:
                    self._found.popitem(last=False)
        return found

    def find_face(self, seen: np.ndarray | Callable[[], np.ndarray], settings: CropSettings = CropSettings(),
                  photo: tuple | None = None) -> Found | None:
        """The face found along the chain in `seen` (the photo, or its copy with dark patches filled; or a function
        that makes it, called only if a detector has to look): of several, the one settings.subject names; None when
        no step finds a face (a chain without 'center'). `photo` (the photo's digest and shape, from crop_face): each
        step's detections are remembered for another chain that runs the same step with the same settings on the
        same photo (a fusion's members whose chains differ in their fallbacks)."""
        view = seen if callable(seen) else lambda: seen
        for step in chain_steps(settings):
            if step == CENTER:
                return Found(CENTER, None, 0)
            if step == GUESS:
                return Found(GUESS, guessed_box(view(), float(settings.guess_side)), 0)
            found = self.detect(view(), settings, step) if photo is None else \
                self.detect_remembered(view, settings, step, photo)
            if not len(found):
                continue
            if settings.subject == "central":
                found = found.central_first(*photo[1][:2] if photo is not None else view().shape[:2])
            return Found(step, found.boxes[0], len(found), None if found.landmarks is None else found.landmarks[0])
        return None

    def dlib_predictor(self):
        """dlib's 5-point shape predictor, loaded once by this finder."""
        return self.models.get(("dlib_predictor",), dlib_predictor)

    def landmark_points(self, seen: np.ndarray, box: np.ndarray, settings: CropSettings) -> np.ndarray | None:
        """The five points dlib's chip is aligned by when settings.landmarks names another source than dlib's own
        predictor (net: the landmark network of settings.landmark_net, loaded once per content); None for dlib's."""
        if settings.landmarks == "dlib":
            return None
        ref = settings.landmark_net
        net = self.models.get(("landmark_net", landmark_net.file_sha256(ref)), lambda: landmark_net.load(ref))
        return landmark_net.predict(net, seen, box)

    def cut_face(self, image: np.ndarray, found: Found, settings: CropSettings, seen: np.ndarray | None = None,
                 points: np.ndarray | None = None) -> Crop:
        """The crop of a found face, aligned as settings.align asks; dlib's chip by `points` (dlib's order) when
        given, else by settings.landmarks' points, placed on `seen`."""
        size, margin, align = int(settings.size), float(settings.margin), settings.align
        seen = image if seen is None else seen
        if found.step == CENTER:
            return Crop(square_crop(image, None, margin, size), CENTER, 0, False)
        box, step, faces = found.box, found.step, found.faces
        if align == "dlib":
            points = self.landmark_points(seen, box, settings) if points is None else points
            predictor = self.dlib_predictor() if points is None else None
            return Crop(dlib_align(image, box, size, seen, points, predictor), step, faces, True)
        if align == "similarity":
            marks = found.landmarks
            if step == GUESS:  # no detector's landmarks: dlib's eyes (or the network's) inside the guessed box
                given = self.landmark_points(seen, box, settings) if points is None else points
                marks = dlib_landmarks(seen, box, self.dlib_predictor()) if given is None else dlib_shape(given, box)
            try:
                if step == GUESS:
                    return Crop(eyes_align(image, marks, size), step, faces, True)
                if marks is not None:
                    return Crop(similarity_align(image, marks, size), step, faces, True)
            except ValueError:
                pass  # degenerate landmarks: the square crop below
        return Crop(square_crop(image, box, margin, size), step, faces, False)

    def crop_face(self, image: np.ndarray, settings: CropSettings = CropSettings()) -> Crop | None:
        """Crop the face found along the chain (of several, the one settings.subject names), aligned as
        settings.align asks; None when no step finds a face (a chain without 'center'). Where this finder found a
        face in the same pixels by the same detector step a moment ago (another member of a fusion), it is not
        looked for again."""
        photo = photo_digest(image)
        seen = None

        def view() -> np.ndarray:  # the photo, or its copy with dark patches filled: made once, when something looks
            nonlocal seen
            if seen is None:
                seen = fill_dark_patches(image) if settings.fill_dark_patches else image
            return seen

        found = self.find_face(view, settings, photo)
        return None if found is None else self.cut_face(image, found, settings,
                                                        None if settings.align == "none" else view())


def crop_face(image: np.ndarray, settings: CropSettings = CropSettings()) -> Crop | None:
    """One photo cropped by a finder of its own (FaceFinder.crop_face), for a one-off: a caller that crops many
    photos keeps a FaceFinder, which loads its detectors once."""
    return FaceFinder().crop_face(image, settings)
