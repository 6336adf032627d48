"""Both servers fuzzed with Hypothesis (issue 28): whatever the body, JSON, text or multipart, the answer is never a
500 and the server goes on serving. A bounded number of examples, so CI stays quick; a failure prints the body."""
from __future__ import annotations

import json
from urllib.parse import quote

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (make venv installs it)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from test_api import client  # noqa: E402,F401
from test_server import GALLERY, TRUTH, perfect  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=True)
# every code point, lone surrogates, controls and bidirectional overrides included
TEXT = st.text(st.characters(exclude_categories=()), max_size=40) | st.sampled_from(
    ["", " ", "\x00", "\u202e", "\u200b", "x\ud800y", "../../etc/passwd", "%2e%2e%2f", GALLERY[0], "q0.jpg"])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5), max_leaves=20)


def submission() -> st.SearchStrategy:
    """Bodies near a real submission: its fields present but of any shape and text."""
    images = st.dictionaries(TEXT | st.sampled_from(list(TRUTH["queries"])),
                             st.lists(TEXT | st.sampled_from(GALLERY), max_size=12) | JSON, max_size=5)
    return st.fixed_dictionaries({"groupname": TEXT | JSON, "images": images | JSON}) | JSON


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    from competition.server import ServerSettings, create_app
    from competition.submissions import SubmissionStore

    db = tmp_path_factory.mktemp("fuzz") / "server.db"
    app = create_app({"toy": TRUTH}, SubmissionStore(db), ServerSettings(db=str(db), daily_limit=0, daily_limit_per_client=0,
                                                              new_teams_per_client=0))
    with TestClient(app) as c:
        yield c


def encoded(body) -> bytes:
    return json.dumps(body).encode()  # ensure_ascii: a lone surrogate travels as its escape, as JSON allows


@FUZZ
@given(body=submission())
def test_the_competition_server_answers_any_json_without_a_500(competition, body):
    r = competition.post("/results/", content=encoded(body))
    assert r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/json")


@FUZZ
@given(body=st.binary(max_size=300))
def test_the_competition_server_answers_any_bytes_without_a_500(competition, body):
    assert competition.post("/results/", content=body).status_code < 500
    assert competition.post("/results/", content=encoded(perfect())).status_code == 200


@FUZZ
@given(path=st.sampled_from(["/api/pick", "/api/refine", "/api/names/learn", "/api/names/search"]), body=JSON)
def test_the_pages_api_answers_any_json_without_a_500(client, path, body):  # noqa: F811
    r = client.post(path, content=encoded(body), headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    assert client.get("/api/info").status_code == 200


@FUZZ
@given(name=TEXT, data=st.binary(max_size=200), field=st.sampled_from(["photo", "photos", "file"]))
def test_the_pages_uploads_answer_any_multipart_without_a_500(client, name, data, field):  # noqa: F811
    path = "/api/search" if field != "photos" else "/api/photos"
    raw = name.encode("utf-8", "surrogatepass").replace(b'"', b"%22")  # the bytes an attacker sends, valid or not
    body = (b"--fuzz\r\nContent-Disposition: form-data; name=\"" + field.encode() + b"\"; filename=\"" + raw +
            b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--fuzz--\r\n")
    r = client.post(path, content=body, headers={"content-type": "multipart/form-data; boundary=fuzz"})
    assert r.status_code < 500, r.text
    quoted = quote(name.encode("utf-8", "surrogatepass"), safe="")  # a lone surrogate as its UTF-8 bytes
    for target in (f"/api/photos/{quoted}", f"/api/names/{quoted}", f"/photo?name={quoted}"):
        r = client.delete(target) if target.startswith("/api") else client.get(target)
        assert r.status_code < 500, (target, r.text)
