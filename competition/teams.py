"""Team names as the leaderboard shows them: one team, one row. A valid name (competition.rules.team_name: NFKC,
nothing invisible or misleading in it) equal to a team's but for case is that team (same `team_key`); a name that
only looks like a team's name (Cyrillic 'а' for Latin 'a') has the same `skeleton` and is refused. The look-alike
table is Unicode's confusables (TR 39), from the confusable-homoglyphs package. The server keeps each team's key and
skeleton in its database, under unique indexes, so a new name is checked by one indexed query, never against every
team's name."""
from __future__ import annotations

import unicodedata


def team_key(name: str) -> str:
    """What makes two names one team: equal but for case (after NFKC)."""
    return unicodedata.normalize("NFKC", name.casefold())


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
