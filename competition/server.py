"""The competition server: scores submissions against ground truth, keeps every one in SQLite,
and shows a leaderboard. Compatible with the original course server.

    python server.py --competition data/competition                      # loopback, port 3001
    python server.py --competition a/ground_truth.json --competition b/ --port 8000 --tokens teams.yaml

    POST /results/                     score against the default (first) competition
    POST /competitions/<name>/results/ score against a named competition
    GET  /                             HTML leaderboard of every competition
    GET  /leaderboard.json             the default competition's leaderboard as JSON
    GET  /competitions/<name>/leaderboard.json

A submission is the raw JSON body {"groupname": team, "images": {query: [gallery names]}}, with or
without a Content-Type header; short lists and repeated names are accepted, as by the course server,
and counted in the answer's "warnings". Every accepted submission is committed to the database
before the answer is sent, so a server killed at any moment loses nothing it acknowledged. A whole
request must arrive within server.read_timeout seconds; at most server.max_connections connections
are served at once, the next ones get 503.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import io
import json
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

import yaml

from competition.rules import (SCORES, PayloadError, load_ground_truth, score_submission,
                               validate_payload)
from utils import ConfigError, get_logger

log = get_logger("facematch.server")

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
    payload        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS submissions_by_team ON submissions (competition, team, status, received);
"""

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
    """An HTTP error answer: status, message, and whether the attempt is stored."""

    def __init__(self, status: int, message: str, store: bool = True, team: str | None = None, unread: int = 0):
        super().__init__(message)
        self.status, self.message, self.store, self.team = status, message, store, team
        self.unread = unread  # body bytes still on the wire, discarded after the answer is sent


class Store:
    """The SQLite database of submissions, one connection per thread, WAL mode, full sync."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.local = threading.local()
        conn = self.conn()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)

    def conn(self) -> sqlite3.Connection:
        if getattr(self.local, "conn", None) is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk before we answer
            conn.execute("PRAGMA busy_timeout=30000")
            self.local.conn = conn
        return self.local.conn

    def add(self, competition: str, team: str | None, status: str, http_status: int, payload: bytes,
            error: str | None = None, scores: dict | None = None, limits: tuple[int, float, int] | None = None) -> int:
        """Insert one submission in its own transaction; with `limits` (rate, window, cap), first
        check the team's rate limit and cap inside the same transaction, so concurrent submissions
        cannot slip past them. Returns the new row's id."""
        conn = self.conn()
        s = scores or {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            if limits is not None:
                self._check_limits(conn, competition, team, *limits)
            columns = ("competition", "team", "received", "status", "http_status", "error", "payload_sha256",
                       *SCORES, "queries", "missing", "payload")
            cur = conn.execute(
                f"INSERT INTO submissions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                (competition, team, time.time(), status, http_status, error, hashlib.sha256(payload).hexdigest(),
                 *(s.get(k) for k in SCORES), s.get("queries"), s.get("missing"), payload))
            conn.execute("COMMIT")
            return cur.lastrowid
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _check_limits(conn, competition: str, team: str, rate: int, window: float, cap: int) -> None:
        if rate:
            recent, = conn.execute(
                "SELECT COUNT(*) FROM submissions WHERE competition=? AND team=? AND received>? AND http_status!=429",
                (competition, team, time.time() - window)).fetchone()
            if recent >= rate:
                raise Reject(429, f"team '{team}' sent {recent} submissions in the last {window:g} s; "
                                  f"the limit is {rate}: try again later", team=team)
        if cap:
            done, = conn.execute("SELECT COUNT(*) FROM submissions WHERE competition=? AND team=? AND status='scored'",
                                 (competition, team)).fetchone()
            if done >= cap:
                raise Reject(429, f"team '{team}' has used all {cap} submissions of competition '{competition}'",
                             team=team)

    def leaderboard(self, competition: str) -> list[dict]:
        """Best and latest score per team, best team first."""
        rows = self.conn().execute(LEADERBOARD, (competition,)).fetchall()
        keys = ("id", *SCORES, "time")
        n = len(keys)
        return [{"team": r[0], "submissions": r[1], "best": dict(zip(keys, r[2:2 + n])),
                 "latest": dict(zip(keys, r[2 + n:2 + 2 * n]))} for r in rows]

    def count(self, **where) -> int:
        clause = " AND ".join(f"{k}=?" for k in where) or "1"
        return self.conn().execute(f"SELECT COUNT(*) FROM submissions WHERE {clause}", tuple(where.values())).fetchone()[0]


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


