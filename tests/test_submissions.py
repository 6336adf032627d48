"""The competition server's submissions (competition/submissions.py, served by competition/server.py) against attackers
and careless teams: no 500 from any body, rejected attempts kept as bounded records that count toward the rate, no
address or group of addresses can hold the others out, one team is one row whatever invisible or look-alike
characters its name holds, a body keeps only what scoring needs, thousands of teams cost a new one an indexed look-
up, a busy database is a 503, and nothing the answers tell maps the private queries that decide the final standing."""
from __future__ import annotations

import http.client
import json
import os
import select
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from test_server import GALLERY, TRUTH, closed_within, get, perfect, post, start, trickle, write_truth  # noqa: F401


def rows(server, *columns):
    with sqlite3.connect(server.store.path) as conn:
        return conn.execute(f"SELECT {', '.join(columns)} FROM submissions ORDER BY id").fetchall()


def test_a_lone_surrogate_anywhere_is_a_400_stored_as_rejected(start):  # noqa: F811
    port, server = start()
    body = b'{"groupname": "x\\ud800y", "images": {"q0.jpg": ["a"]}}'
    status, answer = post(port, body, raw=True)
    assert status == 400 and "lone surrogate" in answer["message"] and answer["id"]
    body = b'{"groupname": "team", "images": {"\\ud800.jpg": ["a"]}}'  # an invalid query naming a surrogate
    status, answer = post(port, body, raw=True)
    assert status == 400 and answer["id"]
    assert [r[0] for r in rows(server, "status")] == ["rejected", "rejected"]
    assert "\\ud800" in rows(server, "error")[1][0]  # kept as its escape
    assert post(port, perfect())[0] == 200


def test_a_rejected_body_is_kept_bounded_and_counts_toward_the_rate(start):  # noqa: F811
    port, server = start("server.rate_limit=3", "server.rate_window=60")
    junk = b"x" * 2_000_000
    for _ in range(3):
        assert post(port, junk, raw=True)[0] == 400
    status, answer = post(port, junk, raw=True)
    assert status == 429 and "address '127.0.0.1'" in answer["message"]
    kept = rows(server, "length(payload)", "payload_bytes", "http_status")
    assert [r[2] for r in kept] == [400, 400, 400, 429]
    assert all(r[0] <= 1024 for r in kept) and [r[1] for r in kept[:3]] == [2_000_000] * 3
    assert post(port, perfect())[0] == 200  # a team's own rate is its own


def test_one_address_cannot_hold_the_servers_connections(start):  # noqa: F811
    port, server = start("server.max_connections_per_client=4", "server.read_timeout=5")
    slow = [socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
            for _ in range(4)]
    try:
        for sock in slow:
            sock.sendall(b"POST /results/ HTTP/1.1\r\n")  # and then a byte now and then
        fifth = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
        answer = fifth.recv(4096).decode()
        fifth.close()
        assert answer.startswith("HTTP/1.1 503") and "max_connections_per_client" in answer
        status, _ = post(port, perfect())  # another address (127.0.0.1) is served
        assert status == 200
    finally:
        for sock in slow:
            sock.close()


def test_one_team_is_one_row_and_look_alikes_are_refused(start):  # noqa: F811
    port, server = start()
    assert post(port, dict(perfect(), groupname="Café Team"))[0] == 200
    status, answer = post(port, dict(perfect(), groupname="café  team"))  # case and spaces: the same team
    assert status == 200 and answer["groupname"] == "Café Team"
    status, answer = post(port, dict(perfect(), groupname="Cafe\u0301 Team"))  # NFD: the same letters
    assert status == 200 and answer["groupname"] == "Café Team"
    status, answer = post(port, dict(perfect(), groupname="Сafé Team"))  # a Cyrillic С
    assert status == 400 and "looks like the team 'Café Team'" in answer["message"]
    status, answer = post(port, dict(perfect(), groupname="Café\u200bTeam"))  # a zero-width space
    assert status == 400 and "U+200B" in answer["message"]
    teams = [t["team"] for t in get(port, "/leaderboard.json")[1]["teams"]]
    assert teams == ["Café Team"]


