"""Team names as the leaderboard shows them: one team, one row. A valid name (competition.rules.team_name: NFKC,
nothing invisible or misleading in it) equal to a team's but for case is that team; a name that only looks like a
team's name (Cyrillic 'а' for Latin 'a') is refused. The look-alike table is Unicode's confusables (TR 39), from the
confusable-homoglyphs package."""
from __future__ import annotations

import functools
import unicodedata

from competition.rules import TeamNameError

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
