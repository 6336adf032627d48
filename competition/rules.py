"""The competition's rules, shared by client and server: the ground-truth file, what a valid
submission is, and how one is scored. Light on purpose (no torch), so the server starts fast."""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import NamedTuple

import numpy as np
import regex

from evaluation.metrics import retrieval_report

from utils import FacematchError

SCORES = ("top1", "top5", "top10", "map")  # what the server stores and answers, by metrics' names
FIELDS = ("groupname", "images")  # a submission's fields, as the course server's protocol has them: nothing else
MAX_TEAM = 100  # characters of a team's name


class PayloadError(FacematchError, ValueError):
    """A submission that breaks the rules; the message names the query or field."""


class TeamNameError(ValueError):
    """A team name that cannot be a leaderboard row; the message says why."""


# Unicode's own properties, from the regex module's tables: a character that draws nothing or changes how the text
# around it reads (Default_Ignorable_Code_Point: zero-width and joining characters, fillers such as U+3164; format,
# control, private-use, unassigned characters, surrogates, line and paragraph separators), white space aside.
INVISIBLE = regex.compile(r"[[\p{Default_Ignorable_Code_Point}\p{C}\p{Zl}\p{Zp}]--\p{White_Space}]", regex.V1)
# What a name is written in: the characters identifiers of any script are made of (UAX #31's XID_Continue: letters,
# marks, digits, connectors), printable ASCII (the course's names: 'Team #1', 'A&B') and spaces; so no symbol that
# looks blank (U+2800 BRAILLE PATTERN BLANK is a symbol), no emoji, no lookalike of white space.
NAME_CHARACTER = regex.compile(r"[[\p{XID_Continue}\x20-\x7e]--\p{Default_Ignorable_Code_Point}]", regex.V1)


def _character(char: str) -> str:
    """A character as a message names it: its code point and Unicode name."""
    return f"U+{ord(char):04X} ({unicodedata.name(char, 'unnamed').lower()})"


def shown(text: str, most: int = 60) -> str:
    """`text` for a message: its first `most` characters, and '…' when it is longer (a name may be megabytes)."""
    return text if len(text) <= most else text[:most] + "…"


def team_name(raw: str) -> str:
    """`raw` as the team's name: NFKC, white space collapsed, 1 to MAX_TEAM characters, each a letter, mark or digit
    of any script, printable ASCII or a space (a TeamNameError names the first that is not, and where)."""
    if not isinstance(raw, str):
        raise TeamNameError("field 'groupname' is missing or not a non-empty string")
    for i, char in enumerate(raw):
        if unicodedata.category(char) == "Cs":
            raise TeamNameError(f"field 'groupname': a lone surrogate (not a character) at position {i}")
        if INVISIBLE.fullmatch(char):
            raise TeamNameError(f"field 'groupname': {_character(char)} at position {i} is not accepted in a team "
                                "name (it is invisible or changes how the name reads)")
    name = " ".join(unicodedata.normalize("NFKC", raw).split())
    if not name:
        raise TeamNameError("field 'groupname' is missing or not a non-empty string")
    if len(name) > MAX_TEAM:
        raise TeamNameError(f"field 'groupname' is longer than {MAX_TEAM} characters")
    for i, char in enumerate(name):
        if not NAME_CHARACTER.fullmatch(char):
            raise TeamNameError(f"field 'groupname': {_character(char)} at position {i} (after NFKC) is not accepted "
                                "in a team name: use letters, marks and digits of any script, ASCII punctuation "
                                "and spaces")
    return name


class GroundTruthError(FacematchError, ValueError):
    """A ground-truth file that cannot be used; the message names the file."""


