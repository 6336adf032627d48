"""The search page and its API against hostile or careless bodies (issue 28): every request it cannot use is a
4xx naming the field, never a 500, and never leaves the session in a state that fails later requests."""
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

    curl = TestClient(client.app)
    for _ in range(30):  # cookie-less reads, as `curl /api/info` in a loop
        assert curl.get("/api/info").status_code == 200 and curl.get("/").status_code == 200
        assert not curl.cookies
    assert list(svc.sessions) == [mine]
    svc.web = type(svc.web)(max_sessions=10, max_sessions_per_client=3)
    other = TestClient(client.app, client=("10.0.0.9", 5000))  # another address searching again and again
    for _ in range(12):
        other.cookies.clear()
        assert other.post("/api/search", files=photo(FACES / "one_face.jpg")).status_code == 200
    assert mine in svc.sessions and len(svc.sessions) == 4  # its 3 newest and mine
    assert client.post("/api/refine", json={}).json()["round"] == 2  # my search goes on
