"""The competition server: scores submissions against ground truth, keeps every one in SQLite,
and shows a leaderboard. Compatible with the original course server.

    facematch serve --competition data/competition                      # loopback, port 3001
    facematch serve --competition a/ground_truth.json --competition b/ --port 8000 --tokens teams.yaml

    POST /results/                     score against the default (first) competition
    POST /competitions/<name>/results/ score against a named competition
    GET  /                             HTML leaderboard of every competition
    GET  /leaderboard.json             the default competition's leaderboard as JSON
    GET  /competitions/<name>/leaderboard.json

A submission is the raw JSON body {"groupname": team, "images": {query: [gallery names]}}, with or
without a Content-Type header; short lists and repeated names are accepted, as by the course server,
and counted in the answer's "warnings". Every accepted submission is committed to the database
before the answer is sent, so a server killed at any moment loses nothing it acknowledged. A request's
head must arrive within server.header_timeout seconds and the whole request within server.read_timeout;
at most server.max_connections connections are served at once. A FastAPI app served by uvicorn; the
connection-level bounds are serving/bounds.py's.
"""
from __future__ import annotations

import html
import json
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import uvicorn
import yaml
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from competition.rules import (SCORES, PayloadError, TeamNameError, load_ground_truth, score_submission, team_name,
                               validate_payload)
from competition.submissions import (BUSY, SCORE_LABELS, Limits, Reject, SubmissionStore, busy, load_tokens,
                                     public_queries)
from competition.teams import team_key
from serving import Bounds, SettingNames, bearer_token, bounded_config, check_beyond_loopback, same_secret
from utils import ConfigError, get_logger

log = get_logger("facematch.server")

@dataclass(frozen=True)
class ServerSettings:
    """The server: section of the config, typed (config/default.yaml documents each key, with these
    defaults); `facematch serve` (cli/serve.py) builds it with ServerSettings(**cfg["server"])."""
    host: str = "127.0.0.1"
    port: int = 3001
    db: str = "outputs/server.db"
    tokens: str = ""
    rate_limit: int = 0
    rate_window: float = 60
    daily_limit: int = 20
    daily_limit_per_client: int = 40
    new_teams_per_client: int = 2
    max_submissions: int = 0
    public_fraction: float = 0.5
    max_body_bytes: int = 10_000_000
    read_timeout: float = 10
    header_timeout: float = 2
    max_connections: int = 64
    max_connections_per_client: int = 8
    k: int = 10

    @property
    def limits(self) -> Limits:
        """The submission limits; the per-address ones only without tokens (with them a team is who its token says,
        and many teams may share one address, a classroom's)."""
        per_client = not self.tokens
        return Limits(int(self.rate_limit), float(self.rate_window), int(self.daily_limit), int(self.max_submissions),
                      int(self.new_teams_per_client) if per_client else 0,
                      int(self.daily_limit_per_client) if per_client else 0)

    @property
    def bounds(self) -> Bounds:
        """The connection bounds, their messages naming these settings."""
        return Bounds(self.read_timeout, self.header_timeout, self.max_connections, self.max_connections_per_client,
                      SettingNames.of("server"))

    def __post_init__(self) -> None:
        """Refuse bounds that would leave the server unbounded or closed, naming server.<key> (Bounds checks them)."""
        bounds = self.bounds
        for key, attr in (("read_timeout", "read_timeout"), ("header_timeout", "header_timeout"),
                          ("max_connections", "max_connections"), ("max_connections_per_client", "max_per_client")):
            object.__setattr__(self, key, getattr(bounds, attr))


