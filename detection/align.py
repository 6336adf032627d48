"""A face box or five landmarks to a square crop: the plain square, the similarity transform onto
ArcFace's template, and dlib's own chip (its 5-point shape predictor inside any box)."""
from __future__ import annotations

import bz2
import hashlib
from pathlib import Path

import cv2
import numpy as np

from utils import FacematchError, atomic_write, package_file, user_cache

ALIGNMENTS = ("none", "similarity", "dlib")
# The five-point template of ArcFace/insightface for 112×112 crops: eyes, nose tip, mouth
# corners, in image order (the image's left eye first), as every ArcFace-family model expects.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


def square_crop(image: np.ndarray, box: tuple | np.ndarray | None, margin: float, size: int) -> np.ndarray:
    """Cut a square around `box` grown by `margin` on every side (or the centred square when
    box is None), padding with the edge pixels where it leaves the photo, resized to size×size."""
    h, w = image.shape[:2]
    if box is None:
        side = min(h, w)
        cx, cy = w / 2, h / 2
    else:
        x, y, bw, bh = (float(v) for v in box)
        side = max(bw, bh) * (1 + 2 * margin)
        cx, cy = x + bw / 2, y + bh / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(1, int(round(side)))
    pad = max(0, -x0, -y0, x0 + s - w, y0 + s - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    crop = image[y0:y0 + s, x0:x0 + s]
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def similarity_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The 2×3 similarity transform (rotation, uniform scale, shift) that best maps the five
    landmarks onto the ArcFace template scaled to size×size."""
    template = ARCFACE_TEMPLATE * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32), template, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks (all on one point): no transform exists
        raise ValueError("landmarks are degenerate")
    return matrix


def similarity_align(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """Warp the photo so its five landmarks sit on the ArcFace template, as a size×size crop."""
    return cv2.warpAffine(image, similarity_matrix(landmarks, size), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def dlib_align(image: np.ndarray, box: np.ndarray, size: int, seen: np.ndarray | None = None,
               points: np.ndarray | None = None, predictor=None) -> np.ndarray:
    """dlib's own alignment (the one its face descriptor was trained on): its 5-point shape
    predictor inside the box (placed on `seen`, a copy with occluders filled in, when given), or the
    five `points` given in its order (a landmark network's), then `get_face_chip` of the photo itself
    with dlib's default 25% padding."""
    import dlib

    image = np.ascontiguousarray(image)
    shape = dlib_landmarks(image if seen is None else seen, box, predictor) if points is None else dlib_shape(points, box)
    return np.asarray(dlib.get_face_chip(image, shape, size=size, padding=0.25))


def dlib_shape(points: np.ndarray, box: np.ndarray):
    """Five points (pixels, in the order of dlib's 5-point predictor) as the dlib.full_object_detection its
    predictor would return in `box`."""
    import dlib

    x, y, w, h = (int(round(float(v))) for v in box)
    parts = [dlib.point(int(round(float(px))), int(round(float(py)))) for px, py in np.asarray(points)]
    return dlib.full_object_detection(dlib.rectangle(x, y, x + w, y + h), parts)


def guessed_box(image: np.ndarray, side: float) -> np.ndarray:
    """A face box guessed where a portrait has its face: centred, `side` × the photo's shorter side."""
    h, w = image.shape[:2]
    s = side * min(h, w)
    return np.array([(w - s) / 2, (h - s) / 2, s, s], dtype=np.float32)


# dlib's 5-point shape predictor (Davis King's dlib-models, public domain): PyPI face-recognition-models ships it (the
# full install has it: dlib_resnet's weights come from there too) with three files facematch never reads (126 MB in
# all); this repository ships the one file bzip2'd (5.7 MB, detection/), which the inference install decompresses once.
PREDICTOR = "shape_predictor_5_face_landmarks.dat"
PREDICTOR_SHA256 = "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"
SHIPPED_PREDICTOR = Path(__file__).resolve().parent / f"{PREDICTOR}.bz2"


def predictor_file() -> Path:
    """dlib's 5-point predictor file: face-recognition-models' copy where it is installed, else the one shipped here,
    decompressed once into $XDG_CACHE_HOME/facematch/dlib and checked (sha256) to be the very same file."""
    try:
        return package_file("face_recognition_models", "models", PREDICTOR)
    except FacematchError:
        pass
    path = user_cache("dlib") / PREDICTOR
    if not path.is_file():
        data = bz2.decompress(SHIPPED_PREDICTOR.read_bytes())
        if hashlib.sha256(data).hexdigest() != PREDICTOR_SHA256:
            raise FacematchError(f"{SHIPPED_PREDICTOR} is damaged (its sha256 is not dlib's {PREDICTOR}'s)")
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def dlib_predictor():
    """dlib's 5-point shape predictor, loaded (its caller keeps it: detection.FaceFinder's models)."""
    import dlib

    return dlib.shape_predictor(str(predictor_file()))


def dlib_landmarks(image: np.ndarray, box: np.ndarray, predictor=None):
    """dlib's 5-point shape predictor (`predictor`, None: loaded for this call) inside `box` (x, y, w, h): it places
    the points in any box, a guessed one too."""
    import dlib

    x, y, w, h = (int(round(float(v))) for v in box)
    return (predictor or dlib_predictor())(np.ascontiguousarray(image), dlib.rectangle(x, y, x + w, y + h))


def eyes_align(image: np.ndarray, shape, size: int) -> np.ndarray:
    """The similarity crop from dlib's 5 points, whose two eyes (each the mean of its two corners)
    are mapped onto the ArcFace template's eyes: what crop.align=similarity gets from a box alone."""
    points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
    eyes = np.stack([points[2:4].mean(0), points[0:2].mean(0)])  # the image's left eye first
    if eyes[0, 0] > eyes[1, 0]:
        eyes = eyes[::-1]
    matrix, _ = cv2.estimateAffinePartial2D(eyes, ARCFACE_TEMPLATE[:2] * (size / 112.0))
    if matrix is None:
        raise ValueError("landmarks are degenerate")
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
