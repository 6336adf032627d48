"""Covers as people wear them, drawn on a photo from its face's five landmarks and box: surgical, cloth,
N95 and patterned masks, sunglasses and glasses with dark or reflective lenses, hands, objects cut from
other photos, scarves, hair strands, caps' brims, and the black square as one kind among them.

    covered = cover(image, "mask", face_of(image), np.random.default_rng(seed))   # a new array
    covered = cover(image, "mixed", face, rng, ranges=TRAINING)                  # training's own draws

Each cover is deterministic in its generator (seed it per photo: the same photo and seed, the same cover),
and its shapes, sizes and colours come from a `CoverRanges`: EVALUATION and TRAINING are two disjoint
distributions (other palettes, sizes and placements), so a network trained on covers is never tested on the
exact drawings it learned. Adding a kind is one function `(image, face, rng, ranges, textures) -> None`
drawing in place, and one line in COVERS.

Written by hand with OpenCV: no maintained library draws occluders placed from facial landmarks (the
occlusion augmentations of albumentations are boxes and holes, placed without a face).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from utils import lookup

# Where the five landmarks sit in a face box (x, y as fractions of its side): the mean of dlib's and
# YuNet's placements on frontal faces, used when no detector finds the face to place a cover on.
TEMPLATE = np.array([[0.31, 0.40], [0.69, 0.40], [0.50, 0.60], [0.35, 0.78], [0.65, 0.78]], np.float32)


@dataclass(frozen=True)
class Face:
    """A face to cover: five landmarks (image's left eye, right eye, nose, mouth left, mouth right) and its box."""
    landmarks: np.ndarray   # (5, 2) float32, pixels
    box: np.ndarray         # (4,) x, y, w, h

    @property
    def eye_distance(self) -> float:
        return max(1.0, float(np.linalg.norm(self.landmarks[1] - self.landmarks[0])))

    @property
    def angle(self) -> float:
        """The eye line's angle in degrees (0: level)."""
        dx, dy = self.landmarks[1] - self.landmarks[0]
        return float(np.degrees(np.arctan2(dy, dx)))

    def at(self, u: float, v: float) -> np.ndarray:
        """A point in the face's own frame: u along the eye line from the eyes' midpoint, v down towards the mouth,
        both in eye distances."""
        eyes = self.landmarks[:2].mean(0)
        across = (self.landmarks[1] - self.landmarks[0]) / self.eye_distance
        down = np.array([-across[1], across[0]], np.float32)
        return eyes + self.eye_distance * (u * across + v * down)


@dataclass(frozen=True)
class CoverRanges:
    """The distribution covers are drawn from: sizes in eye distances, palettes as RGB, probabilities."""
    mask_top: tuple[float, float]          # where a mask's upper edge sits: 0 the eyes, 1 the nose tip
    mask_width: tuple[float, float]        # its width
    mask_colours: tuple[tuple[int, int, int], ...]
    mask_pattern_p: float                  # chance of stripes or dots on a mask
    lens_size: tuple[float, float]         # a lens's width
    lens_colours: tuple[tuple[int, int, int], ...]
    lens_reflective_p: float
    hand_size: tuple[float, float]         # a palm's width
    skin_colours: tuple[tuple[int, int, int], ...]
    object_size: tuple[float, float]       # an object's size
    square_side: tuple[float, float]       # the black square's side, as a fraction of the face box's side
    scarf_top: tuple[float, float]         # where a scarf's upper edge sits (eye distances below the eyes: the
                                           # nose tip is about 0.55 down, the mouth 1.0, the chin 1.6)
    scarf_colours: tuple[tuple[int, int, int], ...]
    strands: tuple[int, int]               # hair strands across the eyes and forehead
    hair_colours: tuple[tuple[int, int, int], ...]
    brim_depth: tuple[float, float]        # how far down a cap's brim and shadow reach: 0 the eyes
    cap_colours: tuple[tuple[int, int, int], ...]


EVALUATION = CoverRanges(
    mask_top=(0.5, 0.75), mask_width=(2.2, 2.8),
    mask_colours=((168, 204, 230), (236, 238, 240), (40, 44, 52), (120, 40, 60), (70, 110, 90)), mask_pattern_p=0.3,
    lens_size=(0.62, 0.78), lens_colours=((15, 15, 18), (40, 30, 20), (20, 40, 30)), lens_reflective_p=0.3,
    hand_size=(1.3, 1.7), skin_colours=((224, 172, 140), (198, 134, 96), (141, 85, 54), (90, 56, 37)),
    object_size=(1.2, 1.8), square_side=(0.4, 0.5),
    scarf_top=(0.55, 0.8), scarf_colours=((150, 30, 40), (40, 60, 120), (200, 180, 140), (60, 60, 60)),
    strands=(12, 24), hair_colours=((30, 22, 16), (90, 60, 30), (170, 130, 80)),
    brim_depth=(0.0, 0.25), cap_colours=((20, 30, 70), (170, 20, 30), (30, 30, 30), (220, 220, 210)),
)
TRAINING = CoverRanges(  # other palettes, sizes and placements than EVALUATION's
    mask_top=(0.3, 0.5), mask_width=(1.9, 2.2),
    mask_colours=((190, 220, 205), (250, 250, 250), (20, 20, 24), (200, 120, 150), (110, 90, 160)), mask_pattern_p=0.5,
    lens_size=(0.5, 0.62), lens_colours=((5, 5, 5), (30, 30, 45), (60, 45, 25)), lens_reflective_p=0.5,
    hand_size=(1.0, 1.3), skin_colours=((240, 195, 165), (210, 150, 110), (160, 100, 65), (110, 70, 45)),
    object_size=(0.9, 1.2), square_side=(0.3, 0.4),
    scarf_top=(0.8, 1.0), scarf_colours=((200, 80, 40), (30, 90, 60), (120, 120, 140), (230, 215, 190)),
    strands=(6, 12), hair_colours=((10, 8, 6), (130, 90, 50), (210, 180, 120)),
    brim_depth=(-0.25, 0.0), cap_colours=((10, 60, 30), (240, 140, 20), (70, 70, 90), (120, 20, 90)),
)


def _pick(rng: np.random.Generator, choices: tuple):
    return choices[int(rng.integers(len(choices)))]


def _blend(image: np.ndarray, mask: np.ndarray, layer: np.ndarray, alpha: float = 1.0) -> None:
    """image = layer where mask, weighted by alpha (mask 0..1 float, feathered edges), in place."""
    weight = (np.clip(mask, 0, 1) * alpha)[..., None]
    image[:] = (image.astype(np.float32) * (1 - weight) + layer.astype(np.float32) * weight).round().astype(np.uint8)


def _shape_mask(image: np.ndarray, draw: Callable[[np.ndarray], None], feather: float) -> np.ndarray:
    """A float mask of what `draw` fills (255 on a blank canvas), its edge softened by `feather` pixels."""
    canvas = np.zeros(image.shape[:2], np.uint8)
    draw(canvas)
    mask = canvas.astype(np.float32) / 255
    k = int(max(1, feather)) * 2 + 1
    return cv2.GaussianBlur(mask, (k, k), 0)


def _shaded(image: np.ndarray, colour, rng: np.random.Generator, grain: float = 8.0) -> np.ndarray:
    """A layer of `colour` with fabric-like grain and a soft vertical light falloff."""
    h, w = image.shape[:2]
    light = np.linspace(1.08, 0.86, h, dtype=np.float32)[:, None, None]
    noise = rng.normal(0, grain, (h, w, 1)).astype(np.float32)
    return np.clip(np.asarray(colour, np.float32)[None, None, :] * light + noise, 0, 255)


def _poly(points: np.ndarray) -> list[np.ndarray]:
    return [np.round(points).astype(np.int32).reshape(-1, 1, 2)]


# ---------------------------------------------------------------- the kinds

def mask(image: np.ndarray, face: Face, rng: np.random.Generator, r: CoverRanges, textures) -> None:
    """A mask from the nose bridge down past the chin, wider than the face, with pleats or a pattern and straps."""
    top, width = rng.uniform(*r.mask_top), rng.uniform(*r.mask_width) / 2
    nose_v = float(np.dot(face.landmarks[2] - face.landmarks[:2].mean(0), face.at(0, 1) - face.at(0, 0))) \
        / face.eye_distance ** 2  # the nose tip's depth below the eyes, in eye distances
    v0 = top * max(nose_v, 0.4)
    outline = np.array([face.at(u, v) for u, v in (
        (-width * 0.8, v0), (0, v0 - 0.12), (width * 0.8, v0), (width, v0 + 0.5), (width * 0.8, v0 + 1.1),
        (width * 0.35, v0 + 1.45), (0, v0 + 1.55), (-width * 0.35, v0 + 1.45), (-width * 0.8, v0 + 1.1),
        (-width, v0 + 0.5))])
    shape = _shape_mask(image, lambda c: cv2.fillPoly(c, _poly(outline), 255), face.eye_distance * 0.04)
    layer = _shaded(image, _pick(rng, r.mask_colours), rng)
    thick = max(1, int(face.eye_distance * 0.03))
    if rng.random() < r.mask_pattern_p:  # stripes or dots of a second colour
        other = tuple(int(c) for c in 255 - np.asarray(_pick(rng, r.mask_colours)) * 0.6)
        step = max(3, int(face.eye_distance * rng.uniform(0.12, 0.25)))
        if rng.random() < 0.5:
            for y in range(0, image.shape[0], step * 2):
                cv2.line(layer, (0, y), (image.shape[1], y), other, thick * 2)
        else:
            for y in range(0, image.shape[0], step):
                for x in range((y // step % 2) * step // 2, image.shape[1], step):
                    cv2.circle(layer, (x, y), thick + 1, other, -1)
    else:  # pleats
        for v in (v0 + 0.45, v0 + 0.8, v0 + 1.15):
            cv2.line(layer, tuple(np.round(face.at(-width * 0.9, v)).astype(int)),
                     tuple(np.round(face.at(width * 0.9, v)).astype(int)), tuple(int(c * 0.8) for c in layer[0, 0]),
                     thick)
    _blend(image, shape, layer)
    for side in (-1, 1):  # the straps to the ears
        cv2.line(image, tuple(np.round(face.at(side * width * 0.85, v0 + 0.15)).astype(int)),
                 tuple(np.round(face.at(side * (width + 0.6), v0 - 0.15)).astype(int)),
                 tuple(int(c) for c in _pick(rng, r.mask_colours)), thick)


def glasses(image: np.ndarray, face: Face, rng: np.random.Generator, r: CoverRanges, textures) -> None:
    """Two lenses over the eyes, dark or reflective (a sky-like gradient with a highlight), a bridge and temples."""
    size = rng.uniform(*r.lens_size) * face.eye_distance
    axes = (int(size / 2), int(size * rng.uniform(0.34, 0.46)))
    frame = tuple(int(c) for c in rng.integers(0, 90, 3))
    reflective = rng.random() < r.lens_reflective_p
    for eye in face.landmarks[:2]:
        centre = tuple(np.round(eye + [0, size * 0.04]).astype(int))
        lens = _shape_mask(image, lambda c: cv2.ellipse(c, centre, axes, face.angle, 0, 360, 255, -1), 1.5)
        if reflective:
            top, low = rng.uniform(150, 230, 3), rng.uniform(40, 110, 3)
            h = image.shape[0]
            ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
            layer = np.broadcast_to(top * (1 - ramp) + low * ramp, image.shape).copy()
            cv2.ellipse(layer, (centre[0] - axes[0] // 3, centre[1] - axes[1] // 3), (axes[0] // 4, axes[1] // 6),
                        face.angle - 20, 0, 360, (255, 255, 255), -1)
            _blend(image, lens, layer, 0.95)
        else:
            _blend(image, lens, np.broadcast_to(np.asarray(_pick(rng, r.lens_colours), np.float32), image.shape),
                   rng.uniform(0.85, 0.97))
        cv2.ellipse(image, centre, axes, face.angle, 0, 360, frame, max(1, int(face.eye_distance * 0.035)))
    thick = max(1, int(face.eye_distance * 0.03))
    left, right = face.landmarks[0] + [axes[0], 0], face.landmarks[1] - [axes[0], 0]
    cv2.line(image, tuple(np.round(left).astype(int)), tuple(np.round(right).astype(int)), frame, thick)
    for side, eye in ((-1, face.landmarks[0]), (1, face.landmarks[1])):
        cv2.line(image, tuple(np.round(eye + [side * axes[0], 0]).astype(int)),
                 tuple(np.round(face.at(side * 1.1, -0.05)).astype(int)), frame, thick)


def hand(image: np.ndarray, face: Face, rng: np.random.Generator, r: CoverRanges, textures) -> None:
    """A skin-coloured hand (a palm and four fingers) over the mouth, the nose, an eye or a cheek."""
    palm = rng.uniform(*r.hand_size) * face.eye_distance
    centre = face.at(rng.uniform(-0.6, 0.6), _pick(rng, (0.0, 0.8, 1.4, 1.6)))
    turn = rng.uniform(-60, 60) + face.angle
    c, s = np.cos(np.radians(turn)), np.sin(np.radians(turn))

    def at(x: float, y: float) -> tuple[int, int]:
        return tuple(np.round(centre + palm * np.array([c * x - s * y, s * x + c * y])).astype(int))

    def draw(canvas: np.ndarray) -> None:
        cv2.ellipse(canvas, at(0, 0.1), (int(palm * 0.5), int(palm * 0.42)), turn, 0, 360, 255, -1)
        for i, length in enumerate((0.7, 0.82, 0.78, 0.6)):
            x = -0.36 + i * 0.24
            cv2.line(canvas, at(x, -0.1), at(x * 1.1, -0.1 - length), 255, max(2, int(palm * 0.2)))
    shape = _shape_mask(image, draw, palm * 0.03)
    _blend(image, shape, _shaded(image, _pick(rng, r.skin_colours), rng, grain=4.0))


def obj(image: np.ndarray, face: Face, rng: np.random.Generator, r: CoverRanges, textures) -> None:
    """An object in front of the face: a patch cut from another photo (another person's shoulder, a sign) in a
    rounded shape, or a microphone (a dark handle and a grille), from a side of the face."""
    size = rng.uniform(*r.object_size) * face.eye_distance
    centre = face.at(rng.uniform(-0.9, 0.9), rng.uniform(0.2, 1.8))
    if textures and rng.random() < 0.7:
        source = textures[int(rng.integers(len(textures)))]
        h, w = image.shape[:2]
        patch = cv2.resize(source, (w, h), interpolation=cv2.INTER_AREA) if source.shape[:2] != (h, w) else source
        layer = np.roll(patch, (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1)).astype(np.float32)
        axes = (int(size * rng.uniform(0.5, 0.8)), int(size * rng.uniform(0.35, 0.6)))
        shape = _shape_mask(image, lambda c: cv2.ellipse(c, tuple(np.round(centre).astype(int)), axes,
                                                         rng.uniform(0, 180), 0, 360, 255, -1), 2)
        _blend(image, shape, layer)
        return
    grille = tuple(int(v) for v in rng.integers(30, 120, 3))
    head = tuple(np.round(centre).astype(int))
    base = tuple(np.round(centre + [rng.uniform(-0.5, 0.5) * size, 2.5 * size]).astype(int))
    cv2.line(image, head, base, (20, 20, 20), max(2, int(size * 0.28)))
    cv2.circle(image, head, int(size * 0.42), grille, -1)
    for k in range(-3, 4):  # the grille's mesh
        cv2.line(image, (head[0] + int(k * size * 0.1), head[1] - int(size * 0.4)),
                 (head[0] + int(k * size * 0.1), head[1] + int(size * 0.4)), (15, 15, 15), 1)


def square(image: np.ndarray, face: Face, rng: np.random.Generator, r: CoverRanges, textures) -> None:
    """The black square of the earlier work (a censor bar's kin): a share of the face box's side, inside the box."""
    x, y, w, h = (float(v) for v in face.box)
    side = rng.uniform(*r.square_side) * max(w, h)
    x0, y0 = x + rng.uniform(0, max(1.0, w - side)), y + rng.uniform(0, max(1.0, h - side))
    cv2.rectangle(image, (int(x0), int(y0)), (int(x0 + side), int(y0 + side)), (0, 0, 0), -1)


def scarf(image: np.ndarray, face: Face, rng: np.random.Generator, r: CoverRanges, textures) -> None:
    """A scarf pulled up over the chin and mouth (or the nose), wide beyond the face, with knit stripes."""
    top = rng.uniform(*r.scarf_top)
    outline = np.array([face.at(u, v) for u, v in ((-1.7, top + 0.2), (0, top), (1.7, top + 0.2), (2.2, 4.0),
                                                   (-2.2, 4.0))])
    shape = _shape_mask(image, lambda c: cv2.fillPoly(c, _poly(outline), 255), face.eye_distance * 0.05)
    layer = _shaded(image, _pick(rng, r.scarf_colours), rng, grain=12.0)
    step = max(3, int(face.eye_distance * rng.uniform(0.15, 0.3)))
    stripe = tuple(int(c * 0.7) for c in _pick(rng, r.scarf_colours))
    for y in range(0, image.shape[0], step * 2):
        cv2.line(layer, (0, y), (image.shape[1], y), stripe, max(1, step // 2))
    _blend(image, shape, layer)


def hair(image: np.ndarray, face: Face, rng: np.random.Generator, r: CoverRanges, textures) -> None:
    """Strands of hair falling over the forehead and the eyes: curved, dark or fair, a few pixels wide."""
    colour = np.asarray(_pick(rng, r.hair_colours), np.float32)
    side = rng.choice([-1, 1])
    for _ in range(int(rng.integers(*r.strands))):
        start = face.at(side * rng.uniform(0.0, 1.2), rng.uniform(-1.3, -0.8))
        end = face.at(side * rng.uniform(-0.8, 0.6), rng.uniform(-0.1, 0.7))
        bend = (start + end) / 2 + face.eye_distance * rng.normal(0, 0.25, 2)
        t = np.linspace(0, 1, 24)[:, None]
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t ** 2 * end
        shade = tuple(int(v) for v in np.clip(colour + rng.normal(0, 12, 3), 0, 255))
        cv2.polylines(image, _poly(curve), False, shade, max(1, int(face.eye_distance * rng.uniform(0.02, 0.06))),
                      cv2.LINE_AA)


def cap(image: np.ndarray, face: Face, rng: np.random.Generator, r: CoverRanges, textures) -> None:
    """A cap pulled down: its crown over the forehead, the brim's edge near the eyebrows or lower, and its
    shadow darkening the eyes."""
    depth = rng.uniform(*r.brim_depth)
    crown = np.array([face.at(u, v) for u, v in ((-1.35, depth - 0.35), (1.35, depth - 0.35), (1.2, depth - 1.0),
                                                 (0.7, depth - 1.45), (0, depth - 1.55), (-0.7, depth - 1.45),
                                                 (-1.2, depth - 1.0))])
    _blend(image, _shape_mask(image, lambda c: cv2.fillPoly(c, _poly(crown), 255), 2),
           _shaded(image, _pick(rng, r.cap_colours), rng))
    brim = tuple(np.round(face.at(0, depth - 0.3)).astype(int))
    axes = (int(1.7 * face.eye_distance), int(0.3 * face.eye_distance))
    colour = tuple(int(c * 0.8) for c in _pick(rng, r.cap_colours))
    cv2.ellipse(image, brim, axes, face.angle, 0, 360, colour, -1)
    shadow = _shape_mask(image, lambda c: cv2.fillPoly(c, _poly(np.array([face.at(u, v) for u, v in (
        (-1.3, depth - 0.2), (1.3, depth - 0.2), (1.2, depth + 0.45), (-1.2, depth + 0.45))])), 255),
        face.eye_distance * 0.15)
    _blend(image, shadow, np.zeros_like(image), rng.uniform(0.4, 0.7))


COVERS: dict[str, Callable] = {
    "mask": mask,
    "glasses": glasses,
    "hand": hand,
    "object": obj,
    "square": square,
    "scarf": scarf,
    "hair": hair,
    "cap": cap,
}
KINDS = tuple(COVERS) + ("mixed",)  # mixed: one of the kinds, drawn per photo


def template_face(box: np.ndarray) -> Face:
    """The five landmarks where a face box usually has them (TEMPLATE), for a face no detector placed."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h)
    return Face(TEMPLATE * side + np.array([x + (w - side) / 2, y + (h - side) / 2], np.float32),
                np.asarray(box, np.float32))


def face_in_crop(shape: tuple[int, ...], margin: float = 0.17) -> Face:
    """The face of a square face crop (an aligned chip or a square with a margin): the template's landmarks in the
    crop's central box, `margin` of the side left on every side (dlib's chips and crop.margin 0.25 put the face
    about there)."""
    side = float(min(shape[:2]))
    return template_face(np.array([margin * side, margin * side, (1 - 2 * margin) * side, (1 - 2 * margin) * side],
                                  np.float32))


def cover(image: np.ndarray, kind: str, face: Face, rng: np.random.Generator, ranges: CoverRanges = EVALUATION,
          textures: list[np.ndarray] | tuple = ()) -> np.ndarray:
    """A copy of `image` with a cover of `kind` (one of KINDS; mixed draws one) on `face`, drawn from `ranges`
    with `rng`; `textures` are other photos an object may be cut from."""
    if kind == "mixed":
        kind = tuple(COVERS)[int(rng.integers(len(COVERS)))]
    draw = lookup(COVERS, kind, "cover kind")
    out = np.ascontiguousarray(image.copy())
    draw(out, face, rng, ranges, list(textures))
    return out


def face_of(image: np.ndarray) -> Face:
    """The face a cover is placed on: YuNet's central face with its five landmarks, else the template's
    landmarks in a box guessed at the photo's centre (detection.align.guessed_box)."""
    from detection.align import guessed_box
    from detection.crop_settings import CropSettings
    from detection.detectors import detect

    found = detect(image, CropSettings(yunet_confidence=0.5, yunet_low_confidence=0.3, min_size=16), "yunet")
    if len(found):
        found = found.central_first(*image.shape[:2])
        return Face(found.landmarks[0].astype(np.float32), found.boxes[0].astype(np.float32))
    return template_face(guessed_box(image, 0.6))