@dataclass
class Served:
    """What the routes share: the competitions (the first is the default), their query and gallery
    names, the store, the settings and the team tokens (empty: no tokens needed)."""
    competitions: dict[str, dict]
    store: SubmissionStore
    settings: ServerSettings
    tokens: dict[str, str]

    def __post_init__(self) -> None:
        self.default = next(iter(self.competitions))
        self.galleries = {name: set(gt["gallery"]) for name, gt in self.competitions.items()}
        self.queries = {name: set(gt["queries"]) for name, gt in self.competitions.items()}
        fraction = float(self.settings.public_fraction)
        seed = self.store.seed() if fraction < 1 else ""
        self.public = {name: public_queries(gt, fraction, seed) for name, gt in self.competitions.items()}

    def named(self, name: str | None) -> str:
        """The competition a path names, or the default one (None); a 404 for an unknown name."""
        name = self.default if name is None else name
        if name not in self.competitions:
            raise Reject(404, f"no competition named '{name}' (known: {', '.join(self.competitions)})", store=False)
        return name


def served(request: Request) -> Served:
    """The app's Served (create_app puts it in app.state)."""
    return request.app.state.served


class Answer(Response):
    """A Response whose header names go out capitalized (Content-Type, Connection), as the
    hand-written server sent them: Starlette lowercases them, and a client that looks a header up
    case-sensitively (dict(requests' headers)["Connection"]) would miss it."""

    def init_headers(self, headers=None) -> None:
        """Starlette's headers, their names capitalized."""
        super().init_headers(headers)
        self.raw_headers = [(b"WWW-Authenticate" if k == b"www-authenticate" else k.title(), v)
                            for k, v in self.raw_headers]


def json_answer(status: int, data: dict, headers: dict | None = None) -> Response:
    """A JSON answer, encoded as the hand-written server did (json.dumps' defaults)."""
    return Answer(json.dumps(data).encode(), status, headers, media_type="application/json")


# ------------------------------------------------------------ the routes

def leaderboard_json(request: Request) -> Response:
    """A competition's leaderboard as JSON (a thread: the query is blocking SQLite)."""
    state = served(request)
    comp = state.named(request.path_params.get("name"))
    return json_answer(200, {"competition": comp, "teams": state.store.leaderboard(comp)})


def health(request: Request) -> Response:
    """Alive, and which competitions are served."""
    return json_answer(200, {"status": "ok", "competitions": list(served(request).competitions)})


def leaderboard_page(request: Request) -> Response:
    """Every competition's leaderboard as one HTML page (the columns from SCORES)."""
    state = served(request)

    def cell(v):
        return f"{v:.3f}" if v is not None else ""

    def when(t):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    heads = "".join(f"<th>{SCORE_LABELS[k]}</th>" for k in SCORES)
    sections = []
    for comp in state.competitions:
        rows = "".join(
            f"<tr><td>{i}</td><td>{html.escape(t['team'])}</td>"
            + "".join(f"<td>{cell(t['best'][k])}</td>" for k in SCORES)
            + "".join(f"<td>{cell(t['latest'][k])}</td>" for k in SCORES)
            + f"<td>{t['submissions']}</td><td>{when(t['latest']['time'])}</td></tr>"
            for i, t in enumerate(state.store.leaderboard(comp), 1))
        default = " (default: POST /results/)" if comp == state.default else ""
        public = len(state.public[comp])
        split = (f" ({public} public: the scores below; the final standing is on the others)"
                 if public < len(state.queries[comp]) else "")
        sections.append(
            f"<h2>{html.escape(comp)}{default}</h2><p>{len(state.queries[comp])} queries{split}, "
            f"{len(state.galleries[comp])} gallery photos. POST /competitions/{html.escape(comp)}/results/</p>"
            f"<table><tr><th rowspan=2>#</th><th rowspan=2>team</th><th colspan={len(SCORES)}>best</th>"
            f"<th colspan={len(SCORES)}>latest</th><th rowspan=2>submissions</th><th rowspan=2>last submission</th></tr>"
            f"<tr>{heads}{heads}</tr>"
            + (rows or f"<tr><td colspan={2 * len(SCORES) + 4}>no submissions yet</td></tr>") + "</table>")
    page = ("<!doctype html><html><head><meta charset=utf-8><title>facematch leaderboard</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:nth-child(2){text-align:left}</style>"
            "</head><body><h1>facematch leaderboard</h1>" + "".join(sections) + "</body></html>")
    return Answer(page, media_type="text/html")


