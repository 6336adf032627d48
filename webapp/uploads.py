"""Uploaded files checked before anything else happens: size, pixel count (decompression bombs) and
type by decoding, whatever the file is called; and a safe name to save them under."""
from __future__ import annotations

import io
import re
import unicodedata
import warnings
from pathlib import Path

from webapp.errors import TooLarge, Unsupported, UserError

# Pillow's format name -> the suffix the saved upload gets (the pipeline reads all of these).
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}


def check_upload(data: bytes, filename: str, max_bytes: int, max_pixels: int) -> tuple[str, str, str]:
    """Check an uploaded file before it goes anywhere: size, pixel count, type by decoding.
    Returns (Pillow format, suffix for it, a note such as 'JPEG, 640×480'); raises UserError
    (413 too large, 415 not a supported image, 400 damaged) with a message naming the file."""
    from PIL import Image, UnidentifiedImageError

    shown = filename or "the upload"
    if not data:
        raise UserError(f"{shown}: the file is empty")
    if len(data) > max_bytes:  # read up to one byte past the limit: its true size is not known
        raise TooLarge(f"{shown}: more than {max_bytes:,} bytes, the limit (web.max_upload_bytes)")
    fmt, frames = None, 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format, im.size
                if fmt not in FORMATS:
                    raise Unsupported(f"{shown}: a {fmt} image; the page takes {', '.join(FORMATS)}")
                if w * h > max_pixels:
                    raise TooLarge(f"{shown}: {w}×{h} pixels, over the limit of {max_pixels:,} (web.max_pixels): "
                                   f"refused as a possible decompression bomb")
                frames = int(getattr(im, "n_frames", 1) or 1)
                im.seek(0)
                im.load()  # decode the whole (first) frame: a truncated file fails here
        except UserError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise TooLarge(f"{shown}: more than {max_pixels:,} pixels, the limit (web.max_pixels): refused as a "
                           f"possible decompression bomb") from None
        except UnidentifiedImageError:
            raise Unsupported(f"{shown}: not an image (it cannot be decoded as {', '.join(FORMATS)}, "
                              f"whatever its name says)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise UserError(f"{shown}: a damaged {fmt or ''} image that cannot be decoded ({exc})") from None
    note = f"{fmt}, {w}×{h}" + (f", first of {frames} frames used" if frames > 1 else "")
    return fmt, FORMATS[fmt], note


def safe_name(filename: str, suffix: str) -> str:
    """A plain file name for an upload: its stem's letters (any script's, NFC), digits, '-', '_' and '.', the real
    suffix; no path, no other character."""
    stem = unicodedata.normalize("NFC", Path((filename or "").replace("\\", "/")).stem)
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._")[:80]
    return (stem or "upload") + suffix
