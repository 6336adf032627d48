"""The competition server's database (SQLite): every submission kept, scored or refused, the teams and their keys,
the per-client limits, the leaderboard's query; and the team tokens' file. competition/server.py serves it."""
from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple

import yaml

from competition.rules import SCORES, TeamNameError, team_name
from competition.teams import skeleton, team_key
from serving import client_net
from utils import ConfigError, PerThread

# The scores are columns named as SCORES names them (competition.rules); SQL, answers and the page
# all take their names and order from that one list.
SCORE_LABELS = {"top1": "top-1", "top5": "top-5", "top10": "top-10", "map": "mAP"}
_COLUMNS = ", ".join(f"{k} REAL" for k in SCORES)
_BEST_FIRST = ", ".join(f"{k} DESC" for k in SCORES)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS submissions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    competition    TEXT NOT NULL,
    team           TEXT,                -- NULL when the body named none
    received       REAL NOT NULL,       -- Unix time
    status         TEXT NOT NULL CHECK (status IN ('scored', 'rejected')),
    http_status    INTEGER NOT NULL,
    error          TEXT,                -- why a rejected attempt was rejected
    payload_sha256 TEXT NOT NULL,
    {_COLUMNS},
    queries        INTEGER,             -- ground-truth queries scored
    missing        INTEGER,             -- of those, absent from the submission
    payload        BLOB NOT NULL,       -- what was scored, re-encoded; of a rejected attempt, its first bytes
    payload_bytes  INTEGER,             -- the body's whole length
    client         TEXT,                -- the address it came from
    client_net     TEXT                 -- the client its address counts as for the per-address limits
);
CREATE INDEX IF NOT EXISTS submissions_by_team ON submissions (competition, team, status, received);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);  -- the split's seed
CREATE TABLE IF NOT EXISTS teams (
    competition    TEXT NOT NULL,
    name           TEXT NOT NULL,       -- as the leaderboard shows it: the first spelling scored
    key            TEXT NOT NULL,       -- teams.team_key: names equal but for case are one team
    skeleton       TEXT NOT NULL,       -- teams.skeleton: names with one skeleton look alike
    client_net     TEXT,                -- the client that named it first
    created        REAL NOT NULL,       -- Unix time of its first scored submission
    PRIMARY KEY (competition, key)
);
CREATE UNIQUE INDEX IF NOT EXISTS teams_by_skeleton ON teams (competition, skeleton);
CREATE INDEX IF NOT EXISTS teams_by_client ON teams (competition, client_net, created);
"""
PRIVATE = tuple(f"private_{k}" for k in SCORES)  # the scores on the private queries (the final standing)
KEPT_REJECTED = 1024  # bytes of a rejected body kept: enough to see what was sent, never a flood's worth
KEPT_ERROR = 2000  # characters of a refusal's message kept
ADDED_COLUMNS = {"payload_bytes": "INTEGER", "client": "TEXT", "client_net": "TEXT",  # what an older database lacks
                 **{k: "REAL" for k in PRIVATE}}
# after the columns above exist: the per-address limits' counts
INDEXES = "CREATE INDEX IF NOT EXISTS submissions_by_client ON submissions (competition, client_net, status, received)"
# A name's team: the one with its key (the same team) or its skeleton (a look-alike); both columns are indexed, and
# one key has one skeleton, so at most one row answers.
TEAM_LOOKUP = "SELECT name, key FROM teams WHERE competition = ? AND (key = ? OR skeleton = ?)"

# Best = highest top-1, then top-5, top-10 and mAP (SCORES' order); the earlier submission wins a tie.
LEADERBOARD = f"""
WITH scored AS (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY team ORDER BY {_BEST_FIRST}, id) AS best_rank,
              ROW_NUMBER() OVER (PARTITION BY team ORDER BY id DESC) AS latest_rank,
              COUNT(*) OVER (PARTITION BY team) AS submissions
    FROM submissions WHERE competition = ? AND status = 'scored'
)
SELECT b.team, b.submissions, b.id, {", ".join(f"b.{k}" for k in SCORES)}, b.received,
       l.id, {", ".join(f"l.{k}" for k in SCORES)}, l.received
