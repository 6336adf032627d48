"""The competition server over real HTTP on a free loopback port."""
from __future__ import annotations

import dataclasses
import http.client
import json
import os
import random
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cli import serve as srv
from competition.server import ServerSettings, load_competitions, make_server
from conftest import ROOT
from utils import ConfigError
from settings import load_config

GALLERY = [f"{i:040x}.jpg" for i in range(40)]
# Four queries; q0 matches g0 and g1, q1 matches g2, q2 matches g3..g5, q3 matches g6.
TRUTH = {"name": "toy", "queries": {"q0.jpg": GALLERY[0:2], "q1.jpg": GALLERY[2:3], "q2.jpg": GALLERY[3:6],
                                    "q3.jpg": GALLERY[6:7]}, "gallery": GALLERY}
FILLER = GALLERY[10:20]


def perfect():
    return {"groupname": "perfect", "images": {q: (good + FILLER)[:10] for q, good in TRUTH["queries"].items()}}


def write_truth(folder, truth=TRUTH):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ground_truth.json").write_text(json.dumps(truth))
    return folder / "ground_truth.json"


def post(port, body, path="/results/", headers=None, raw=False):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = body if raw else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Length": str(len(data)), **(headers or {})})
    answer = conn.getresponse()
    status, text = answer.status, answer.read()
    conn.close()
    return status, json.loads(text)


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    answer = conn.getresponse()
    status, text, ctype = answer.status, answer.read().decode(), answer.getheader("Content-Type")
    conn.close()
    return status, (json.loads(text) if "json" in ctype else text)


# The course server's rules: every query scored and shown, no limits per address (the tests here post from one
# address as many teams); tests/test_submissions.py serves with the defaults (course=False).
COURSE = ["server.public_fraction=1", "server.daily_limit_per_client=0", "server.new_teams_per_client=0"]


@pytest.fixture
def start(tmp_path):
    """Start servers in threads; each call returns (port, server)."""
    started = []

    def _start(*overrides, truths=(TRUTH,), db=None, course=True):
        paths = [write_truth(tmp_path / f"comp{i}", t) for i, t in enumerate(truths)]
        cfg = load_config(overrides=["server.port=0", f"server.db={db or tmp_path / 'server.db'}",
                                     *(COURSE if course else []), *overrides])
        server = make_server(ServerSettings(**cfg["server"]), load_competitions([str(p) for p in paths]))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server.socket.getsockname()[1], server

    yield _start
    for server in started:
        server.shutdown()
        server.server_close()


def test_perfect_submission_scores_one(start):
    port, server = start()
    status, answer = post(port, perfect())
    assert status == 200
    assert answer["results"] == {"top1": 1.0, "top5": 1.0, "top10": 1.0, "map": 1.0}
    assert answer["missing"] == 0 and answer["id"] == 1 and answer["competition"] == "toy"
    assert answer["warnings"] == []
    assert server.store.count(status="scored") == 1


def test_shuffled_submission_scores_the_expected_fractions(start):
    port, _ = start()
    images = {
        "q0.jpg": [GALLERY[0]] + FILLER[:9],                    # correct at 1: AP = (1/1)/2
        "q1.jpg": FILLER[:3] + [GALLERY[2]] + FILLER[3:9],       # correct at 4: AP = (1/4)/1
        "q2.jpg": FILLER[:7] + [GALLERY[3]] + FILLER[7:9],       # correct at 8: AP = (1/8)/3
        "q3.jpg": FILLER[:10],                                   # never: 0
    }
    status, answer = post(port, {"groupname": "shuffled", "images": images})
    assert status == 200
    r = answer["results"]
    assert r["top1"] == pytest.approx(1 / 4) and r["top5"] == pytest.approx(2 / 4)
    assert r["top10"] == pytest.approx(3 / 4)
    assert r["map"] == pytest.approx((1 / 2 + 1 / 4 + 1 / 24 + 0) / 4)