def test_a_team_has_a_daily_limit_by_default(start):  # noqa: F811
    port, server = start("server.daily_limit=2")
    assert [post(port, perfect())[0] for _ in range(2)] == [200, 200]
    status, answer = post(port, perfect())
    assert status == 429 and "submissions of today" in answer["message"]
    from competition.server import ServerSettings

    assert ServerSettings().daily_limit > 0


def test_scores_answer_the_public_queries_and_the_final_standing_the_private_ones(start, tmp_path, capsys):  # noqa: F811
    from cli import serve
    from test_server import TRUTH, write_truth

    port, server = start("server.public_fraction=0.5")
    public = server.served.public["toy"]
    assert len(public) == 2 and set(public) < set(TRUTH["queries"])
    # right on the public queries only: a perfect public score, nothing on the private ones
    sly = {"groupname": "sly", "images": {q: (TRUTH["queries"][q] + [f"{i:040x}.jpg" for i in range(10, 20)])[:10]
                                          for q in public}}
    status, answer = post(port, sly)
    assert status == 200 and answer["results"]["top1"] == 1.0 and "2 public queries of 4" in answer["scored_on"]
    assert post(port, perfect())[1]["results"]["top1"] == 1.0
    assert server.store.seed() == server.store.seed()  # kept: a restart splits alike
    db = server.store.path
    assert serve.main(["--competition", str(write_truth(tmp_path / "c")), "--db", db, "--final",
                       "server.public_fraction=0.5"]) == 0
    out = capsys.readouterr().out
    assert out.index("1. perfect: top1 1.000") < out.index("2. sly: top1 0.000")


def test_the_server_issues_tokens_and_then_needs_them(start, tmp_path, capsys):  # noqa: F811
    import os

    import yaml

    from cli import serve
    from test_server import write_truth

    teams = tmp_path / "teams.txt"
    teams.write_text("Alpha\nBeta Team\n\n")
    out = tmp_path / "tokens.yaml"
    assert serve.main(["--competition", str(write_truth(tmp_path / "c")), "--issue-tokens", str(teams),
                       "--tokens", str(out)]) == 0
    tokens = yaml.safe_load(out.read_text())
    assert sorted(tokens) == ["Alpha", "Beta Team"] and len(set(tokens.values())) == 2
    assert os.stat(out).st_mode & 0o077 == 0  # the organiser's eyes only
    printed = capsys.readouterr().out
    assert all(token in printed for token in tokens.values())
    port, _ = start(f"server.tokens={out}")
    assert post(port, dict(perfect(), groupname="Alpha"))[0] == 401
    headers = {"Authorization": f"Bearer {tokens['Alpha']}"}
    assert post(port, dict(perfect(), groupname="alpha"), headers=headers)[1]["groupname"] == "Alpha"
    assert post(port, dict(perfect(), groupname="Beta Team"), headers=headers)[0] == 401
    teams.write_text("Alpha\nALPHA\n")
    assert serve.main(["--competition", str(write_truth(tmp_path / "c")), "--issue-tokens", str(teams),
                       "--tokens", str(out)]) == 2


# ------------------------------------------------------------ issue 36: the attack run's findings, one by one

def post_from(port, body, source, headers=None):
    """POST a JSON body from the loopback address `source` (Linux lets a client bind any 127/8 address)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    data = json.dumps(body).encode()
    conn.request("POST", "/results/", body=data, headers={"Content-Length": str(len(data)), **(headers or {})})
    answer = conn.getresponse()
    status, text = answer.status, answer.read()
    conn.close()
    return status, json.loads(text)


@pytest.mark.parametrize("char", ["\u3164", "\u034f", "\u2800", "\u115f"])
def test_a_blank_or_invisible_character_makes_no_new_row(start, char):  # noqa: F811
    """'Cats' followed by a Hangul filler, a grapheme joiner, a Braille blank or a choseong filler read as 'Cats':
    each is refused by Unicode's properties, naming the character, and the board keeps one 'Cats'."""
    port, server = start()
    assert post(port, dict(perfect(), groupname="Cats"))[0] == 200
    status, answer = post(port, dict(perfect(), groupname="Cats" + char))
    assert status == 400 and f"U+{ord(char):04X}" in answer["message"]
    assert [t["team"] for t in get(port, "/leaderboard.json")[1]["teams"]] == ["Cats"]