def load_ground_truth(path: str | Path) -> dict:
    """Read a ground-truth file written by `facematch split`: {'name', 'queries': {q: [gallery…]}, 'gallery': [...]}.

    A folder is taken to hold ground_truth.json.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "ground_truth.json"
    try:
        gt = json.loads(path.read_text())
    except OSError as exc:
        raise GroundTruthError(f"cannot read ground truth {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise GroundTruthError(f"ground truth {path} is not valid JSON: {exc}") from None
    if not isinstance(gt, dict) or not isinstance(gt.get("queries"), dict) or not isinstance(gt.get("gallery"), list):
        raise GroundTruthError(f"ground truth {path} must hold 'queries' (a mapping) and 'gallery' (a list)")
    if not gt["queries"]:
        raise GroundTruthError(f"ground truth {path} has no queries")
    gallery = set(gt["gallery"])
    for query, names in gt["queries"].items():
        if not isinstance(names, list) or not names or not set(names) <= gallery:
            raise GroundTruthError(f"ground truth {path}: query '{query}' needs a non-empty list of gallery names")
    gt.setdefault("name", path.parent.name)
    return gt


class Payload(NamedTuple):
    """A valid submission: the team, its lists, and what the server tolerated in them."""
    team: str
    images: dict[str, list[str]]
    warnings: list[str]


def _queries(n: int) -> str:
    return f"{n} query" if n == 1 else f"{n} queries"


def validate_payload(payload, gallery: set[str] | None = None, k: int = 10, exact: bool = True,
                     queries: set[str] | None = None) -> Payload:
    """Check a submission {'groupname': team, 'images': {query: [gallery names]}}; returns (team, images, warnings).

    The body holds those two fields and no other (a field the protocol does not have is refused by
    name). Every list holds names from `gallery` (when given). With `exact` (the client, whose lists
    are always complete) a list holds exactly k distinct names. Without it (the server, as lenient as
    the course server) a list holds at most k names; a name repeated within a list and lists shorter
    than k are accepted and counted in `warnings`. With `queries`, every query must be one of them.
    """
    if not isinstance(payload, dict):
        raise PayloadError("the body must be a JSON object with 'groupname' and 'images'")
    extra = [key for key in payload if key not in FIELDS]
    if extra:
        raise PayloadError(f"field '{shown(extra[0])}' is not part of a submission: send only 'groupname' and 'images'")
    try:
        team = team_name(payload.get("groupname"))
    except TeamNameError as exc:
        raise PayloadError(str(exc)) from None
    images = payload.get("images")
    if not isinstance(images, dict):
        raise PayloadError("field 'images' is missing or not a mapping of query name to gallery names")
    if not images:
        raise PayloadError("field 'images' is empty: nothing to score")
    repeated = short = 0
    for query, names in images.items():
        if queries is not None and query not in queries:
            raise PayloadError(f"query '{shown(query)}' is not in this competition")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PayloadError(f"query '{shown(query)}': expected a list of gallery names")
        if exact and len(names) != k:
            raise PayloadError(f"query '{shown(query)}': {len(names)} gallery names, expected {k}")
        if len(names) > k:
            raise PayloadError(f"query '{shown(query)}': {len(names)} gallery names, at most {k} allowed")
        if gallery is not None:
            unknown = [n for n in names if n not in gallery]
            if unknown:
                raise PayloadError(f"query '{shown(query)}': '{shown(unknown[0])}' is not a gallery photo")
        if len(set(names)) != len(names):
            if exact:
                twice = next(n for i, n in enumerate(names) if n in names[:i])
                raise PayloadError(f"query '{shown(query)}': '{shown(twice)}' is listed more than once")
            repeated += 1
        if len(names) < k:
            short += 1
    warnings = []
    if repeated:
        warnings.append(f"{_queries(repeated)} listed a gallery name more than once; repeats were ignored")
    if short:
        warnings.append(f"{_queries(short)} had fewer than {k} gallery names; "
                        f"{'it was' if short == 1 else 'they were'} scored on what was sent")
    return Payload(team, images, warnings)


def score_submission(images: dict[str, list[str]], ground_truth: dict, k: int = 10) -> dict:
    """Score valid lists against the ground truth: top-1/5/10 accuracy and mAP@k over every
    ground-truth query, a query missing from the submission counting as wrong.

    A name repeated within a list keeps its position but is no match: it neither counts twice
    nor moves the names after it up.
    """
    truth = ground_truth["queries"]
    rel = np.zeros((len(truth), k), dtype=bool)
    n_rel = np.zeros(len(truth), dtype=np.int64)
    for i, (query, good) in enumerate(truth.items()):
        good = set(good)
        n_rel[i] = len(good)
        names = images.get(query, [])[:k]
        rel[i, :len(names)] = [n in good and n not in names[:j] for j, n in enumerate(names)]
    missing = sum(1 for q in truth if q not in images)
    return {**retrieval_report(rel, n_rel, keys=SCORES), "queries": len(truth), "missing": missing}