def test_missing_queries_count_as_wrong_and_are_reported(start):
    port, _ = start()
    images = {q: v for q, v in perfect()["images"].items() if q in ("q0.jpg", "q1.jpg", "q2.jpg")}
    status, answer = post(port, {"groupname": "partial", "images": images})
    assert status == 200 and answer["missing"] == 1 and "1 of 4 queries were missing" in answer["message"]
    assert answer["results"]["top1"] == pytest.approx(0.75)


def test_body_without_content_type_is_accepted(start):
    port, _ = start()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps(perfect()).encode()
    conn.putrequest("POST", "/results/", skip_accept_encoding=True)
    conn.putheader("Content-Length", str(len(body)))  # and nothing else: no Content-Type
    conn.endheaders(body)
    answer = conn.getresponse()
    assert answer.status == 200 and json.loads(answer.read())["results"]["top1"] == 1.0


def test_the_course_sample_client_is_scored_with_warnings(start):
    """The original course's client: 5 names per query, one name twice, requests.post(url, json.dumps(data))."""
    import requests

    port, server = start()
    g, f = GALLERY, FILLER
    data = {"groupname": "course", "images": {
        "q0.jpg": [g[0], f[0], g[0], f[1], g[1]],  # matches g0 and g1; g0 again at 3
        "q1.jpg": [f[0], f[1], f[2], f[3], g[2]],  # matches g2
        "q2.jpg": [g[3], f[0], f[1], f[2], f[3]],  # matches g3, g4, g5
        "q3.jpg": [f[0], f[1], f[2], f[3], f[4]],  # matches g6
    }}
    answer = requests.post(f"http://127.0.0.1:{port}/results/", json.dumps(data), timeout=10)
    assert answer.request.headers.get("Content-Type") is None
    assert answer.status_code == 200
    result = answer.json()
    # By hand. Correct names at rank 1 for q0 and q2, within 5 for q0, q1 and q2; only 5 names
    # were sent, so top-10 = top-5. The repeated g0 at rank 3 is no match and keeps its slot, so
    # q0's hits are at ranks 1 and 5: AP(q0) = (1/1 + 2/5) / 2 = 0.7 (counting the repeat would
    # give (1 + 2/3 + 3/5) / 2 > 1; dropping it would move g1 to rank 4 and give 0.75).
    # AP(q1) = (1/5) / 1 = 0.2, AP(q2) = (1/1) / 3 = 1/3, AP(q3) = 0.
    assert result["results"] == pytest.approx({"top1": 0.5, "top5": 0.75, "top10": 0.75,
                                               "map": (0.7 + 0.2 + 1 / 3 + 0) / 4})
    assert result["warnings"] == [
        "1 query listed a gallery name more than once; repeats were ignored",
        "4 queries had fewer than 10 gallery names; they were scored on what was sent"]
    stored, = server.store.conn().execute("SELECT payload FROM submissions WHERE id = ?", (result["id"],)).fetchone()
    assert stored == json.dumps(data).encode()  # kept as sent, repeat included


def test_request_send_client_talks_to_the_server(start):
    from request_send import submit

    port, _ = start()
    answer = submit(perfect(), f"http://127.0.0.1:{port}/results/", timeout=10, retries=0)
    assert answer["results"]["map"] == 1.0


