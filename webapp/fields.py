"""Text from a request, checked once at the edge, before any state changes: a photo's name, a person's name, a
feedback method, a mark. Lone surrogates (which no response can encode), NUL and other control characters and
the bidirectional overrides that make a name read as another are refused with a 400 naming the field; so is text
past its length limit, and a set of marks past its count limit."""
from __future__ import annotations

import re
import unicodedata

from webapp.errors import TooLarge, UserError

MAX_NAME = 255       # a photo's file name, a feedback method, a mark's value (characters)
MAX_PERSON = 100     # a learned person's name
BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"  # marks, embeddings, overrides, isolates
_REFUSED = re.compile(f"[\\ud800-\\udfff\\x00-\\x1f\\x7f-\\x9f{BIDI}]")


def text(value: object, field: str, limit: int = MAX_NAME) -> str:
    """`value` as text fit to store and answer: a str of at most `limit` characters with no lone surrogate,
    control character or bidirectional control; a UserError (400, 413 past the limit) naming `field`."""
    if not isinstance(value, str):
        raise UserError(f"{field}: expected text, got {type(value).__name__}")
    if len(value) > limit:
        raise TooLarge(f"{field}: {len(value):,} characters, at most {limit}")
    bad = _REFUSED.search(value)
    if bad:
        char = bad.group()
        what = ("a lone surrogate (not a character)" if "\ud800" <= char <= "\udfff" else
                f"the control character U+{ord(char):04X}" if unicodedata.category(char) == "Cc" else
                f"the bidirectional control U+{ord(char):04X}")
        raise UserError(f"{field}: {what} at position {bad.start()} is not accepted")
    return value


def person(value: object, field: str = "person") -> str:
    """A person's name as learned and searched: checked text, NFC, runs of white space as one space."""
    return " ".join(unicodedata.normalize("NFC", text(value, field, MAX_PERSON)).split())


def marks(value: dict, limit: int, field: str = "marks") -> dict[str, bool | None]:
    """Marks (photo name -> relevant, irrelevant or unmarked), each name checked, at most `limit` of them."""
    if len(value) > limit:
        raise TooLarge(f"{field}: {len(value):,} marks, at most {limit} (web.max_marks)")
    return {text(name, f"{field}: a photo's name"): mark for name, mark in value.items()}