def _positive(cfg: dict, key: str, whole: bool = False) -> float:
    """cfg[key] as a positive number (a whole one with `whole`), else a ConfigError naming server.<key>."""
    value = cfg[key]
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf")
            or (whole and not float(value).is_integer())):
        raise ConfigError(f"server.{key} must be a positive {'whole number' if whole else 'number'}, got {value!r}")
    return int(value) if whole else float(value)


class DeadlineReader(io.RawIOBase):
    """A socket's reading side that gives up at `deadline` (time.monotonic()): a whole request
    must arrive in time, however slowly its bytes trickle in."""

    def __init__(self, sock: socket.socket, write_timeout: float):
        self.sock, self.write_timeout, self.deadline = sock, write_timeout, float("inf")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("server.read_timeout passed")
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.write_timeout)


class CompetitionServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the competitions, the store and the limits for its handlers."""
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # socketserver's default backlog of 5 resets bursts of clients

    def __init__(self, address, competitions: dict[str, dict], store: Store, cfg: dict,
                 tokens: dict[str, str] | None = None):
        self.competitions, self.store, self.cfg, self.tokens = competitions, store, cfg, tokens or {}
        self.read_timeout = _positive(cfg, "read_timeout")
        self.max_connections = _positive(cfg, "max_connections", whole=True)
        self.slots = threading.BoundedSemaphore(self.max_connections)
        self.default = next(iter(competitions))
        self.galleries = {name: set(gt["gallery"]) for name, gt in competitions.items()}
        self.queries = {name: set(gt["queries"]) for name, gt in competitions.items()}
        super().__init__(address, Handler)

    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self._refuse(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _refuse(self, request: socket.socket, client_address) -> None:
        """Answer 503 at once from the accepting thread, without starting a handler thread."""
        body = json.dumps({"error": 503, "message": f"the server is serving its limit of {self.max_connections} "
                                                    "connections (server.max_connections); try again shortly"}).encode()
        head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        try:
            request.settimeout(0.1)
            request.sendall(head + body)
            # Read what the client already sent: closing with unread data resets the connection,
            # and the client might lose the answer.
            request.setblocking(False)
            request.recv(1 << 20)
        except OSError:
            pass
        log.warning(f"refused a connection from {client_address[0]}: {self.max_connections} connections are open "
                    "(server.max_connections)")
        self.shutdown_request(request)


@dataclass
class Answer:
    """What a route answers: status, body, its content type and any extra headers."""
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)


def json_answer(status: int, data: dict, headers: dict | None = None) -> Answer:
    return Answer(status, json.dumps(data).encode(), "application/json", headers or {})


@dataclass
class Request:
    """One request as the routes see it: the server's state, the competition the path names (None:
    the default), the headers, and its body once read (read_body reads it, within the deadline)."""
    server: "CompetitionServer"
    path: str
    competition: str | None
    headers: Message
    read_body: Callable[[], bytes]
    body: bytes = b""

    def named_competition(self) -> str:
        """The competition the path names, or the default one; a 404 for an unknown name."""
        name = self.server.default if self.competition is None else self.competition
        if name not in self.server.competitions:
            raise Reject(404, f"no competition named '{name}' (known: {', '.join(self.server.competitions)})",
                         store=False)
        return name


# ------------------------------------------------------------ the routes: (request) -> answer

def leaderboard_json(req: Request) -> Answer:
    comp = req.named_competition()
    return json_answer(200, {"competition": comp, "teams": req.server.store.leaderboard(comp)})


def health(req: Request) -> Answer:
    return json_answer(200, {"status": "ok", "competitions": list(req.server.competitions)})


def leaderboard_page(req: Request) -> Answer:
    """Every competition's leaderboard as one HTML page (the columns from SCORES)."""
    if req.competition is not None:
        raise Reject(404, f"no page at {req.path}", store=False)
    server = req.server

    def cell(v):
        return f"{v:.3f}" if v is not None else ""

    def when(t):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    heads = "".join(f"<th>{SCORE_LABELS[k]}</th>" for k in SCORES)
    sections = []
    for comp in server.competitions:
        rows = "".join(
            f"<tr><td>{i}</td><td>{html.escape(t['team'])}</td>"
            + "".join(f"<td>{cell(t['best'][k])}</td>" for k in SCORES)
            + "".join(f"<td>{cell(t['latest'][k])}</td>" for k in SCORES)
            + f"<td>{t['submissions']}</td><td>{when(t['latest']['time'])}</td></tr>"
            for i, t in enumerate(server.store.leaderboard(comp), 1))
        default = " (default: POST /results/)" if comp == server.default else ""
        sections.append(
            f"<h2>{html.escape(comp)}{default}</h2><p>{len(server.queries[comp])} queries, "
            f"{len(server.galleries[comp])} gallery photos. POST /competitions/{html.escape(comp)}/results/</p>"
            f"<table><tr><th rowspan=2>#</th><th rowspan=2>team</th><th colspan={len(SCORES)}>best</th>"
            f"<th colspan={len(SCORES)}>latest</th><th rowspan=2>submissions</th><th rowspan=2>last submission</th></tr>"
            f"<tr>{heads}{heads}</tr>"
            + (rows or f"<tr><td colspan={2 * len(SCORES) + 4}>no submissions yet</td></tr>") + "</table>")
    page = ("<!doctype html><html><head><meta charset=utf-8><title>facematch leaderboard</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:nth-child(2){text-align:left}</style>"
            "</head><body><h1>facematch leaderboard</h1>" + "".join(sections) + "</body></html>")
    return Answer(200, page.encode(), "text/html; charset=utf-8")