BAD = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"images": perfect()["images"]}).encode(), 400, "groupname"),
    (json.dumps({"groupname": "t"}).encode(), 400, "'images' is missing"),
    (json.dumps({"groupname": "t", "images": {}}).encode(), 400, "empty"),
    (json.dumps({"groupname": "t", "images": {"q9.jpg": GALLERY[:10]}}).encode(), 400, "'q9.jpg' is not in this competition"),
    (json.dumps({"groupname": "t", "images": {"q0.jpg": ["x.jpg"] + GALLERY[:9]}}).encode(), 400, "'x.jpg' is not a gallery photo"),
    (json.dumps({"groupname": "t", "images": {"q0.jpg": GALLERY[:11]}}).encode(), 400, "11 gallery names, at most 10"),
    # a repeat is tolerated, but not as a way round the other rules
    (json.dumps({"groupname": "t", "images": {"q0.jpg": GALLERY[:10] + GALLERY[:1]}}).encode(), 400, "11 gallery names, at most 10"),
    (json.dumps({"groupname": "t", "images": {"q0.jpg": ["x.jpg", "x.jpg"]}}).encode(), 400, "'x.jpg' is not a gallery photo"),
    (json.dumps({"groupname": "t", "images": {"q9.jpg": GALLERY[:1] * 2}}).encode(), 400, "'q9.jpg' is not in this competition"),
    (json.dumps({"groupname": "t", "images": {"q0.jpg": "g0"}}).encode(), 400, "expected a list"),
    (json.dumps({"groupname": 5, "images": perfect()["images"]}).encode(), 400, "groupname"),
    # bodies the parser itself cannot turn into values are the client's error too, never a 500
    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    (b'{"groupname": "t", "images": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, "nested too deeply"),
    (b'{"groupname": "t", "images": {"q0.jpg": ' + b"[" * 500 + b"]" * 500 + b"}}", 400, "expected a list"),
    (json.dumps({"groupname": "t", "images": {"q0.jpg": [["g0"], {"a": 1}]}}).encode(), 400, "expected a list"),
    (json.dumps({"groupname": ["t"], "images": perfect()["images"]}).encode(), 400, "groupname"),
    (json.dumps({"groupname": "t", "images": [["q0.jpg", GALLERY[:10]]]}).encode(), 400, "'images' is missing or not a mapping"),
    (b'{"groupname": "t", "images": {"q0.jpg": [1e999]}}', 400, "overflows"),
    (b'{"groupname": "t", "n": ' + b"9" * 5_000 + b', "images": {}}', 400, "not valid JSON"),
    (b'{"groupname": NaN, "images": {}}', 400, "NaN is not a JSON number"),
    (b'{"groupname": "t", "images": {"q0.jpg": [-Infinity]}}', 400, "-Infinity is not a JSON number"),
    (b'\xff\xfe{"groupname"', 400, "not valid JSON"),
]


@pytest.mark.parametrize("body,status,message", BAD)
def test_bad_input_gets_a_4xx_naming_the_problem_and_leaves_no_score(start, body, status, message):
    port, server = start()
    got, answer = post(port, body, raw=True)
    assert got == status and message in answer["message"]
    assert server.store.count(status="scored") == 0
    assert server.store.count(status="rejected", http_status=status) == 1  # kept as a rejected attempt
    assert get(port, "/leaderboard.json")[1]["teams"] == []


def test_body_size_limit_and_unknown_paths(start):
    port, server = start("server.max_body_bytes=200")
    status, answer = post(port, perfect())
    assert status == 413 and "limit is 200" in answer["message"]
    assert server.store.count(status="scored") == 0
    assert post(port, perfect(), path="/competitions/nope/results/")[0] == 404
    assert get(port, "/nothing")[0] == 404


def _post_requests(url: str, data: bytes) -> tuple[int, dict, dict]:
    import requests

    answer = requests.post(url, data=data, timeout=30)
    return answer.status_code, answer.json(), dict(answer.headers)


def _post_urllib(url: str, data: bytes) -> tuple[int, dict, dict]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


@pytest.mark.parametrize("client", [_post_requests, _post_urllib], ids=["requests", "urllib"])
@pytest.mark.parametrize("size", [201, 4_000_000])
def test_an_oversized_body_gets_its_413_in_a_standard_client(start, client, size):
    """Standard clients send the whole body before they read the answer: the server answers and
    drains the body; closing on unread bytes would reset the connection (urllib: a broken pipe)."""
    port, server = start("server.max_body_bytes=200")
    url = f"http://127.0.0.1:{port}/results/"
    status, answer, headers = client(url, b"x" * size)
    assert status == 413 and answer["message"] == f"the body is {size} bytes; the limit is 200"
    assert headers["Connection"] == "close"
    assert server.store.count(status="rejected", http_status=413) == 1 and server.store.count(status="scored") == 0
    # and the server goes on serving
    fits = json.dumps({"groupname": "t", "images": {"q0.jpg": GALLERY[:2]}}).encode()
    assert client(url, fits)[0] == 200