def test_names_in_any_script_still_pass(start):  # noqa: F811
    port, _ = start()
    names = ["Zoë", "日本語", "Team 7", "équipe-α", "Team #1 (A&B)", "Ｔｅａｍ　Ｆｕｌｌ"]
    assert [post(port, dict(perfect(), groupname=n))[1].get("groupname") for n in names] == [
        "Zoë", "日本語", "Team 7", "équipe-α", "Team #1 (A&B)", "Team Full"]


def test_probing_the_answers_is_refused_and_learns_nothing_of_the_private_queries(start):  # noqa: F811
    """The attack run's probe: one-name submissions, query by query, under throwaway team names, each name from
    another loopback address. With the default settings the answers score only the public queries, and the
    per-client limits refuse the probe long before it could map even those."""
    port, server = start(course=False, truths=(TRUTH,))
    queries = list(TRUTH["queries"])
    public = set(server.served.public["toy"])
    private = set(queries) - public
    assert public and private  # the split is on by default
    answers = []
    for i, (name, query) in enumerate((g, q) for g in GALLERY for q in queries):  # 160 probes, 8 team names
        status, answer = post_from(port, {"groupname": f"probe{i // 20}", "images": {query: [name]}},
                                   f"127.0.0.{2 + i // 20}")
        answers.append((query, name, status, answer))
    scored = [a for a in answers if a[2] == 200]
    refused = [a for a in answers if a[2] != 200]
    assert len(scored) <= 40 and {a[2] for a in refused} == {429}
    assert all("server.new_teams_per_client" in a[3]["message"] or "server.daily_limit_per_client" in a[3]["message"]
               for a in refused)
    # every private query was probed with its right names, and no answer tells them from a wrong name's
    probed = {(q, n) for q, n, _, _ in scored}
    assert all((q, g) in probed for q in private for g in TRUTH["queries"][q])
    seen = {json.dumps({k: v for k, v in a.items() if k not in ("id", "groupname")}, sort_keys=True)
            for q, _, _, a in scored if q in private}
    assert len(seen) == 1 and json.loads(seen.pop())["results"]["top1"] == 0
    assert any(a["results"]["top1"] > 0 for q, _, _, a in scored if q in public)  # the probe reads the public part
    teams = get(port, "/leaderboard.json")[1]["teams"]
    assert len(teams) <= 2 and all(t["best"]["top1"] <= 1 / len(public) for t in teams)


def test_a_client_has_a_daily_limit_across_its_team_names(start):  # noqa: F811
    port, _ = start("server.daily_limit_per_client=3", "server.new_teams_per_client=0", course=False)
    assert [post_from(port, dict(perfect(), groupname=f"t{i}"), f"127.0.0.{2 + i}")[0] for i in range(3)] == [200] * 3
    status, answer = post_from(port, dict(perfect(), groupname="t9"), "127.0.0.9")
    assert status == 429 and "server.daily_limit_per_client" in answer["message"] and "loopback" in answer["message"]


def test_a_client_cannot_name_its_own_address(start):  # noqa: F811
    """uvicorn believes X-Forwarded-For from 127.0.0.1 by default: the server does not, so no per-address limit is
    dodged by naming another address."""
    port, server = start()
    assert post(port, perfect(), headers={"X-Forwarded-For": "203.0.113.9"})[0] == 200
    assert rows(server, "client") == [("127.0.0.1",)]


def test_a_body_keeps_only_what_scoring_needs(start):  # noqa: F811
    """Ten 9 MB submissions padded with a field the protocol lacks: each a 400 naming it. Padding JSON itself
    allows (white space, a query repeated) is scored, but only what was scored is kept: the database stays small."""
    port, server = start()
    images = json.dumps(perfect()["images"]).encode()
    for _ in range(10):
        status, answer = post(port, dict(perfect(), groupname="padder", pad="x" * 9_000_000))
        assert status == 400 and "field 'pad' is not part of a submission" in answer["message"]
    repeated = b", ".join(b'"q0.jpg": ' + json.dumps(GALLERY[:10]).encode() for _ in range(19_000))
    padded = [b'{"groupname": "padder",' + b" " * 9_000_000 + b'"images": ' + images + b"}",
              b'{"groupname": "padder", "images": {' + repeated + b", " + images[1:] + b"}"]
    for body in padded:
        assert len(body) > 8_000_000
        status, answer = post(port, body, raw=True)
        assert status == 200 and answer["results"]["top1"] == 1.0
    kept = rows(server, "status", "length(payload)", "payload_bytes")
    assert [r[0] for r in kept] == ["rejected"] * 10 + ["scored"] * 2
    assert all(r[1] <= 2048 for r in kept) and all(r[2] > 8_000_000 for r in kept)
    db = server.store.path
    assert sum(os.path.getsize(f) for f in (db, db + "-wal") if os.path.exists(f)) < 2_000_000