def submit(req: Request) -> Answer:
    """Score a submission and store it (a Reject names what is wrong; the handler stores it as rejected)."""
    server, cfg = req.server, req.server.cfg
    comp = req.named_competition()
    req.body = req.read_body()
    team = authenticate(req)
    payload = _parse_json(req.body, team)
    try:
        claimed, images, warnings = validate_payload(payload, server.galleries[comp], cfg["k"], exact=False,
                                                     queries=server.queries[comp])
    except PayloadError as exc:
        raise Reject(400, str(exc), team=team or _groupname(payload)) from None
    if team is not None and claimed != team:
        raise Reject(401, f"the token is for team '{team}', not '{claimed}'", store=False)
    scores = score_submission(images, server.competitions[comp], cfg["k"])
    sub_id = server.store.add(comp, claimed, "scored", 200, req.body, scores=scores,
                              limits=(cfg["rate_limit"], cfg["rate_window"], cfg["max_submissions"]))
    answer = {"id": sub_id, "competition": comp, "groupname": claimed, "results": {k: scores[k] for k in SCORES},
              "queries": scores["queries"], "missing": scores["missing"], "warnings": warnings}
    if scores["missing"]:
        answer["message"] = f"{scores['missing']} of {scores['queries']} queries were missing and count as wrong"
    log.info(f"{comp}: '{claimed}' scored top1={scores['top1']:.3f} map={scores['map']:.3f} (id {sub_id})")
    return json_answer(200, answer)


def authenticate(req: Request) -> str | None:
    """The team a bearer token belongs to (None when the server has no tokens)."""
    tokens = req.server.tokens
    if not tokens:
        return None
    auth = req.headers.get("Authorization", "")
    token = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else ""
    for team, expected in tokens.items():
        if token and hmac.compare_digest(token.encode(), expected.encode()):
            return team
    raise Reject(401, "this server needs a team token: send 'Authorization: Bearer <token>'", store=False)


# (method, path without its trailing slash, after any /competitions/<name> prefix) -> route
ROUTES: dict[tuple[str, str], Callable[[Request], Answer]] = {
    ("GET", ""): leaderboard_page,
    ("GET", "/leaderboard.json"): leaderboard_json,
    ("GET", "/health"): health,
    ("POST", "/results"): submit,
}


