"""Payload validation and submission over real HTTP to a small server started by the test."""
from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import request_send
from request_send import PayloadError, SubmissionError, build_payload, submit, validate_payload

GALLERY = {f"{i:040x}.jpg" for i in range(20)}


def good_payload(k=10):
    names = sorted(GALLERY)
    return build_payload("team", ["q1.jpg", "q2.jpg"], [names[:k], names[5:5 + k]])


def test_valid_payload_passes_and_comes_back_as_team_lists_and_no_warnings():
    names = sorted(GALLERY)
    team, images, warnings = validate_payload(good_payload(), GALLERY, 10)
    assert team == "team" and warnings == []
    assert images == {"q1.jpg": names[:10], "q2.jpg": names[5:15]}
    short = good_payload(k=3)  # fewer names than k: accepted, not exact, and said
    team, images, warnings = validate_payload(short, GALLERY, 10, exact=False)
    assert images["q1.jpg"] == names[:3] and warnings == ["2 queries had fewer than 10 gallery names; they were scored on what was sent"]


@pytest.mark.parametrize("mutate,message", [
    (lambda p: p["images"]["q1.jpg"].pop(), "q1.jpg': 9 gallery names, expected 10"),
    (lambda p: p["images"]["q1.jpg"].__setitem__(1, p["images"]["q1.jpg"][0]), r"q1.jpg': '0{40}\.jpg' is listed more than once"),
    (lambda p: p["images"]["q2.jpg"].__setitem__(0, "elsewhere.jpg"), "'elsewhere.jpg' is not a gallery photo"),
    (lambda p: p.pop("groupname"), "groupname"),
    (lambda p: p.__setitem__("images", {}), "images"),
    (lambda p: p["images"].__setitem__("q3.jpg", "abc"), "q3.jpg"),
])
def test_malformed_payload_is_refused_naming_the_problem(mutate, message):
    payload = good_payload()
    mutate(payload)
    with pytest.raises(PayloadError, match=message.replace("(", r"\(")):
        validate_payload(payload, GALLERY, 10)


class Scripted(BaseHTTPRequestHandler):
    """Answers POSTs from a script of (status, body) pairs and records what it received."""
    script: list = []
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append((self.path, dict(self.headers), body))
        status, answer = type(self).script.pop(0) if type(self).script else (200, {"results": {}})
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("Handler", (Scripted,), {"script": [], "received": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/results/"
    httpd.shutdown()
    httpd.server_close()


def test_submit_success_sends_raw_json(server):
    handler, url = server
    handler.script = [(200, {"results": {"top1": 0.5, "top5": 1.0, "top10": 1.0}})]
    answer = submit(good_payload(), url, timeout=5, retries=2, backoff=0)
    assert answer["results"]["top1"] == 0.5
    path, headers, body = handler.received[0]
    assert path == "/results/" and json.loads(body) == good_payload()


def test_submit_retries_after_500_then_succeeds(server):
    handler, url = server
    handler.script = [(500, {"message": "busy"}), (503, {"message": "busy"}), (200, {"results": {"top1": 1.0}})]
    answer = submit(good_payload(), url, timeout=5, retries=3, backoff=0)
    assert answer["results"]["top1"] == 1.0 and len(handler.received) == 3


def test_submit_gives_up_after_repeated_500(server):
    handler, url = server
    handler.script = [(500, {"message": "database locked"})] * 5
    with pytest.raises(SubmissionError, match="500 after 3 tries: database locked"):
        submit(good_payload(), url, timeout=5, retries=2, backoff=0)
    assert len(handler.received) == 3


def test_submit_does_not_retry_a_400(server):
    handler, url = server
    handler.script = [(400, {"message": "query 'q9.jpg' is not in the competition"})]
    with pytest.raises(SubmissionError, match="rejected the submission \\(400\\): query 'q9.jpg'"):
        submit(good_payload(), url, timeout=5, retries=3, backoff=0)
    assert len(handler.received) == 1


def test_submit_sends_the_bearer_token(server):
    handler, url = server
    submit(good_payload(), url, timeout=5, retries=0, token="s3cret")
    assert handler.received[0][1]["Authorization"] == "Bearer s3cret"


def test_server_down_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the request: nobody listens here
    with pytest.raises(SubmissionError, match=f"could not reach the server at http://127.0.0.1:{port}/results/ after 2 tries"):
        submit(good_payload(), f"http://127.0.0.1:{port}/results/", timeout=2, retries=1, backoff=0)


def test_resend_a_saved_payload_and_refuse_a_malformed_one(server, tmp_path, capsys):
    handler, url = server
    handler.script = [(200, {"results": {"top1": 0.25, "top5": 0.5, "top10": 0.75}})]
    saved = tmp_path / "submission.json"
    saved.write_text(json.dumps(good_payload()))
    assert request_send.main(["--payload", str(saved), f"submit.url={url}", "submit.retries=0"]) == 0
    assert "top1=0.250" in capsys.readouterr().out
    bad = good_payload()
    bad["images"]["q1.jpg"] = bad["images"]["q1.jpg"][:3]
    saved.write_text(json.dumps(bad))
    assert request_send.main(["--payload", str(saved), f"submit.url={url}"]) == 2
    assert len(handler.received) == 1  # the malformed payload was never sent


@pytest.mark.parametrize("mutate,message", [
    (lambda names: names.__setitem__(4, names[2]), "query 'q2.jpg': '.*' is listed more than once"),
    (lambda names: names.pop(), "query 'q2.jpg': 9 gallery names, expected 10"),
])
def test_resend_refuses_repeats_and_short_lists_naming_the_query(server, tmp_path, capsys, mutate, message):
    handler, url = server
    bad = good_payload()
    mutate(bad["images"]["q2.jpg"])
    saved = tmp_path / "submission.json"
    saved.write_text(json.dumps(bad))
    assert request_send.main(["--payload", str(saved), f"submit.url={url}"]) == 2
    assert re.search(f"{re.escape(str(saved))}: {message}", capsys.readouterr().err)
    assert handler.received == []  # never sent, though the server would accept it