def test_named_competitions(start):
    other = {"name": "second", "queries": {"a.jpg": GALLERY[:1]}, "gallery": GALLERY}
    port, server = start(truths=(TRUTH, other))
    assert post(port, perfect())[1]["competition"] == "toy"  # the first is the default
    status, answer = post(port, {"groupname": "t", "images": {"a.jpg": GALLERY[:10]}}, path="/competitions/second/results/")
    assert status == 200 and answer["competition"] == "second" and answer["results"]["top1"] == 1.0
    assert post(port, {"groupname": "t", "images": {"a.jpg": GALLERY[:10]}})[0] == 400  # not a query of 'toy'
    assert [t["team"] for t in get(port, "/competitions/second/leaderboard.json")[1]["teams"]] == ["t"]


def test_leaderboard_best_latest_and_html(start):
    port, _ = start()
    weak = {"groupname": "<b>team</b>", "images": {q: FILLER for q in TRUTH["queries"]}}
    post(port, perfect())
    post(port, weak)
    better = perfect()
    better["groupname"] = "<b>team</b>"
    post(port, better)
    post(port, weak)
    teams = get(port, "/leaderboard.json")[1]["teams"]
    assert [t["team"] for t in teams] == ["perfect", "<b>team</b>"]  # a tie on scores: the earlier best wins
    t = teams[1]
    assert t["submissions"] == 3 and t["best"]["top1"] == 1.0 and t["latest"]["top1"] == 0.0
    assert t["best"]["id"] == 3 and t["latest"]["id"] == 4
    status, page = get(port, "/")
    assert status == 200 and "&lt;b&gt;team&lt;/b&gt;" in page and "<b>team</b>" not in page
    assert "perfect" in page and "toy" in page


def test_tokens(start, tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("perfect: abc123\nother: zzz999\n")
    port, server = start(f"server.tokens={tokens}")
    assert post(port, perfect())[0] == 401
    assert post(port, perfect(), headers={"Authorization": "Bearer wrong"})[0] == 401
    status, answer = post(port, perfect(), headers={"Authorization": "Bearer zzz999"})
    assert status == 401 and "not 'perfect'" in answer["message"]
    assert server.store.count() == 0  # unauthenticated attempts are not stored at all
    assert post(port, perfect(), headers={"Authorization": "Bearer abc123"})[0] == 200
    assert server.store.count(status="scored", team="perfect") == 1


def test_rate_limit_and_cap(start):
    port, server = start("server.rate_limit=2", "server.rate_window=60")
    assert [post(port, perfect())[0] for _ in range(3)] == [200, 200, 429]
    assert server.store.count(status="scored") == 2 and server.store.count(http_status=429) == 1
    other = dict(perfect(), groupname="other")
    assert post(port, other)[0] == 200  # limits are per team
    port2, server2 = start("server.max_submissions=1", db=server.store.path + ".2")
    assert post(port2, perfect())[0] == 200
    status, answer = post(port2, perfect())
    assert status == 429 and "all 1 submissions" in answer["message"]


def test_fifty_concurrent_submissions_are_all_stored_once(start):
    port, server = start("server.max_connections_per_client=64", "server.daily_limit=0")

    def one(i):
        body = dict(perfect(), groupname=f"team{i % 7}")
        return post(port, body)

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(one, range(50)))
    assert all(status == 200 for status, _ in answers)
    ids = [a["id"] for _, a in answers]
    assert len(set(ids)) == 50
    assert server.store.count(status="scored") == 50
    teams = get(port, "/leaderboard.json")[1]["teams"]
    assert sum(t["submissions"] for t in teams) == 50 and len(teams) == 7