class Handler(BaseHTTPRequestHandler):
    """HTTP plumbing around ROUTES: the request deadline, routing, the answer, rejected attempts stored."""
    server: CompetitionServer
    protocol_version = "HTTP/1.1"

    def setup(self):
        self.timeout = self.server.read_timeout  # for writes; reads follow the request's deadline
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(DeadlineReader(self.connection, self.timeout))

    def handle_one_request(self):
        # An idle keep-alive connection is closed when its next request does not come in time.
        self.rfile.raw.deadline = time.monotonic() + self.server.read_timeout
        super().handle_one_request()

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        competition = None
        if path.startswith("/competitions/"):
            name, _, rest = path[len("/competitions/"):].partition("/")
            competition, path = unquote(name), "/" + rest
        route = ROUTES.get((method, path.rstrip("/")))
        req = Request(self.server, self.path, competition, self.headers, self._read_body)
        try:
            if route is None:
                raise Reject(404, f"no endpoint at {self.path}: POST /results/ or /competitions/<name>/results/"
                             if method == "POST" else f"no page at {self.path}", store=False)
            answer = route(req)
        except Reject as r:
            self._reject(r, req, method)
            return
        except Exception as exc:  # a bug or a full disk: say so, never pretend it was stored
            log.exception(f"error while handling {method} {self.path}")
            what = "the submission was not stored" if method == "POST" else "nothing was changed"
            answer = json_answer(500, {"error": 500, "message": f"internal error, {what}: {exc}"})
        self._send(answer)

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for k, v in answer.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise Reject(411, "send the body with a Content-Length header, not chunked")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise Reject(411, "the request needs a Content-Length header")
        limit = int(self.server.cfg["max_body_bytes"])
        if int(length) > limit:
            raise Reject(413, f"the body is {int(length)} bytes; the limit is {limit}", unread=int(length))
        try:
            body = self.rfile.read(int(length))
        except TimeoutError:
            raise Reject(408, f"the request did not arrive within server.read_timeout "
                              f"({self.server.read_timeout:g} s)", store=False) from None
        except OSError as exc:
            raise Reject(400, f"the connection failed while reading the body: {exc}", store=False) from None
        if len(body) < int(length):
            raise Reject(400, f"the body ended after {len(body)} of {length} bytes", store=False)
        return body

    def _reject(self, r: Reject, req: Request, method: str) -> None:
        """Answer a Reject as JSON; a submission's rejected attempt is stored first (when it names a
        competition that exists), and the connection closed, since its body may be unread."""
        answer = {"error": r.status, "message": r.message}
        comp = None
        if method == "POST":
            self.close_connection = True  # the body may be unread: never parse it as a next request
            comp = req.competition if req.competition is not None else self.server.default
            comp = comp if comp in self.server.competitions else None
            if r.store and comp is not None:
                try:
                    answer["id"] = self.server.store.add(comp, r.team, "rejected", r.status, req.body, error=r.message)
                except Exception:
                    log.exception("could not store a rejected attempt")
            log.info(f"{comp}: rejected ({r.status}) {r.message}")
        extra = {**({"Connection": "close"} if method == "POST" else {}),
                 **({"WWW-Authenticate": "Bearer"} if r.status == 401 else {})}
        try:
            self._send(json_answer(r.status, answer, extra))
            self.wfile.flush()
            self._discard(r.unread)
        except OSError as exc:  # the client is gone (it may have sent half a body and left)
            log.info(f"{comp}: could not answer {r.status}: {exc}")

    def _discard(self, n: int) -> None:
        """Read and drop up to n body bytes, within the request's deadline. A client such as
        requests or urllib sends its whole body before it reads the answer: closing on unread
        bytes would reset the connection and the client would see a broken pipe, not the 413."""
        try:
            while n > 0:
                chunk = self.rfile.read1(min(n, 1 << 16))
                if not chunk:
                    return
                n -= len(chunk)
        except (TimeoutError, OSError):
            pass


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} overflows")
    return value


def _parse_json(body: bytes, team: str | None):
    """The body as JSON, or a 400 naming what is wrong: not JSON, nested too deep for the parser,
    NaN/Infinity, or a number too large to hold (json's own int limit, or a float that overflows)."""
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite)
    except RecursionError:
        raise Reject(400, "the body is not valid JSON: it is nested too deeply", team=team) from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError, as are int overflows
        raise Reject(400, f"the body is not valid JSON: {exc}", team=team) from None


def _groupname(payload) -> str | None:
    team = payload.get("groupname") if isinstance(payload, dict) else None
    return team.strip()[:100] if isinstance(team, str) and team.strip() else None


def load_competitions(paths: list[str]) -> dict[str, dict]:
    """Ground truths by name, the first one being the default competition."""
    competitions: dict[str, dict] = {}
    for path in paths:
        gt = load_ground_truth(path)
        if gt["name"] in competitions:
            raise ConfigError(f"two competitions are named '{gt['name']}': rename one in its ground_truth.json")
        competitions[gt["name"]] = gt
    if not competitions:
        raise ConfigError("give at least one --competition")
    return competitions


def make_server(cfg: dict, competitions: dict[str, dict]) -> CompetitionServer:
    """Open the database and bind the server (port 0 picks a free one); call serve_forever() next."""
    s = cfg["server"]
    tokens = load_tokens(s["tokens"]) if s["tokens"] else None
    return CompetitionServer((s["host"], int(s["port"])), competitions, Store(s["db"]), s, tokens)
