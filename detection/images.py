"""Photos in: every common image file read upright as RGB, and the image files of a folder."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils import DataError, FacematchError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
MAX_SIDE = 2048  # a photo is read at most this wide and high: detectors look at 640 px, crops are 150-224 px


class ImageReadError(FacematchError, ValueError):
    """An image file that cannot be decoded; the message names the file."""


def read_image(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """Read any common image file as an RGB uint8 array, upright according to its EXIF tag.

    GIF (first frame), PNG with alpha, palette and grayscale images all come back as RGB. `data`: the
    file's bytes where the caller has read them already (the crop cache hashes them), so it is read once.
    A photo larger than MAX_SIDE on a side comes back shrunk to fit (a JPEG decoded at a reduced scale), so a
    36-megapixel upload costs what a face needs, not what its pixels do.
    """
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            im.seek(0)
            if max(im.size) > MAX_SIDE:
                im.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decoded at 1/2, 1/4 or 1/8 scale; others: no-op
                factor = max(im.size) // MAX_SIDE
                im = im.reduce(factor + (max(im.size) > factor * MAX_SIDE)) if max(im.size) > MAX_SIDE else im
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (and its sub-folders when recursive), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    return sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir())
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