async def submit(request: Request) -> Response:
    """Read a submission's body here (bounded), then score and store it in a thread: the commit is
    on disk before the answer. A Reject names what is wrong; rejected() stores the attempt."""
    state = served(request)
    comp = state.named(request.path_params.get("name"))
    request.state.body = await read_body(request, state.settings.max_body_bytes)
    return await run_in_threadpool(score_and_store, state, comp, request.headers.get("Authorization", ""),
                                   request.state.body, request.client.host if request.client else "")


def score_and_store(state: Served, comp: str, authorization: str, body: bytes, client: str = "") -> Response:
    """Authenticate, parse, validate and score a body, and commit it (with the team's and the address's limits
    checked in the same transaction); the answer to send. The scores are the public queries'; `queries` and
    `missing` count all of them, so an answer never tells which queries are public."""
    settings = state.settings
    team = authenticate(state.tokens, authorization)
    payload = _parse_json(body, team)
    try:
        claimed, images, warnings = validate_payload(payload, state.galleries[comp], settings.k, exact=False,
                                                     queries=state.queries[comp])
    except PayloadError as exc:
        raise Reject(400, str(exc), team=team or _groupname(payload)) from None
    if team is not None and team_key(claimed) != team_key(team):
        raise Reject(401, f"the token is for team '{team}', not '{claimed}'", store=False)
    truth = state.competitions[comp]
    public = state.public[comp]
    scores = score_submission(images, {**truth, "queries": {q: truth["queries"][q] for q in public}}, settings.k)
    if len(public) < len(truth["queries"]):
        private = {q: g for q, g in truth["queries"].items() if q not in public}
        scores.update({f"private_{k}": v for k, v in score_submission(images, {**truth, "queries": private},
                                                                       settings.k).items() if k in SCORES})
    else:
        scores.update({f"private_{k}": scores[k] for k in SCORES})
    scores.update(queries=len(truth["queries"]), missing=sum(1 for q in truth["queries"] if q not in images))
    kept = json.dumps({"groupname": claimed, "images": images}).encode()  # what was scored: bounded, padding gone
    sub_id, claimed = state.store.add(comp, team or claimed, "scored", 200, body, scores=scores,
                                      limits=settings.limits, client=client, kept=kept)
    answer = {"id": sub_id, "competition": comp, "groupname": claimed, "results": {k: scores[k] for k in SCORES},
              "queries": scores["queries"], "missing": scores["missing"], "warnings": warnings}
    if scores["missing"]:
        answer["message"] = f"{scores['missing']} of {scores['queries']} queries were missing and count as wrong"
    if len(public) < len(truth["queries"]):
        answer["scored_on"] = (f"the {len(public)} public queries of {len(truth['queries'])}; the final standing "
                               "is scored on the others")
    log.info(f"{comp}: '{claimed}' scored top1={scores['top1']:.3f} map={scores['map']:.3f} (id {sub_id})")
    return json_answer(200, answer)