def test_thousands_of_teams_then_concurrent_new_names_are_never_a_500(start, tmp_path):  # noqa: F811
    """5,000 teams on the board, then 256 new names at once: each is one indexed look-up (EXPLAIN QUERY PLAN) outside
    the write transaction, and every one is scored (issue 36: past 4,096 names the look-alike check thrashed inside
    it, and 20 of 256 got a 500 'database is locked')."""
    from competition.submissions import SubmissionStore

    db = tmp_path / "many.db"
    SubmissionStore(db)
    with sqlite3.connect(db) as conn:  # inserted fast, as a database of many teams would hold them
        conn.executemany("INSERT INTO submissions (competition, team, received, status, http_status, payload_sha256, "
                         "top1, top5, top10, map, queries, missing, payload, payload_bytes, client) "
                         "VALUES ('toy', ?, ?, 'scored', 200, '', 0, 0, 0, 0, 4, 0, x'7b7d', 2, '127.0.0.1')",
                         [(f"team {i}", time.time()) for i in range(5000)])
    port, server = start("server.max_connections=300", "server.max_connections_per_client=300", db=db)
    with ThreadPoolExecutor(max_workers=64) as pool:
        answers = list(pool.map(lambda i: post(port, dict(perfect(), groupname=f"new {i}")), range(256)))
    assert [status for status, _ in answers] == [200] * 256
    assert server.store.count(status="scored") == 5256
    from competition.submissions import TEAM_LOOKUP

    conn = server.store.conn()
    assert conn.execute("SELECT COUNT(*) FROM teams").fetchone()[0] == 5256
    plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + TEAM_LOOKUP, ("toy", "key", "skeleton")))
    assert "USING INDEX teams_by_skeleton" in plan and "USING INDEX sqlite_autoindex_teams_1" in plan
    assert "SCAN" not in plan


def test_a_look_alike_named_in_the_meantime_is_a_400(tmp_path, monkeypatch):
    """Two look-alike new names at once: the one whose insert comes second meets the unique index on skeletons and
    is refused as a look-alike, never a 500."""
    from competition.submissions import Reject, SubmissionStore

    store = SubmissionStore(tmp_path / "race.db")
    looked_up = store.team

    def meanwhile(competition, name):
        found = looked_up(competition, name)
        if name == "Cats":  # after this look-up, before its insert, another submission takes a look-alike
            store.add("toy", "C\u0430ts", "scored", 200, b"{}", scores={}, client="127.0.0.9")
        return found

    monkeypatch.setattr(store, "team", meanwhile)
    with pytest.raises(Reject) as refused:
        store.add("toy", "Cats", "scored", 200, b"{}", scores={}, client="127.0.0.1")
    assert refused.value.status == 400 and "looks like the team 'C\u0430ts'" in refused.value.message


def test_a_busy_database_is_a_503_with_retry_after(start):  # noqa: F811
    port, server = start()
    store = server.store
    make = store.conn.make
    store.conn.make = lambda: _short_wait(make())
    store.conn.local = threading.local()  # the worker threads open their connections afresh, with a short wait
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        data = json.dumps(perfect()).encode()
        conn.request("POST", "/results/", body=data, headers={"Content-Length": str(len(data))})
        answer = conn.getresponse()
        assert answer.status == 503 and answer.getheader("Retry-After") == "1"
        assert "the database is busy" in json.loads(answer.read())["message"]
        conn.close()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert post(port, perfect())[0] == 200 and store.count() == 1


def _short_wait(conn):
    conn.execute("PRAGMA busy_timeout=100")
    return conn


