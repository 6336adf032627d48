"""What one browser's search holds (Session), what an upload becomes once it passed every check (Checked), and the
words and bytes the page shows of them."""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import numpy as np

MARKS = {"relevant": True, "irrelevant": False}
FPIRS = (0.1, 0.01, 0.001)  # the rates the page offers for 'no one in the gallery matches'


@dataclass
class Session:
    """One browser's search: what was searched, the marks, the rows shown, the current round."""
    method: str
    fpir: float = 0.01                    # the false-positive identification rate of 'no one matches'
    query: np.ndarray | None = None       # unit embedding searched (a photo's, or a name's prototype)
    label: str = ""                       # what was searched, in words
    crop_png: bytes | None = None         # the crop that was searched (None: a name's prototype)
    how: str = ""                         # how the face was found, said out loud
    exclude: set[str] = field(default_factory=set)      # the query photo itself, never a result
    marks: dict[str, bool] = field(default_factory=dict)  # photo name -> relevant?
    shown: list[str] = field(default_factory=list)      # every photo shown this search, in order
    results: list[tuple[str, float]] = field(default_factory=list)  # this round: (name, distance)
    round: int = 0
    learned: dict[str, set[str]] = field(default_factory=dict)  # name -> photos learned as it this session
    notes: list[str] = field(default_factory=list)      # messages for the next page, shown once
    used: float = field(default_factory=time.time)
    client: str = ""                      # the address that began it


@dataclass
class Checked:
    """An upload that passed every check, cropped and embedded in memory: nothing of it is written anywhere until it
    is added to the gallery (a photo searched for never touches the disk, so none outlives the process)."""
    shown: str  # its file name as uploaded
    name: str   # a safe file name for it, with the suffix of its real format
    data: bytes
    note: str  # format and size, in words
    step: str  # the chain step that found the face
    vector: np.ndarray
    crop: np.ndarray
    how: str  # how the face was found, in words


def png_bytes(image: np.ndarray) -> bytes:
    """A crop as PNG bytes, for the page."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def how_words(how: str) -> str:
    """How a face was found, in the page's words."""
    return "no face found: centre crop" if how == "center" else f"face by {how}"
