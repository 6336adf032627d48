"""The search page's guards (webapp/guards.py, fields.py, uploads.py) against hostile or careless bodies: every request
it cannot use is a 4xx naming the field, never a 500, and never leaves the session in a state that fails later
requests."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from conftest import FACES  # noqa: E402
from test_api import client, photo  # noqa: E402,F401

SURROGATE = '"x\\ud800y"'  # JSON's escape of a lone surrogate: valid JSON, not a character


def raw(client, path: str, body: str):  # noqa: F811
    return client.post(path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("path, body, field", [
    ("/api/pick", '{"name": %s}', "name"),
    ("/api/names/search", '{"person": %s}', "person"),
    ("/api/names/learn", '{"person": %s}', "person"),
    ("/api/refine", '{"marks": {%s: true}}', "marks: a photo's name"),
    ("/api/refine", '{"method": %s}', "method"),
])
def test_a_lone_surrogate_is_a_400_naming_the_field_and_the_session_goes_on(client, path, body, field):  # noqa: F811
    first = client.post("/api/search", files=photo(FACES / "one_face.jpg")).json()
    r = raw(client, path, body % SURROGATE)
    assert r.status_code == 400 and r.json()["error"].startswith(f"{field}: a lone surrogate")
    after = client.post("/api/refine", json={"marks": {first["results"][0]["name"]: True}})
    assert after.status_code == 200 and after.json()["round"] == 2  # the failed request changed nothing
    assert client.get("/api/info").status_code == 200


@pytest.mark.parametrize("name, what", [("Al\x00ice", "the control character U+0000"),
                                        ("Al\u202eecila", "the bidirectional control U+202E"),
                                        ("Al\nice", "the control character U+000A")])
def test_a_learned_name_refuses_control_and_bidi_characters(client, name, what):  # noqa: F811
    first = client.post("/api/search", files=photo(FACES / "one_face.jpg")).json()
    r = client.post("/api/names/learn", json={"person": name, "marks": {first["results"][0]["name"]: True}})
    assert r.status_code == 400 and what in r.json()["error"]
    assert client.get("/api/info").json()["learned"] == []
    assert client.post("/api/refine", json={}).json()["marks"] == {}  # the marks of the refused request were not kept


def test_marks_have_size_limits(client):  # noqa: F811
    client.post("/api/search", files=photo(FACES / "one_face.jpg"))
    r = client.post("/api/refine", json={"marks": {"x" * 100_000: True}})
    assert r.status_code == 413 and "100,000 characters" in r.json()["error"]
    client.app.state.web.web = type(client.app.state.web.web)(max_marks=5)
    r = client.post("/api/refine", json={"marks": {f"p{i}.jpg": True for i in range(6)}})
    assert r.status_code == 413 and "at most 5 (web.max_marks)" in r.json()["error"]
    for i in range(5):
        assert client.post("/mark", data={"name": f"p{i}.jpg", "value": "relevant"}).status_code == 200
    r = client.post("/mark", data={"name": "p5.jpg", "value": "relevant"})
    assert r.status_code == 413
    assert len(client.post("/api/refine", json={}).json()["marks"]) == 5


def test_reading_makes_no_session_and_one_client_cannot_clear_the_others(client):  # noqa: F811
    svc = client.app.state.web
    mine = client.post("/api/search", files=photo(FACES / "one_face.jpg")).json()["session"]
    from fastapi.testclient import TestClient

    curl = TestClient(client.app)  # no Origin: reads need none
    for _ in range(30):  # cookie-less reads, as `curl /api/info` in a loop
        assert curl.get("/api/info").status_code == 200 and curl.get("/").status_code == 200
        assert not curl.cookies
    assert list(svc.sessions) == [mine]
    svc.web = type(svc.web)(max_sessions=10, max_sessions_per_client=3)
    other = TestClient(client.app, client=("10.0.0.9", 5000), headers={"origin": "http://testserver"})  # another address searching again and again
    for _ in range(12):
        other.cookies.clear()
        assert other.post("/api/search", files=photo(FACES / "one_face.jpg")).status_code == 200
    assert mine in svc.sessions and len(svc.sessions) == 4  # its 3 newest and mine
    assert client.post("/api/refine", json={}).json()["round"] == 2  # my search goes on


def test_a_change_needs_proof_it_comes_from_the_page(client):  # noqa: F811
    from fastapi.testclient import TestClient

    curl = TestClient(client.app)  # plain curl: no Origin, no Sec-Fetch-Site
    r = curl.delete("/api/photos/x.jpg")
    assert r.status_code == 403 and "Origin: http://testserver" in r.json()["error"]
    assert curl.post("/remove", data={"name": "x.jpg"}).status_code == 403
    assert curl.delete("/api/photos/x.jpg", headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert curl.delete("/api/photos/x.jpg", headers={"sec-fetch-site": "same-origin"}).status_code == 404
    assert curl.delete("/api/photos/x.jpg", headers={"origin": "http://testserver"}).status_code == 404
    # DNS rebinding: evil.example resolves to this machine, and the page calls itself evil.example
    r = curl.delete("/api/photos/x.jpg", headers={"host": "evil.example:8000", "origin": "http://evil.example:8000"})
    assert r.status_code == 400
    assert curl.get("/api/info", headers={"host": "evil.example:8000"}).status_code == 400
    assert client.get("/api/info").json()["photos"] == 16


def test_every_answer_keeps_other_sites_from_framing_it_and_docs_work_offline(client):  # noqa: F811
    for path in ("/", "/api/info", "/docs"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    docs = client.get("/docs").text
    assert "/static/swagger/swagger-ui-bundle.js" in docs and "cdn.jsdelivr" not in docs
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static/swagger/swagger-ui.css").status_code == 200
    assert client.get("/static/swagger/favicon.png").status_code == 200


def test_a_token_guards_changes_and_the_page_beyond_loopback(tmp_path_factory, tmp_path):
    import shutil
    from pathlib import Path

    from fastapi.testclient import TestClient

    from cli import web
    from test_web import tiny_store, web_cfg
    from utils import ConfigError

    root = Path(shutil.copytree(tiny_store(tmp_path_factory), tmp_path / "store"))
    with pytest.raises(ConfigError, match="web.token"):
        web.app_for(root, web_cfg("web.host=0.0.0.0"))
    with pytest.raises(ConfigError, match="web.allowed_hosts"):
        web.app_for(root, web_cfg("web.host=0.0.0.0", "web.token=s3cret", base=()))
    app = web.app_for(root, web_cfg("web.host=0.0.0.0", "web.token=s3cret"))
    try:
        with TestClient(app, headers={"origin": "http://testserver"}) as page:
            r = page.delete("/api/photos/x.jpg")
            assert r.status_code == 403 and "needs its token" in r.json()["error"]
            assert page.delete("/api/photos/x.jpg", headers={"authorization": "Bearer wrong"}).status_code == 403
            assert page.delete("/api/photos/x.jpg", headers={"authorization": "Bearer s3cret"}).status_code == 404
            for scheme in ("bearer", "BEARER"):  # one rule with the competition server's: the scheme's case is free
                assert page.delete("/api/photos/x.jpg", headers={"authorization": f"{scheme} s3cret"}).status_code == 404
            assert page.get("/login?token=wrong", follow_redirects=False).status_code == 403
            assert page.get("/login?token=s3cret", follow_redirects=False).status_code == 303
            assert page.delete("/api/photos/x.jpg").status_code == 404  # the browser's cookie carries it now
    finally:
        app.state.web.close()


def test_a_body_past_the_limit_is_a_json_413_on_the_api(client):  # noqa: F811
    limit = client.app.state.web.web
    size = int(limit.max_upload_bytes) * int(limit.max_files) + 2 ** 21
    r = client.post("/api/search", content=b"", headers={"content-length": str(size), "content-type": "image/jpeg"})
    assert r.status_code == 413 and r.headers["content-type"] == "application/json"
    assert f"{size:,} bytes" in r.json()["error"]


def png(width: int, height: int, color=(128, 128, 128)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def test_a_photo_with_no_face_is_refused_from_the_gallery_unless_asked(client):  # noqa: F811
    blank = {"photos": ("blank.png", png(1, 1), "image/png")}
    r = client.post("/api/photos", files=blank)
    assert r.status_code == 422 and "no face found in blank.png" in r.json()["error"]
    assert client.get("/api/info").json()["photos"] == 16
    r = client.post("/api/photos", files=blank, data={"allow_no_face": "true"})
    assert r.status_code == 200 and "stored as asked" in r.json()["notes"][0]
    assert client.get("/api/info").json()["photos"] == 17


def test_a_learned_name_can_be_forgotten_from_the_api_the_page_and_the_command(client, tmp_path):  # noqa: F811
    from cli import gallery

    first = client.post("/api/search", files=photo(FACES / "one_face.jpg")).json()
    marks = {first["results"][0]["name"]: True}
    for person in ("Ann", "Bob", "Cid"):
        assert client.post("/api/names/learn", json={"person": person, "marks": marks}).status_code == 200
        marks = {first["results"][1 + len(person) % 2]["name"]: True}
    r = client.delete("/api/names/Ann")
    assert r.status_code == 200 and "forgot the learned name 'Ann'" in r.json()["notes"][0]
    assert client.delete("/api/names/Ann").status_code == 404
    assert client.post("/name/forget", data={"person": "Bob"}).status_code == 200  # the page's form, back to the page
    assert client.get("/api/info").json()["learned"] == ["Cid"]
    root = client.app.state.web.root
    client.app.state.web.close()  # the command opens the store itself
    assert gallery.main(["forget", "--store", str(root), "Cid"]) == 0
    assert gallery.main(["forget", "--store", str(root), "Cid"]) == 2


def test_answers_leak_no_path_and_say_sizes_and_counts_right(client):  # noqa: F811
    svc = client.app.state.web
    info = client.get("/api/info").json()
    assert "/" not in info["checkpoint"] and "/" not in info["store"]
    r = client.post("/api/pick", json={"name": "nobody.jpg"})
    assert r.status_code == 404 and str(svc.root) not in r.json()["error"]
    limit = int(svc.web.max_upload_bytes)
    r = client.post("/api/search", files={"photo": ("big.png", b"\0" * (limit + 5000), "image/png")})
    assert r.status_code == 413 and f"more than {limit:,} bytes" in r.json()["error"]
    r = client.post("/api/search", files={"photo": ("Zoë_日本語.png", png(120, 120), "image/png")})
    assert "Zoë_日本語.png" in r.json().get("searched", r.json().get("error", ""))
    from webapp.uploads import safe_name

    assert safe_name("Zoë_日本語.jpg", ".jpg") == "Zoë_日本語.jpg" and safe_name("../../etc/x.jpg", ".jpg") == "x.jpg"
    assert safe_name("a\\b\\c d.png", ".png") == "c_d.png"


def test_a_pixel_bomb_names_the_settings_limit(client):  # noqa: F811
    from PIL import Image

    svc = client.app.state.web
    svc.web = type(svc.web)(max_pixels=10_000, allowed_hosts=["testserver"])
    Image.MAX_IMAGE_PIXELS = 10_000  # as `facematch web` sets it
    try:
        r = client.post("/api/search", files={"photo": ("bomb.png", png(400, 400), "image/png")})
    finally:
        Image.MAX_IMAGE_PIXELS = 89_478_485
    assert r.status_code == 413 and "more than 10,000 pixels" in r.json()["error"] and "80" not in r.json()["error"]


def test_later_rounds_do_not_repeat_the_first_rounds_decision(client):  # noqa: F811
    first = client.post("/api/search", files=photo(FACES / "one_face.jpg")).json()
    second = client.post("/api/refine", json={}).json()
    assert second["round"] == 2 and second["decision"] is None
    assert all(x["distance"] >= 0 and str(x["distance"]) != "-0.0" for x in first["results"] + second["results"])


def test_a_slow_upload_holds_neither_the_page_nor_more_than_its_queue(client):  # noqa: F811
    import threading

    from fastapi.testclient import TestClient

    svc = client.app.state.web
    svc.web = type(svc.web)(max_queued=1, allowed_hosts=["testserver"])
    svc.slots = threading.BoundedSemaphore(1)
    release, started = threading.Event(), threading.Event()
    real = svc.checked_files

    def slow(*args):
        started.set()
        release.wait(20)
        return real(*args)

    svc.checked_files = slow
    other = TestClient(client.app, headers={"origin": "http://testserver"})
    answers = []
    worker = threading.Thread(target=lambda: answers.append(
        other.post("/api/search", files=photo(FACES / "one_face.jpg")).status_code))
    worker.start()
    try:
        assert started.wait(20)
        assert client.get("/api/info").status_code == 200  # the store's worker is free
        assert client.post("/api/refine", json={}).status_code == 400  # a session action too ("nothing to refine")
        busy = client.post("/api/search", files=photo(FACES / "one_face.jpg"))
        assert busy.status_code == 503 and busy.headers["retry-after"] and "web.max_queued" in busy.json()["error"]
    finally:
        release.set()
        worker.join(30)
    assert answers == [200]
    assert client.post("/api/search", files=photo(FACES / "one_face.jpg")).status_code == 200


def test_a_huge_photo_is_read_at_the_size_a_face_needs():
    import io

    from PIL import Image

    from detection.images import MAX_SIDE, read_image

    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.new("RGB", (6000, 3000), (250, 250, 250)).save(buf, format=fmt)
        image = read_image(f"big.{fmt.lower()}", buf.getvalue())
        assert max(image.shape[:2]) <= MAX_SIDE and image.shape[1] == 2 * image.shape[0]


def asgi_post(app, path: str, body: bytes, chunk: int = 65536) -> dict:
    """POST `body` to the app as a server hands it over, `chunk` bytes a message and no Content-Length (chunked):
    the answer's status and body, and how many bytes the app pulled before it answered."""
    import asyncio

    pulled, sent = 0, {"status": None, "body": b""}
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"testserver"), (b"origin", b"http://testserver"),
                         (b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}

    async def receive():
        nonlocal pulled
        part = body[pulled:pulled + chunk]
        pulled += len(part)
        return {"type": "http.request", "body": part, "more_body": pulled < len(body)}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    return dict(sent, pulled=pulled)