def received(socks, enough, wait=10.0):
    """What the server sent on each socket that got a whole answer, waiting until `enough` of them did (or `wait` s)."""
    got, done = {s: b"" for s in socks}, {}
    deadline = time.monotonic() + wait
    while len(done) < enough and time.monotonic() < deadline:
        for sock in select.select([s for s in socks if s not in done], [], [], 0.1)[0]:
            try:
                chunk = sock.recv(4096)
            except ConnectionError:
                chunk = b""
            got[sock] += chunk
            if not chunk or b"\r\n\r\n" in got[sock] and got[sock].endswith(b"}"):
                done[sock] = got[sock]
    return done


@pytest.mark.parametrize("held_by", ["head", "body"])
def test_seventy_slow_sockets_from_seventy_addresses_do_not_lock_a_team_out(start, held_by):  # noqa: F811
    """70 sockets from 127.0.0.2 to 127.0.0.71, each trickling its head (or, its head sent, its body), with
    deadlines too long to help: a real team's 46 submissions all get through, making room by closing the oldest slow
    sockets (503), where before all 46 got a 503."""
    port, server = start("server.read_timeout=30", "server.header_timeout=30", "server.daily_limit=0")
    first = (b"POST /results/ HTTP/1.1\r\n" if held_by == "head" else
             b"POST /results/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    slow = []
    try:
        for i in range(70):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(f"127.0.0.{2 + i}", 0))
            sock.sendall(first)
            slow.append(sock)
        statuses = [post(port, dict(perfect(), groupname="real team"))[0] for _ in range(46)]
        assert statuses == [200] * 46
        # room was made for the last 6 slow sockets and the first submission (the next ones mostly found the room
        # their predecessor left, or took that of its connection, closing)
        answers = received(slow, enough=6 + 1)
        assert len(answers) >= 6 + 1
        assert all(data.startswith(b"HTTP/1.1 503") and b"to make room" in data for data in answers.values())
    finally:
        for sock in slow:
            sock.close()
    assert server.store.count(status="scored") == 46 and server.store.count(status="rejected") == 0


def test_the_request_head_has_its_own_short_deadline(start):  # noqa: F811
    """A trickled head is cut at server.header_timeout, long before server.read_timeout; a body may still take
    longer than the head's deadline."""
    port, server = start("server.header_timeout=0.5", "server.read_timeout=30")
    head = b"POST /results/ HTTP/1.1\r\nHost: test\r\n" + b"X-Slow: 1\r\n" * 30
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sent = trickle(sock, head, 0.1)
        closed, data = closed_within(sock, 10)
    assert sent < 100, "the head came a byte every 0.1 s for 10 s: only read_timeout (30 s) cut it"
    assert closed and data.startswith(b"HTTP/1.1 408") and b"server.header_timeout (0.5 s)" in data
    body = json.dumps(perfect()).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /results/ HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body))
        for part in (body[:20], body[20:40], body[40:]):  # over about 1.2 s: past the head's 0.5 s
            time.sleep(0.4)
            sock.sendall(part)
        closed, data = closed_within(sock, 10)
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


def test_serving_beyond_loopback_without_tokens_is_refused(tmp_path, capsys, monkeypatch):
    import competition.server
    from cli import serve

    def no_bind(*args, **kwargs):
        raise AssertionError(f"the server bound {args[0]} without tokens")

    monkeypatch.setattr(competition.server.socket, "create_server", no_bind)
    assert serve.main(["--competition", str(write_truth(tmp_path / "c")), "--host", "0.0.0.0", "--port", "0",
                       "--db", str(tmp_path / "x.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "server.host=0.0.0.0" in err and "without server.tokens" in err
    assert "--issue-tokens" in err


def test_the_bearer_scheme_is_read_in_any_case(start, tmp_path):  # noqa: F811
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("perfect: abc123\n")
    port, server = start(f"server.tokens={tokens}")
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        assert post(port, perfect(), headers={"Authorization": f"{scheme} abc123"})[0] == 200, scheme
    assert post(port, perfect(), headers={"Authorization": "Basic abc123"})[0] == 401
    assert post(port, perfect(), headers={"Authorization": "Bearerabc123"})[0] == 401