FROM scored b JOIN scored l ON l.team = b.team AND l.latest_rank = 1
WHERE b.best_rank = 1
ORDER BY {", ".join(f"b.{k} DESC" for k in SCORES)}, b.id
"""


class Reject(Exception):
    """An HTTP error answer: status, message, whether the attempt is stored, and headers (Retry-After)."""

    def __init__(self, status: int, message: str, store: bool = True, team: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.store, self.team, self.headers = status, message, store, team, headers or {}


def busy(exc: BaseException) -> bool:
    """Whether a SQLite error means another writer held the database past the wait (SQLITE_BUSY, SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None and code & 0xFF in (
        sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


BUSY = "the database is busy; the submission was not stored: send it again in a moment"


def _next_day() -> str:
    """How long until the next UTC day, in words."""
    left = (time.time() // 86400 + 1) * 86400 - time.time()
    return f"the next day starts in {left // 3600:.0f} h {left % 3600 // 60:.0f} min"


class SubmissionStore:
    """The SQLite database of submissions and teams, one connection per thread, WAL mode, full sync."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        # a commit is on disk before we answer (full sync); transactions are opened explicitly (autocommit)
        self.conn = PerThread(self.path, SCHEMA, full_sync=True, autocommit=True)
        conn = self.conn()  # a bad path fails at start, not on the first submission
        have = {row[1] for row in conn.execute("PRAGMA table_info(submissions)")}
        for column, kind in ADDED_COLUMNS.items():
            if column not in have:
                conn.execute(f"ALTER TABLE submissions ADD COLUMN {column} {kind}")
        conn.execute(INDEXES)
        self._teams_from_submissions()

    def _teams_from_submissions(self) -> None:
        """A database from before the teams table: its teams (each at its first scored submission) put in it once."""
        conn = self.conn()
        if conn.execute("SELECT 1 FROM teams LIMIT 1").fetchone():
            return
        rows = conn.execute("SELECT competition, team, MIN(received), client FROM submissions "
                            "WHERE status='scored' AND team IS NOT NULL GROUP BY competition, team").fetchall()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR IGNORE INTO teams (competition, name, key, skeleton, client_net, created) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             [(c, t, team_key(t), skeleton(t), client_net(a or ""), first) for c, t, first, a in rows])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def team(self, competition: str, name: str) -> tuple[str, str | None]:
        """The leaderboard's name for `name` and, for a name no team has yet, its skeleton (else None); a
        TeamNameError when it only looks like a team's name. One indexed read: no lock, no other team's name
        looked at."""
        key, look = team_key(name), skeleton(name)
        row = self.conn().execute(TEAM_LOOKUP, (competition, key, look)).fetchone()
        if row is None:
            return name, look
        if row[1] == key:
            return row[0], None
        raise TeamNameError(f"team name '{name}' looks like the team '{row[0]}' but is spelled with other "
                            f"characters: send '{row[0]}' if you are that team, or choose a name that reads apart")

    def add(self, competition: str, team: str | None, status: str, http_status: int, payload: bytes,
            error: str | None = None, scores: dict | None = None, limits: Limits | None = None,
            client: str = "", kept: bytes | None = None) -> tuple[int, str | None]:
        """Insert one submission in its own transaction; with `limits`, first check them (the team's and its
        address's, or for an attempt that names no team its address's) inside the same transaction, so concurrent
        submissions cannot slip past them. A scored team gets its leaderboard name (one row per team, look-alikes
        refused: 400); a new one is added to the teams table in the same transaction, whose unique indexes refuse a
        name that another submission took in the meantime (then looked up again). A scored submission keeps `kept`
        (what was scored), a rejected one its first KEPT_REJECTED bytes; the SHA-256 and length are the body's as
        sent. A busy database is a 503. Returns (the new row's id, the team as stored)."""
        args = (competition, team, status, http_status, payload, error, scores, limits, client, kept)
        try:
            try:
                return self._add(*args)
            except sqlite3.IntegrityError:  # a team named alike committed between the look-up and the insert
                return self._add(*args)
        except sqlite3.IntegrityError:  # and again: look-alikes keep coming at the same moment
            raise Reject(409, "other submissions named a look-alike team at the same moment; the submission was not "
                              "stored: send it again", store=False, headers={"Retry-After": "1"}) from None
        except sqlite3.OperationalError as exc:
            if busy(exc):
                raise Reject(503, BUSY, store=False, team=team, headers={"Retry-After": "1"}) from None
            raise

    def _add(self, competition: str, team: str | None, status: str, http_status: int, payload: bytes,
             error: str | None, scores: dict | None, limits: Limits | None, client: str,
             kept: bytes | None) -> tuple[int, str | None]:
        """add()'s one try."""
        new = None
        if status == "scored" and team is not None:
            try:
                team, new = self.team(competition, team)
            except TeamNameError as exc:
                raise Reject(400, str(exc), team=None) from None
        net, now = client_net(client), time.time()
        conn = self.conn()
        s = scores or {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            if limits is not None:
                self._check_limits(conn, competition, team, client, limits, scored=status == "scored",
                                   new_team=new is not None)
            if new is not None:
                conn.execute("INSERT INTO teams (competition, name, key, skeleton, client_net, created) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (competition, team, team_key(team), new, net, now))
            body = (payload if kept is None else kept) if status == "scored" else payload[:KEPT_REJECTED]
            columns = ("competition", "team", "received", "status", "http_status", "error", "payload_sha256",
                       *SCORES, *PRIVATE, "queries", "missing", "payload", "payload_bytes", "client", "client_net")
            cur = conn.execute(
                f"INSERT INTO submissions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                (competition, _storable(team), now, status, http_status, _storable(error and error[:KEPT_ERROR]),
                 hashlib.sha256(payload).hexdigest(), *(s.get(k) for k in SCORES), *(s.get(k) for k in PRIVATE),
                 s.get("queries"), s.get("missing"), body, len(payload), client, net))
            conn.execute("COMMIT")
            return cur.lastrowid, team
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _check_limits(conn: sqlite3.Connection, competition: str, team: str | None, client: str, limits: Limits,
                      scored: bool = True, new_team: bool = False) -> None:
        """The rate limit counts every attempt (rejected ones too) of the team, or of the address when the attempt
        names no team; the daily limit and the cap count a team's scored submissions; the per-address limits count
        the new team names and the scored submissions of the address's client (serving.client_net), whatever
        names it sends under."""
        net = client_net(client)
        address = f"address '{client}'" + ("" if net == client else f" (one client with all of {net})")

        def count(sql: str, *args) -> int:
            return conn.execute(f"SELECT COUNT(*) FROM {sql}", (competition, *args)).fetchone()[0]

        midnight = time.time() // 86400 * 86400
        if limits.rate:
            who, value = ("team", team) if team is not None else ("client_net", net)
            recent = count(f"submissions WHERE competition=? AND {who}=? AND received>? AND http_status!=429", value,
                           time.time() - limits.window)
            if recent >= limits.rate:
                sender = f"team '{team}'" if team is not None else address
                raise Reject(429, f"{sender} sent {recent} submissions "
                                  f"in the last {limits.window:g} s; the limit is {limits.rate}: try again later",
                             team=team)
        if not scored or team is None:
            return
        if new_team and limits.new_teams_per_client:
            made = count("teams WHERE competition=? AND client_net=? AND created>=?", net, midnight)
            if made >= limits.new_teams_per_client:
                raise Reject(429, f"{address} has started {made} team names today (UTC), the most one client may "
                                  f"(server.new_teams_per_client): submit under one of them; {_next_day()}")
        if limits.daily:
            today = count("submissions WHERE competition=? AND team=? AND status='scored' AND received>=?", team,
                          midnight)
            if today >= limits.daily:
                raise Reject(429, f"team '{team}' has used its {limits.daily} submissions of today (UTC, "
                                  f"server.daily_limit); {_next_day()}", team=team)
        if limits.cap:
            done = count("submissions WHERE competition=? AND team=? AND status='scored'", team)
            if done >= limits.cap:
                raise Reject(429, f"team '{team}' has used all {limits.cap} submissions of competition "
                                  f"'{competition}'", team=team)
        if limits.daily_per_client:
            done = count("submissions WHERE competition=? AND client_net=? AND status='scored' AND received>=?", net,
                         midnight)
            if done >= limits.daily_per_client:
                raise Reject(429, f"{address} has had {done} scored submissions today (UTC), under all its team "
                                  f"names, the most one client may (server.daily_limit_per_client); {_next_day()}",
                             team=team)

    def leaderboard(self, competition: str) -> list[dict]:
        """Best and latest score per team (on the public queries), best team first."""
        rows = self.conn().execute(LEADERBOARD, (competition,)).fetchall()
        keys = ("id", *SCORES, "time")
        n = len(keys)
        return [{"team": r[0], "submissions": r[1], "best": dict(zip(keys, r[2:2 + n])),
                 "latest": dict(zip(keys, r[2 + n:2 + 2 * n]))} for r in rows]

    def final_standing(self, competition: str) -> list[dict]:
        """The final standing: each team's best submission on the public queries (the one it would choose),
        scored on the private queries it never saw a score of, best team first."""
        board = self.leaderboard(competition)
        out = []
        for team in board:
            row = self.conn().execute(f"SELECT {', '.join(PRIVATE)} FROM submissions WHERE id=?",
                                      (team["best"]["id"],)).fetchone()
            out.append({"team": team["team"], "submission": team["best"]["id"], "public": team["best"],
                        "private": dict(zip(SCORES, row))})
        return sorted(out, key=lambda t: tuple(-(t["private"][k] or 0) for k in SCORES))

    def seed(self) -> str:
        """The seed that splits every competition's queries into public and private ones: made once, kept here
        (the organiser's; no answer shows it)."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='split_seed'").fetchone()
            if row is None:
                row = (secrets.token_hex(16),)
                conn.execute("INSERT INTO meta (key, value) VALUES ('split_seed', ?)", row)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return row[0]

    def count(self, **where) -> int:
        clause = " AND ".join(f"{k}=?" for k in where) or "1"
        return self.conn().execute(f"SELECT COUNT(*) FROM submissions WHERE {clause}", tuple(where.values())).fetchone()[0]


class Limits(NamedTuple):
    """A team's limits (attempts per window, scored submissions per UTC day and in all) and its address's (new team
    names and scored submissions per UTC day); 0: none."""
    rate: int = 0
    window: float = 60
    daily: int = 0
    cap: int = 0
    new_teams_per_client: int = 0
    daily_per_client: int = 0


def _storable(text: str | None) -> str | None:
    """Text SQLite can hold: a lone surrogate (valid JSON, no character) written as its escape."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def public_queries(truth: dict, fraction: float, seed: str) -> list[str]:
    """The queries whose scores are answered and shown (the public part): all of them at fraction 1; else about
    `fraction` of them, drawn by the organiser's seed (at least one, and at least one left private)."""
    queries = list(truth["queries"])
    if fraction >= 1 or len(queries) < 2:
        return queries
    ranked = sorted(queries, key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    n = min(len(queries) - 1, max(1, round(fraction * len(queries))))
    return sorted(ranked[:n], key=queries.index)


def issue_tokens(teams: list[str], path: str | Path) -> dict[str, str]:
    """A new random token for each team, written as a tokens file (`team: token` lines, readable by its owner
    only) for server.tokens; a team name that cannot be a leaderboard row is refused first."""
    names = [team_name(t) for t in teams if t.strip()]
    keys = [team_key(n) for n in names]
    if len(set(keys)) != len(keys):
        raise ConfigError("two of the teams are one name but for case or spacing: name each team once")
    tokens = {name: secrets.token_urlsafe(24) for name in names}
    text = yaml.safe_dump(tokens, allow_unicode=True, sort_keys=False)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return tokens


def load_tokens(path: str | Path) -> dict[str, str]:
    """Read a YAML file of 'team: token' lines."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read tokens file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"tokens file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not data or not all(isinstance(t, str) and t for t in data.values()):
        raise ConfigError(f"tokens file {path} must hold 'team: token' lines with non-empty tokens")
    return {str(team): token for team, token in data.items()}
