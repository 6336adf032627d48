"""Team names as the leaderboard shows them: one team, one row. A name is normalised (NFKC, runs of white space as
one space) and refused when it holds what no one can see or what reads as something else (lone surrogates,
control, format and bidirectional characters: a zero-width space, a right-to-left override); names equal but for
case are one team; a name that only looks like a team's name (Cyrillic 'а' for Latin 'a') is refused. The look-alike
table is Unicode's confusables (TR 39), from the confusable-homoglyphs package."""
from __future__ import annotations

import functools
import unicodedata

MAX_TEAM = 100  # characters


class TeamNameError(ValueError):
    """A team name that cannot be a leaderboard row; the message says why."""


def team_name(raw: str) -> str:
    """`raw` as the team's name: NFKC, white space collapsed, 1 to MAX_TEAM characters, nothing invisible or
    misleading in it (a TeamNameError says what and where)."""
    if not isinstance(raw, str):
        raise TeamNameError("field 'groupname' is missing or not a non-empty string")
    for i, char in enumerate(raw):
        kind = unicodedata.category(char)
        if kind == "Cs":
            raise TeamNameError(f"field 'groupname': a lone surrogate (not a character) at position {i}")
        if kind in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp") and char not in " \t":
            name = unicodedata.name(char, "unnamed")
            raise TeamNameError(f"field 'groupname': U+{ord(char):04X} ({name.lower()}) at position {i} is not "
                                "accepted in a team name (it is invisible or changes how the name reads)")
    name = " ".join(unicodedata.normalize("NFKC", raw).split())
    if not name:
        raise TeamNameError("field 'groupname' is missing or not a non-empty string")
    if len(name) > MAX_TEAM:
        raise TeamNameError(f"field 'groupname' is longer than {MAX_TEAM} characters")
    return name


def team_key(name: str) -> str:
    """What makes two names one team: equal but for case (after NFKC)."""
    return unicodedata.normalize("NFKC", name.casefold())


@functools.lru_cache(maxsize=4096)
def skeleton(name: str) -> str:
    """The name with every character that looks like a Latin (or common) one replaced by it, case-folded: two names
    with one skeleton look alike."""
    from confusable_homoglyphs import confusables

    out = []
    for char in team_key(name):
        found = confusables.is_confusable(char, greedy=True, preferred_aliases=["latin", "common"])
        glyphs = [g["c"] for f in (found or []) for g in f["homoglyphs"] if len(g["c"]) == 1 and g["c"].isascii()]
        out.append(glyphs[0].casefold() if glyphs else char)
    return "".join(out)


def known_as(name: str, teams: list[str]) -> str:
    """The leaderboard's name for `name` among `teams` (the names already on it): the team equal but for case, or
    `name` itself when it is new; a TeamNameError when it only looks like one of them."""
    key = team_key(name)
    for team in teams:
        if team_key(team) == key:
            return team
    look = skeleton(name)
    for team in teams:
        if skeleton(team) == look:
            raise TeamNameError(f"team name '{name}' looks like the team '{team}' but is spelled with other "
                                f"characters: send '{team}' if you are that team, or choose a name that reads apart")
    return name