def authenticate(tokens: dict[str, str], authorization: str) -> str | None:
    """The team a bearer token belongs to (None when the server has no tokens)."""
    if not tokens:
        return None
    token = bearer_token(authorization)
    for team, expected in tokens.items():
        if same_secret(token, expected):
            return team
    raise Reject(401, "this server needs a team token: send 'Authorization: Bearer <token>'", store=False)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, at most `limit` bytes: 411 without a Content-Length, 413 when it says more than
    `limit` or more comes while streaming, 400 when it ends early. The time it may take is bounded
    by the protocol's deadline (serving.bounds): past it, the stream ends in a disconnect."""
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        raise Reject(411, "send the body with a Content-Length header, not chunked")
    length = request.headers.get("Content-Length")
    if length is None or not length.isdigit():
        raise Reject(411, "the request needs a Content-Length header")
    if int(length) > limit:
        await _discard(request)
        raise Reject(413, f"the body is {int(length)} bytes; the limit is {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                await _discard(request)
                raise Reject(413, f"more than {limit} bytes of body came; the limit is {limit}")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Reject(408, "the connection closed, or the request did not arrive within server.read_timeout, "
                          "before the whole body came", store=False) from None
    if size < int(length):
        raise Reject(400, f"the body ended after {size} of {length} bytes", store=False)
    return b"".join(chunks)


async def _discard(request: Request) -> None:
    """Read and drop the rest of the body before refusing it: a client such as requests or urllib
    sends its whole body before it reads the answer, and closing on unread bytes would reset the
    connection (the client would see a broken pipe, not the 413). The deadline still holds."""
    try:
        async for _ in request.stream():
            pass
    except (ClientDisconnect, RuntimeError):  # gone, or the stream already consumed
        pass


# ------------------------------------------------------------ refusals and failures as JSON

async def rejected(request: Request, r: Reject) -> Response:
    """Answer a Reject as JSON; a submission's rejected attempt is stored first (when it names a
    competition that exists), and the connection closed, since its body may be unread."""
    state = served(request)
    answer, headers = {"error": r.status, "message": r.message}, dict(r.headers)
    if request.method == "POST":
        headers["Connection"] = "close"  # the body may be unread: never parse it as a next request
        name = request.path_params.get("name")
        comp = state.default if name is None else name
        comp = comp if comp in state.competitions else None
        if r.store and comp is not None:
            body, client = getattr(request.state, "body", b""), request.client.host if request.client else ""
            limits = None if r.status == 429 else Limits(state.settings.limits.rate, state.settings.limits.window)
            try:
                answer["id"], _ = await run_in_threadpool(state.store.add, comp, r.team, "rejected", r.status, body,
                                                          error=r.message, limits=limits, client=client)
            except Reject as over:  # past its rate (kept without its body) or a busy database (not kept)
                r, answer = over, {"error": over.status, "message": over.message}
                headers.update(over.headers)
                if over.store:
                    answer["id"], _ = await run_in_threadpool(state.store.add, comp, over.team, "rejected", 429,
                                                              b"", error=over.message, client=client)
            except Exception:
                log.exception("could not store a rejected attempt")
        log.info(f"{comp}: rejected ({r.status}) {r.message}")
    if r.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return json_answer(r.status, answer, headers)


async def no_route(request: Request, exc: HTTPException) -> Response:
    """A path (or method) nothing answers: 404 in the hand-written server's words."""
    if exc.status_code not in (404, 405):
        return json_answer(exc.status_code, {"error": exc.status_code, "message": str(exc.detail)})
    path = request.url.path
    message = (f"no endpoint at {path}: POST /results/ or /competitions/<name>/results/"
               if request.method == "POST" else f"no page at {path}")
    return await rejected(request, Reject(404, message, store=False))


async def failed(request: Request, exc: Exception) -> Response:
    """A bug or a full disk: say so (500), never pretend the submission was stored."""
    log.exception(f"error while handling {request.method} {request.url.path}", exc_info=exc)
    what = "the submission was not stored" if request.method == "POST" else "nothing was changed"
    return json_answer(500, {"error": 500, "message": f"internal error, {what}: {exc}"})


async def database_failed(request: Request, exc: sqlite3.OperationalError) -> Response:
    """A database busy past the wait is a 503 with Retry-After (the client's next try will do); any other
    failure of it, a 500."""
    if busy(exc):
        log.warning(f"database busy while handling {request.method} {request.url.path}")
        return json_answer(503, {"error": 503, "message": BUSY}, {"Retry-After": "1"})
    return await failed(request, exc)


# ------------------------------------------------------------ the app and its server

def _route(router: APIRouter, methods: list[str], path: str, endpoint: Callable[..., Response | Awaitable[Response]],
           named: bool = True) -> None:
    """Serve `endpoint` at `path`, with and without a trailing slash, and (with `named`) under
    /competitions/<name>, as the hand-written server matched paths."""
    paths = [path] + ([f"/competitions/{{name}}{path}"] if named else [])
    for p in paths:
        for variant in dict.fromkeys([p.rstrip("/") or "/", p.rstrip("/") + "/"]):
            router.add_api_route(variant, endpoint, methods=methods, include_in_schema=variant == p)


def competition_routes() -> APIRouter:
    """The server's routes (HEAD answers as GET, without the body)."""
    router = APIRouter()
    _route(router, ["GET", "HEAD"], "/", leaderboard_page, named=False)
    _route(router, ["GET", "HEAD"], "/leaderboard.json", leaderboard_json)
    _route(router, ["GET", "HEAD"], "/health", health, named=False)
    _route(router, ["POST"], "/results/", submit)
    return router


def create_app(competitions: dict[str, dict], store: SubmissionStore, settings: ServerSettings) -> FastAPI:
    """The competition server's FastAPI app (serve it with CompetitionServer, which adds the
    connection-level bounds; its refusals and failures answer JSON {"error", "message"})."""
    tokens = load_tokens(settings.tokens) if settings.tokens else {}
    app = FastAPI(title="facematch competition server", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = Served(competitions, store, settings, tokens)
    app.include_router(competition_routes())
    app.add_exception_handler(Reject, rejected)
    app.add_exception_handler(HTTPException, no_route)
    app.add_exception_handler(sqlite3.OperationalError, database_failed)
    app.add_exception_handler(Exception, failed)
    return app


def check_serving(settings: ServerSettings) -> None:
    """Refuse, before binding, to serve beyond loopback without team tokens (anyone could post as any team)."""
    check_beyond_loopback(settings.host, settings.tokens, host_key="server.host", secret_key="server.tokens",
                          what="the competition (anyone could post as any team)",
                          how="write a token for each team with `facematch serve --competition … --issue-tokens "
                              "TEAMS --tokens FILE` and serve with --tokens FILE")


class CompetitionServer:
    """The app served by uvicorn on a socket bound here (port 0: a free one, see url()), within
    serving.bounds: the head and request deadlines and the connection caps. Beyond loopback only with tokens."""

    def __init__(self, app: FastAPI, settings: ServerSettings):
        check_serving(settings)
        self.app, self.settings = app, settings
        self.socket = socket.create_server((settings.host, int(settings.port)), backlog=1024)
        config = bounded_config(app, settings.bounds, lifespan="off", log_config=None, access_log=False,
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.stopped = threading.Event()

    @property
    def served(self) -> Served:
        """The competitions, store and settings the routes share."""
        return self.app.state.served

    @property
    def store(self) -> SubmissionStore:
        """The database of submissions."""
        return self.served.store

    def url(self) -> str:
        """http://host:port of the bound socket."""
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve until shutdown() (or SIGINT/SIGTERM, when run in the main thread)."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.stopped.set()

    def shutdown(self, wait: bool = True) -> None:
        """Ask serve_forever() to stop (answers in progress finish); with `wait`, wait for it (not
        from a signal handler of the thread serving)."""
        self.server.should_exit = True
        if wait:
            self.stopped.wait()

    def server_close(self) -> None:
        """Close the listening socket (serve_forever closes it too)."""
        self.socket.close()

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
    """The team a rejected body names, where it names one properly (else None: the attempt counts for its address)."""
    try:
        return team_name(payload.get("groupname")) if isinstance(payload, dict) else None
    except TeamNameError:
        return None


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


def make_server(settings: ServerSettings, competitions: dict[str, dict]) -> CompetitionServer:
    """Check where it may serve, open the database, build the app and bind its socket (port 0 picks a free one);
    call serve_forever() next."""
    check_serving(settings)
    return CompetitionServer(create_app(competitions, SubmissionStore(settings.db), settings), settings)