def test_a_large_body_to_a_small_route_is_refused_before_it_is_read_whole(client):  # noqa: F811
    """169 MB of marks to /api/refine was read whole (16 s, the app blocked, +1.3 GB) before a 413: every route that
    takes no photo has its own small limit (web.max_body_bytes), said at once when declared, met while reading when
    not (a chunked body is read only up to it)."""
    limit = int(client.app.state.web.web.max_body_bytes)
    sessions = len(client.app.state.web.sessions)
    declared = client.post("/api/refine", content=b"", headers={"content-length": str(10 * limit),
                                                              "content-type": "application/json"})
    assert declared.status_code == 413 and "web.max_body_bytes" in declared.json()["error"]
    marks = b", ".join(b'"%d%s": true' % (i, b"x" * 65530) for i in range(800))  # 50 MB of marks
    answer = asgi_post(client.app, "/api/refine", b'{"marks": {' + marks + b"}}")
    assert answer["status"] == 413 and b"web.max_body_bytes" in answer["body"]
    assert answer["pulled"] < limit + 2 ** 17  # of the 50 MB offered, 64 KB at a time
    form = client.post("/refine", content=b"", headers={"content-length": str(10 * limit),
                                                      "content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 413 and "web.max_body_bytes" in form.text
    assert len(client.app.state.web.sessions) == sessions
    photo_limit = int(client.app.state.web.web.max_upload_bytes)
    assert client.post("/api/search", files=photo(FACES / "one_face.jpg")).status_code == 200 and photo_limit > limit


def test_many_addresses_together_cannot_wipe_a_clients_session(client):  # noqa: F811
    """Cookie-less requests from 6 addresses × 25 wiped another client's session (the cap was one list for all): past
    web.max_sessions the address holding the most loses its least recently used."""
    from fastapi.testclient import TestClient

    svc = client.app.state.web
    mine = client.post("/api/search", files=photo(FACES / "one_face.jpg")).json()["session"]
    assert int(svc.web.max_sessions) == 100 and int(svc.web.max_sessions_per_client) == 20
    for a in range(6):
        other = TestClient(client.app, client=(f"10.0.0.{a + 2}", 5000), headers={"origin": "http://testserver"})
        for _ in range(25):
            other.cookies.clear()
            assert other.post("/mark", data={"name": "x.jpg", "value": "relevant"}).status_code == 200
    assert mine in svc.sessions and len(svc.sessions) == 100
    assert client.post("/api/refine", json={}).json()["round"] == 2  # my search goes on


def test_a_refused_request_makes_no_session_and_sets_no_cookie(client):  # noqa: F811
    from fastapi.testclient import TestClient

    svc = client.app.state.web
    before = set(svc.sessions)
    stranger = TestClient(client.app, client=("10.0.0.99", 5000), headers={"origin": "http://testserver"})
    r = stranger.post("/api/refine", json={})
    assert r.status_code == 400 and "nothing to refine yet" in r.json()["error"]
    assert "set-cookie" not in r.headers and not stranger.cookies and set(svc.sessions) == before
    r = stranger.post("/refine", data={})
    assert r.status_code == 400 and "set-cookie" not in r.headers and set(svc.sessions) == before
    assert stranger.post("/mark", data={"name": "x.jpg", "value": "relevant"}).status_code == 200
    assert stranger.cookies and len(svc.sessions) == len(before) + 1  # a request that marks and succeeds makes one


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, proc, seconds: float = 120) -> None:
    """Until the page's /api/info answers 200 at `url`; fails with the server's output if `proc` dies or time runs
    out."""
    import time

    import httpx

    deadline = time.time() + seconds
    while True:
        try:
            if httpx.get(url + "/api/info", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-3000:]
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_no_uploaded_photo_outlives_the_process(tmp_path_factory, tmp_path, signal_name):
    """`facematch web` searched and added to, then stopped by SIGTERM or killed by SIGKILL: uploads were kept in
    /tmp/facematch-web-* (40 folders, 160 photos after a test run); now a searched photo is never written anywhere,
    and an added one only into the store. The process's temporary folder is empty after it, whichever way it ends."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    from test_web import tiny_store

    root = Path(shutil.copytree(tiny_store(tmp_path_factory), tmp_path / "store"))
    before = {p: p.stat().st_size for p in root.rglob("*") if p.is_file() and p.suffix != ".lock"}
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    port = free_port()
    env = dict(os.environ, TMPDIR=str(scratch), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "web", "--store", str(root), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, proc)
        with httpx.Client(base_url=url, headers={"origin": url}, timeout=60) as page:
            face = (FACES / "one_face.jpg").read_bytes()
            assert page.post("/api/search", files={"photo": ("secret.jpg", face)}).status_code == 200
            assert page.post("/api/photos", files={"photos": ("added.jpg", face)}).status_code == 200
            assert page.post("/api/search", files={"photo": ("again.jpg", face)}).status_code == 200
        proc.send_signal(getattr(signal, signal_name))
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert list(scratch.rglob("*")) == []
    after = [p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock" and p not in before]
    added = (root / "photos" / f"{__import__('hashlib').sha1(face).hexdigest()}.jpg")
    assert added in after and added.read_bytes() == face  # the add was acknowledged: it is kept
    assert all(p.parent.name in ("photos", "crops") or p.name.startswith("index") or p.name.startswith("store.sqlite")
               for p in after), after


@pytest.fixture
def bounded_page(tmp_path_factory, tmp_path):
    """The page over a copy of the tiny store, served by uvicorn within the web section's connection bounds
    (cli.web.server_config, as `facematch web` serves it) in a thread: (url, app); a head deadline of 0.5 s."""
    import shutil
    import socket
    import threading
    import time
    from pathlib import Path

    import uvicorn

    from cli import web
    from test_web import tiny_store, web_cfg

    root = Path(shutil.copytree(tiny_store(tmp_path_factory), tmp_path / "store"))
    cfg = web_cfg("web.header_timeout=0.5", "web.read_timeout=30", base=())
    app = web.app_for(root, cfg)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(web.server_config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    server.should_exit = True
    thread.join(10)
    sock.close()
    app.state.web.close()


@pytest.mark.slow
def test_trickling_sockets_from_many_addresses_hold_neither_the_page_nor_its_connections(bounded_page):
    """300 sockets trickling a byte a second stayed open 60 s (the page had no deadline for a request's head): now
    80 of them from 80 addresses, each trickling its request line, are cut at web.header_timeout (0.5 s here) or make
    room at web.max_connections (64), and a client whose requests come whole is served meanwhile."""
    import select
    import socket
    import time
    from urllib.parse import urlsplit

    import httpx

    from test_server import closed_within

    url, _ = bounded_page
    port = urlsplit(url).port
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(f"127.0.0.{2 + i}", 0))
            for i in range(80)]
    try:
        line = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"1" * 50
        answers = []
        for step in range(6):  # a byte from every slow socket, then a whole request, six times over about 1.2 s
            for sock in slow:
                if not select.select([sock], [], [], 0)[0]:
                    try:
                        sock.sendall(line[step:step + 1])
                    except ConnectionError:
                        pass
            answers.append(httpx.get(url + "/api/info", timeout=5).status_code)
            time.sleep(0.2)
        assert answers == [200] * 6
        ends = [closed_within(sock, 5) for sock in slow]
    finally:
        for sock in slow:
            sock.close()
    assert all(closed for closed, _ in ends)
    cut = [data for _, data in ends if data.startswith(b"HTTP/1.1 408")]
    made_room = [data for _, data in ends if data.startswith(b"HTTP/1.1 503")]
    assert len(cut) + len(made_room) == 80 and cut and made_room
    assert b"web.header_timeout (0.5 s)" in cut[0] and b"web.max_connections" in made_room[0]