def closed_within(sock, seconds):
    """Whether the server closes `sock` (EOF or reset) within `seconds`; what it sent before, if anything."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionError:
        pass
    except TimeoutError:
        return False, data
    return True, data


def test_idle_connections_neither_delay_others_nor_stay_open(start):
    import requests

    port, server = start("server.read_timeout=1", "server.max_connections=64", "server.max_connections_per_client=64")
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
    try:
        started = time.monotonic()
        answer = requests.post(f"http://127.0.0.1:{port}/results/", json.dumps(perfect()), timeout=10)
        assert answer.status_code == 200 and answer.json()["results"]["top1"] == 1.0
        assert time.monotonic() - started < 5
        # read_timeout (1 s) after they opened, the server closes every one of them
        assert all(closed_within(sock, 1 + 5)[0] for sock in idle)
    finally:
        for sock in idle:
            sock.close()


def test_a_trickled_body_is_cut_off_by_the_read_timeout_and_not_stored(start):
    port, server = start("server.read_timeout=1")
    body = json.dumps(perfect()).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(b"POST /results/ HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body))
        sent = 0
        while sent < 60 and not select.select([sock], [], [], 0)[0]:  # until the server answers or closes
            try:
                sock.sendall(body[sent:sent + 1])
            except ConnectionError:
                break
            sent += 1
            time.sleep(0.1)
        assert sent < 60  # cut off while still trickling (6 s), though every byte came within 0.1 s
        closed, data = closed_within(sock, 5)
        assert closed and (data == b"" or data.startswith(b"HTTP/1.1 408"))
    finally:
        sock.close()
    assert server.store.count() == 0
    status, answer = post(port, perfect())
    assert status == 200 and answer["results"]["top1"] == 1.0


def test_a_body_cut_short_by_the_client_is_not_stored(start):
    port, server = start()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /results/ HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n" + b"{" * 10)
        sock.shutdown(socket.SHUT_WR)
        closed, data = closed_within(sock, 5)
    assert closed and data.startswith(b"HTTP/1.1 400") and b"the body ended after 10 of 100 bytes" in data
    assert server.store.count() == 0


@pytest.fixture
def in_hand(monkeypatch):
    """Submissions held while their answers are being worked out: each one that arrives releases `entered`; all go
    on once `release` is set (at the latest when the test ends)."""
    import competition.server as server_module

    entered, release = threading.Semaphore(0), threading.Event()
    real = server_module.score_and_store

    def held(*args, **kwargs):
        entered.release()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module, "score_and_store", held)
    yield entered, release
    release.set()


def test_at_the_cap_a_newcomer_gets_a_quick_503_when_every_request_is_in_hand(start, in_hand):
    entered, release = in_hand
    port, server = start("server.max_connections=2", "server.read_timeout=10")
    with ThreadPoolExecutor(max_workers=2) as pool:
        working = [pool.submit(post, port, perfect()) for _ in range(2)]
        assert entered.acquire(timeout=10) and entered.acquire(timeout=10)  # both requests are in hand
        with socket.create_connection(("127.0.0.1", port)) as third:
            closed, data = closed_within(third, 3)  # well before the held ones' read_timeout
        assert closed and data.startswith(b"HTTP/1.1 503") and b"server.max_connections" in data
        assert b"each with its request in hand" in data and b"Retry-After: 1" in data
        release.set()
        assert [f.result()[0] for f in working] == [200, 200]  # the requests in hand were not cut


def test_at_the_cap_the_oldest_connection_without_a_request_makes_room(start):
    """Idle connections at the cap do not keep a newcomer out (issue 36): the oldest of them is answered 503 and
    closed, the newcomer served, however long the deadlines."""
    port, server = start("server.max_connections=2", "server.read_timeout=30", "server.header_timeout=30")
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        held[1].sendall(b"POST /results/ HTTP/1.1\r\n")  # the younger one has begun its head
        assert post(port, perfect())[0] == 200
        closed, data = closed_within(held[0], 5)
        assert closed and data.startswith(b"HTTP/1.1 503") and b"to make room" in data
        assert b"server.max_connections" in data
    finally:
        for sock in held:
            sock.close()


def trickle(sock, data, every):
    """Send `data` a byte every `every` s until the server answers or closes; how many bytes went."""
    sent = 0
    while sent < len(data) and not select.select([sock], [], [], 0)[0]:
        try:
            sock.sendall(data[sent:sent + 1])
        except ConnectionError:
            break
        sent += 1
        time.sleep(every)
    return sent


def test_trickled_headers_are_cut_off_by_the_read_timeout(start):
    """uvicorn alone keeps a connection that trickles its headers open for ever (any byte resets its
    keep-alive timer); the request deadline closes it, with a 408, and the server goes on serving."""
    port, server = start("server.read_timeout=1")
    head = b"POST /results/ HTTP/1.1\r\nHost: test\r\n" + b"X-Slow: 1\r\n" * 10 + b"Content-Length: 2\r\n\r\n{}"
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        started = time.monotonic()
        sent = trickle(sock, head, 0.1)
        assert sent < 60, "every header byte came within 0.1 s, yet the headers must be cut off (6 s)"
        closed, data = closed_within(sock, 5)
        assert closed and (data == b"" or data.startswith(b"HTTP/1.1 408"))
        assert time.monotonic() - started < 1 + 2
    finally:
        sock.close()
    assert server.store.count() == 0
    assert post(port, perfect())[0] == 200


def test_the_deadline_covers_headers_and_body_together(start):
    """Headers slow but in time, then a body slow but in time on its own: the whole request is late,
    and it is cut off read_timeout after it began, not read_timeout after its headers."""
    port, server = start("server.read_timeout=2")
    body = json.dumps(perfect()).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        started = time.monotonic()
        sock.sendall(b"POST /results/ HTTP/1.1\r\nHost: test\r\n")
        time.sleep(1.5)
        sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body))
        trickle(sock, body, 0.1)
        closed, data = closed_within(sock, 5)
        assert closed and (data == b"" or data.startswith(b"HTTP/1.1 408"))
        assert time.monotonic() - started < 2 + 1  # the body alone would have had until 3.5 s
    finally:
        sock.close()
    assert server.store.count() == 0


def test_each_request_on_a_kept_connection_has_its_own_deadline(start):
    port, _ = start("server.read_timeout=1.5")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(3):  # 0.8 s apart: 2.4 s on one connection, each request in time
            conn.request("GET", "/health")
            answer = conn.getresponse()
            assert answer.status == 200 and answer.getheader("Connection") is None
            answer.read()
            time.sleep(0.8)
        closed, _ = closed_within(conn.sock, 1.5 + 2)  # then idle: closed after read_timeout
        assert closed
    finally:
        conn.close()


@pytest.mark.slow
def test_a_client_that_never_reads_its_answers_is_dropped(start):
    """Requests sent back to back, answers never read: once they pile up past the deadline the
    connection is dropped (asyncio's close() alone would wait for them to be read, for ever)."""
    port, server = start("server.read_timeout=1")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    started, dropped = time.monotonic(), False
    try:
        while not dropped and time.monotonic() - started < 30:
            try:
                sock.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n" * 100)
            except BlockingIOError:
                time.sleep(0.05)
            except ConnectionError:
                dropped = True
    finally:
        sock.close()
    assert dropped
    assert post(port, perfect())[0] == 200


def test_max_connections_are_all_served(start):
    """max_connections counts the connection asking (uvicorn's limit_concurrency=N serves N-1)."""
    port, _ = start("server.max_connections=3", "server.read_timeout=10")
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        time.sleep(0.2)
        assert post(port, perfect())[0] == 200
    finally:
        for sock in held:
            sock.close()


def test_a_standard_client_over_the_limit_reads_its_503(start, in_hand):
    """The refused connection is answered, half-closed and read for a moment: a client that sends
    its whole request before it reads (requests) gets the 503, not a reset."""
    import requests

    entered, release = in_hand
    port, _ = start("server.max_connections=1", "server.read_timeout=10")
    with ThreadPoolExecutor(max_workers=1) as pool:
        working = pool.submit(post, port, perfect())
        assert entered.acquire(timeout=10)
        answer = requests.post(f"http://127.0.0.1:{port}/results/", json.dumps(perfect()), timeout=10)
        release.set()
        assert working.result()[0] == 200
    assert answer.status_code == 503 and "server.max_connections" in answer.json()["message"]
    assert answer.headers["Retry-After"] == "1"


def test_paths_with_or_without_the_trailing_slash_and_head(start):
    port, _ = start()
    assert post(port, perfect(), path="/results")[0] == 200
    assert post(port, perfect(), path="/competitions/toy/results")[0] == 200
    assert get(port, "/leaderboard.json/")[0] == 200
    assert get(port, "/health")[1]["competitions"] == ["toy"]
    status, answer = post(port, perfect(), path="/")
    assert status == 404 and "POST /results/" in answer["message"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("HEAD", "/")
    head = conn.getresponse()
    assert head.status == 200 and head.getheader("Content-Type") == "text/html; charset=utf-8"
    assert int(head.getheader("Content-Length")) > 0 and head.read() == b""
    conn.close()


def test_a_failure_is_a_json_500_that_says_nothing_was_stored(start, monkeypatch):
    port, server = start()

    def full_disk(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(server.store, "add", full_disk)
    status, answer = post(port, perfect())
    assert status == 500 and answer["message"] == "internal error, the submission was not stored: database or disk is full"
    monkeypatch.undo()
    assert server.store.count() == 0 and post(port, perfect())[0] == 200  # and it goes on serving


def test_server_settings_are_the_config_server_section():
    """ServerSettings has one field per key of config/default.yaml's server section, same defaults."""
    section = load_config()["server"]
    assert [f.name for f in dataclasses.fields(ServerSettings)] == list(section)
    assert ServerSettings(**section) == ServerSettings()


@pytest.mark.parametrize("key,value", [("read_timeout", 0), ("read_timeout", -1), ("max_connections", 0),
                                       ("max_connections", 2.5)])
def test_bad_server_settings_are_refused_by_name(start, key, value):
    with pytest.raises(ConfigError, match=rf"server\.{key}'? (is {value}; it must be|must be a positive)"):
        start(f"server.{key}={value}")


def test_server_killed_and_restarted_keeps_every_acknowledged_submission(tmp_path):
    truth = write_truth(tmp_path / "comp")
    db = tmp_path / "kill.db"

    def launch():
        # port 0: the server binds a free port itself and prints it (a port picked here and bound
        # there could be taken by someone else in between)
        proc = subprocess.Popen([sys.executable, "-m", "cli.serve", "--competition", str(truth),
                                 "--port", "0", "--db", str(db), *COURSE], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = proc.stdout.readline()
        match = re.search(r"facematch server on http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        return proc, int(match.group(1))

    proc, port = launch()
    acknowledged = []
    rng = random.Random(0)
    for i in range(20):
        body = perfect() if i % 2 else {"groupname": f"t{i % 3}", "images": {q: rng.sample(GALLERY, 10) for q in TRUTH["queries"]}}
        status, answer = post(port, body)
        assert status == 200
        acknowledged.append(answer["id"])
    board = get(port, "/leaderboard.json")[1]
    os.kill(proc.pid, signal.SIGKILL)  # no shutdown, no final commit
    proc.wait()
    proc, port = launch()
    try:
        assert get(port, "/leaderboard.json")[1] == board
        assert post(port, perfect())[1]["id"] == max(acknowledged) + 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_bad_competition_file_fails_at_start(tmp_path, capsys):
    bad = tmp_path / "gt.json"
    bad.write_text('{"queries": {"q": ["missing.jpg"]}, "gallery": []}')
    assert srv.main(["--competition", str(bad), "--port", "0", "--db", str(tmp_path / "x.db")]) == 2
    assert "query 'q'" in capsys.readouterr().err
