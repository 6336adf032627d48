"""The JSON API (webapp/api.py) over HTTP with FastAPI's TestClient: what a person does on the page, for a
program; errors as JSON with the page's messages; the session by cookie or header; the OpenAPI schema."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cli import web  # noqa: E402
from conftest import FACES, PEOPLE  # noqa: E402
from test_web import tiny_store, web_cfg  # noqa: E402


@pytest.fixture
def client(tmp_path_factory, tmp_path):
    root = Path(shutil.copytree(tiny_store(tmp_path_factory), tmp_path / "store"))
    app = web.app_for(root, web_cfg())
    with TestClient(app, headers={"origin": "http://testserver"}) as c:
        yield c
    app.state.web.close()


def photo(path: Path):
    return {"photo": (path.name, path.read_bytes(), "image/jpeg")}


def test_search_refine_learn_add_remove_as_json(client):
    info = client.get("/api/info").json()
    assert info["photos"] == 16 and "triplet" in info["methods"] and info["calibrated"] is False
    r = client.post("/api/search", files=photo(FACES / "one_face.jpg"))
    first = r.json()
    assert r.status_code == 200 and first["round"] == 1 and len(first["results"]) == 4 and first["session"]
    assert "the uploaded photo one_face.jpg" in first["searched"] and "face found by haar" in first["how"]
    assert [x["distance"] for x in first["results"]] == sorted(x["distance"] for x in first["results"])
    names = [x["name"] for x in first["results"]]
    second = client.post("/api/refine", json={"marks": {names[0]: True, names[1]: False}, "method": "rocchio"}).json()
    assert second["round"] == 2 and not set(x["name"] for x in second["results"]) & set(names)
    assert second["marks"] == {names[0]: True, names[1]: False} and second["method"] == "rocchio"
    learned = client.post("/api/names/learn", json={"person": "Alice"}).json()
    assert "learned 'Alice' from 1 more photo" in learned["notes"][0]
    by_name = client.post("/api/names/search", json={"person": "Alice"}).json()
    assert by_name["searched"] == "the learned name 'Alice'" and by_name["round"] == 1
    # Another program continues this session by its id, without the cookie.
    other = TestClient(client.app, headers={"origin": "http://testserver"})
    again = other.post("/api/refine", json={}, headers={"X-Facematch-Session": first["session"]})
    assert again.status_code == 200 and again.json()["round"] == 2
    new = sorted((PEOPLE / sorted(p.name for p in PEOPLE.iterdir())[4]).iterdir())[:2]
    added = client.post("/api/photos", files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in new]).json()
    assert added["notes"][0].startswith("gallery: 2 added")
    assert client.get("/api/info").json()["photos"] == 18
    gone = client.delete(f"/api/photos/{new[0].name}")
    assert gone.status_code == 200 and f"removed {new[0].name}" in gone.json()["notes"][0]


def test_errors_are_json_with_the_pages_messages(client):
    r = client.post("/api/pick", json={"name": "nobody.jpg"})
    assert r.status_code == 404 and "no photo named 'nobody.jpg'" in r.json()["error"]
    r = client.post("/api/search", files={"photo": ("fake.jpg", b"not a photo", "image/jpeg")})
    assert r.status_code == 415 and "not an image" in r.json()["error"] and "nothing was searched" in r.json()["error"]
    r = client.post("/api/refine", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    r = client.post("/api/refine", json={"marks": {}})
    assert r.status_code == 400 and "nothing to refine yet" in r.json()["error"]
    assert client.post("/api/search").status_code == 400  # no photo: a 4xx, never a 500
    r = client.post("/api/names/search", json={"person": "Bob"})
    assert r.status_code == 404 and "no learned name 'Bob'" in r.json()["error"]
    r = client.delete("/api/photos/x.jpg", headers={"origin": "http://evil.example"})
    assert r.status_code == 403


def test_the_openapi_schema_documents_the_api_and_not_the_page(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/refine", "/api/photos", "/api/photos/{name}", "/api/info"} <= set(schema["paths"])
    assert "/" not in schema["paths"] and "/refine" not in schema["paths"]
    assert client.get("/docs").status_code == 200
