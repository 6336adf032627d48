"""The search page (`facematch web`) over a tiny store, through FastAPI's TestClient: upload checks, a
store untouched by refused uploads, the whole flow (search, mark, refine, add, remove, names),
and learned names' prototypes in the store."""
from __future__ import annotations

import functools
import html
import io
import json
import re
import shutil
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FACES, PEOPLE, new_store

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cli import web  # noqa: E402
from webapp.errors import UserError  # noqa: E402
from webapp.uploads import check_upload, safe_name  # noqa: E402
from network import save_checkpoint  # noqa: E402
from settings import build_model  # noqa: E402
from search.exact import unit  # noqa: E402
from pipeline.store import GalleryStore, StoreError  # noqa: E402
from settings import load_config  # noqa: E402

PERSONS = sorted(p.name for p in PEOPLE.iterdir())


def build_store(root: Path, work: Path, people: list[str]) -> Path:
    """A store of `people`'s photos, embedded by a random tiny ResNet18 (32-px inputs)."""
    overrides = [f"data.cache_dir={work / 'cache'}", f"data.embedding_cache={work / 'embeddings.sqlite'}",
                 "model.arch=resnet18", "model.weights=none", "model.embedding_size=16", "input.size=32",
                 "crop.size=40", "device=cpu", "embedding.batch_size=8"]
    cfg = load_config(overrides=overrides)
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    ckpt = work / "tiny.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg, "meta": model.meta,
                           "model_info": model.describe(), "epoch": 0})
    store = new_store(root, ckpt)
    if people:
        store.add([PEOPLE / p for p in people], allow_no_face=True)
    store.conn.close()
    return root


_BUILT: dict[str, Path] = {}


def tiny_store(tmp_path_factory) -> Path:
    """The tiny store of 4 people × 4 photos, built once per test run (copy it before changing it)."""
    if "root" not in _BUILT:
        work = tmp_path_factory.mktemp("web")
        _BUILT["root"] = build_store(work / "store", work, PERSONS[:4])
    return _BUILT["root"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny_store(tmp_path_factory)


@pytest.fixture
def store_root(built, tmp_path):
    """A fresh copy of the module's store for each test (tests change it)."""
    return Path(shutil.copytree(built, tmp_path / "store"))


def web_cfg(*overrides, base=("web.k=4", "web.gallery_page=8", "web.allowed_hosts=[testserver]")):
    return load_config(overrides=[*base, *overrides])


@pytest.fixture
def client(store_root):
    app = web.app_for(store_root, web_cfg())
    with TestClient(app, headers={"origin": "http://testserver"}) as c:
        yield c
    app.state.web.close()


def snapshot(root: Path):
    """Everything a change to the store would touch: rows, vectors, version, names, files."""
    store = GalleryStore.open(root)
    ids, names, vectors = store.vectors()
    state = (ids.tolist(), names, vectors.tobytes(), store.info()["version"], store.learned_names(),
             sorted(p.name for p in root.glob("photos/*")), sorted(p.name for p in root.glob("crops/*")))
    store.conn.close()
    return state


def text(response) -> str:
    """The page as a reader sees it (HTML entities decoded)."""
    return html.unescape(response.text)


def cards(page: str) -> list[str]:
    """The photo names of the current round's result cards, in order."""
    return re.findall(r"<div class='card[^']*' data-name='([^']+)'", page)


def upload(client, path_or_bytes, name=None, url="/search", field="photo"):
    data = Path(path_or_bytes).read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    return client.post(url, files={field: (name or Path(path_or_bytes).name, data, "application/octet-stream")})


@functools.lru_cache(maxsize=None)
def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width×height black pixels: huge in pixels, tiny on disk."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    row = b"\0" * (1 + (width + 7) // 8)
    packer, parts, block = zlib.compressobj(9), [], row * 1000
    for start in range(0, height, 1000):
        parts.append(packer.compress(block if start + 1000 <= height else row * (height - start)))
    parts.append(packer.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------- upload checks

def test_check_upload_refuses_what_is_not_a_safe_image(tmp_path):
    ok = (FACES / "one_face.jpg").read_bytes()
    assert check_upload(ok, "a.jpg", 10 ** 7, 4 * 10 ** 7)[:2] == ("JPEG", ".jpg")
    assert check_upload((FACES / "grayscale.gif").read_bytes(), "g.gif", 10 ** 7, 4 * 10 ** 7)[:2] == ("GIF", ".gif")
    cases = [(b"just some text, not a photo\n", "notes.jpg", 415, "not an image"),
             (b"", "empty.jpg", 400, "empty"),
             (ok[: len(ok) // 3], "cut.jpg", 400, "damaged"),
             (ok, "big.jpg", 413, "web.max_upload_bytes"),
             (png_bomb(8000, 8000), "bomb.png", 413, "decompression bomb"),      # past web.max_pixels
             (png_bomb(20000, 20000), "bomb2.png", 413, "decompression bomb")]   # past Pillow's own limit too
    for data, name, status, words in cases:
        with pytest.raises(UserError, match=words) as err:
            check_upload(data, name, len(ok) - 1 if name == "big.jpg" else 10 ** 7, 4 * 10 ** 7)
        assert err.value.status == status and name in str(err.value)
    buf = io.BytesIO()
    from PIL import Image
    Image.new("RGB", (8, 8)).save(buf, format="ICO")
    with pytest.raises(UserError, match="ICO image") as err:
        check_upload(buf.getvalue(), "icon.png", 10 ** 7, 4 * 10 ** 7)
    assert err.value.status == 415
    assert safe_name("../../etc/pass wd.PNG", ".png") == "pass_wd.png" and safe_name("", ".jpg") == "upload.jpg"


def test_refused_uploads_leave_the_store_untouched(client, store_root):
    before = snapshot(store_root)
    bad = [(b"a text file that calls itself a JPEG\n", "fake.jpg", 415, "not an image"),
           (png_bomb(20000, 20000), "bomb.png", 413, "decompression bomb"),
           (b"", "empty.png", 400, "empty")]
    for url, field in (("/search", "photo"), ("/add", "photos")):
        for data, name, status, words in bad:
            r = upload(client, data, name, url, field)
            assert r.status_code == status and words in text(r) and name in text(r)
            assert "Traceback" not in text(r) and "id=error" in text(r)
            assert ("nothing was searched" if url == "/search" else "nothing was added") in text(r)
    # One bad file among good ones: nothing at all is added.
    r = client.post("/add", files=[("photos", ("good.jpg", (FACES / "one_face.jpg").read_bytes(), "image/jpeg")),
                                   ("photos", ("bad.jpg", b"text", "image/jpeg"))])
    assert r.status_code == 415 and "nothing was added" in text(r)
    # A body past the limit is refused before it is read.
    r = client.post("/add", content=b"x" * 100, headers={"content-length": str(10 ** 10),
                                                        "content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "too large" in text(r)
    # No file chosen, a form from another site.
    assert client.post("/search", data={"x": "1"}).status_code == 400
    assert client.post("/remove", data={"name": "x"}, headers={"origin": "http://evil.example"}).status_code == 403
    assert snapshot(store_root) == before


def test_a_gif_is_searched_and_a_faceless_photo_is_said_out_loud(client, store_root):
    r = upload(client, FACES / "grayscale.gif")
    assert r.status_code == 200 and "GIF" in text(r) and len(cards(text(r))) == 4
    # The store's model falls back on the centre crop, and the page says so.
    r = upload(client, FACES / "no_face.jpg")
    assert r.status_code == 200 and "centred square" in text(r) and len(cards(text(r))) == 4
    crop = client.get("/query.png")
    assert crop.status_code == 200 and crop.content.startswith(b"\x89PNG")
    # A model whose chain has no centre crop (as if trained with crop.fallback=[]) refuses it, and adds nothing.
    state = client.app.state.web
    state.worker.submit(lambda: state.store().model().meta["crop"].update(fallback=[])).result()
    before = snapshot(store_root)
    for url, field in (("/search", "photo"), ("/add", "photos")):
        r = upload(client, FACES / "no_face.jpg", url=url, field=field)
        assert r.status_code == 422 and "no face found (tried haar;" in text(r) and "no_face.jpg" in text(r)
    assert upload(client, FACES / "one_face.jpg").status_code == 200
    assert snapshot(store_root) == before


# ---------------------------------------------------------------- the whole flow

def test_search_mark_refine_add_remove_and_names(client, store_root):
    page = client.get("/")
    assert page.status_code == 200 and "Gallery: 16 photos" in text(page) and "Round" not in text(page)
    assert client.post("/refine", data={"method": "rocchio"}).status_code == 400  # nothing searched yet

    r = upload(client, FACES / "one_face.jpg")
    first = cards(text(r))
    assert r.status_code == 200 and "Round 1" in text(r) and len(first) == 4 and "distance 0." in text(r)
    assert "face found by haar" in text(r) and "id=query-crop" in text(r)

    # Mark two (as the page's script does), refine: a new round of photos not shown before.
    assert client.post("/mark", data={"name": first[0], "value": "relevant"}).json()["relevant"] == 1
    assert client.post("/mark", data={"name": first[1], "value": "irrelevant"}).json()["irrelevant"] == 1
    r = client.post("/refine", data={"method": "rocchio"})
    second = cards(text(r))
    assert "Round 2" in text(r) and len(second) == 4 and not set(second) & set(first)
    assert "1 marked relevant, 1 irrelevant" in text(r)
    # Marks sent with the form work too; another method; still nothing shown twice.
    r = client.post("/refine", data={"method": "svm", f"mark:{second[0]}": "relevant", f"mark:{second[1]}": "irrelevant"})
    third = cards(text(r))
    assert "Round 3" in text(r) and len(third) == 4 and not set(third) & set(first + second)
    assert "<option selected>svm</option>" in text(r)
    assert client.post("/refine", data={"method": "magic"}).status_code == 400

    # Pick a gallery photo: it is the query, never its own result.
    r = client.post("/pick", data={"name": first[2]})
    assert "Round 1" in text(r) and first[2] not in cards(text(r)) and len(cards(text(r))) == 4
    assert client.post("/pick", data={"name": "nobody.jpg"}).status_code == 404

    # Add photos from the page; the same photo twice is stored once.
    new = sorted((PEOPLE / PERSONS[4]).iterdir())
    r = client.post("/add", files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in new])
    assert r.status_code == 200 and "4 added" in text(r) and "Gallery: 20 photos" in text(r)
    r = upload(client, new[0], url="/add", field="photos")
    assert "0 added" in text(r) and "already in the gallery" in text(r)
    # Remove one.
    r = client.post("/remove", data={"name": new[0].name})
    assert r.status_code == 200 and f"removed {new[0].name}" in text(r) and "Gallery: 19 photos" in text(r)
    assert client.post("/remove", data={"name": new[0].name}).status_code == 404
    assert client.get(f"/crop?name={new[1].name}").content.startswith(b"\x89PNG")
    assert client.get(f"/photo?name={new[1].name}").content == new[1].read_bytes()

    # Learn a name from marks, search by it; a later mark moves the prototype.
    r = upload(client, new[1])
    shown = cards(text(r))
    assert client.post("/name/learn", data={"person": "Alice"}).status_code == 400  # nothing marked yet
    r = client.post("/name/learn", data={"person": "Alice", f"mark:{shown[0]}": "relevant",
                                         f"mark:{shown[1]}": "relevant", f"mark:{shown[2]}": "irrelevant"})
    assert r.status_code == 200 and "learned 'Alice' from 2 more photos" in text(r)
    store = GalleryStore.open(store_root)
    _, names, vectors = store.vectors()
    assert np.allclose(store.name_prototype("Alice"), unit(vectors[names.index(shown[0])] + vectors[names.index(shown[1])]), atol=1e-6)
    before = store.name_prototype("Alice")
    r = client.post("/name/learn", data={"person": "Alice", f"mark:{shown[3]}": "relevant"})
    assert "learned 'Alice' from 1 more photo:" in text(r) and "mean of 3 marked photos" in text(r)
    assert not np.allclose(store.name_prototype("Alice"), before)

    r = client.post("/name/search", data={"person": "Alice"})
    _, expected = store.search_name("Alice", 4)
    assert r.status_code == 200 and "the learned name 'Alice'" in text(r) and cards(text(r)) == expected
    assert "query-crop" not in text(r)  # a name has no crop; its prototype is described instead
    r = client.post("/refine", data={"method": "nearest"})
    assert "Round 2" in text(r) and not set(cards(text(r))) & set(expected)
    r = client.post("/name/search", data={"person": "Bob"})
    assert r.status_code == 404 and "no learned name 'Bob'" in text(r) and "Alice" in text(r)
    store.conn.close()
    assert "Alice" in GalleryStore.open(store_root).learned_names()  # kept in the store


def test_sessions_are_separate(store_root):
    app = web.app_for(store_root, web_cfg())
    with TestClient(app, headers={"origin": "http://testserver"}) as a, TestClient(app, headers={"origin": "http://testserver"}) as b:
        ra = upload(a, FACES / "one_face.jpg")
        assert "Round 1" in text(ra) and "Round" not in text(b.get("/"))
        a.post("/mark", data={"name": cards(text(ra))[0], "value": "relevant"})
        assert "1 marked relevant" in text(a.get("/"))
    app.state.web.close()


# ---------------------------------------------------------------- learned names in the store

def test_name_prototypes_follow_the_marks(store_root):
    store = GalleryStore.open(store_root)
    _, names, vectors = store.vectors()
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    assert store.learned_names() == []
    assert store.learn_name("  John   Salley ", names[:2]) == 2
    assert store.learned_names() == ["John Salley"]
    assert np.allclose(store.name_prototype("John Salley"), unit(vectors[:2].mean(0)), atol=1e-6)
    # A later mark moves the prototype to the mean of all three.
    assert store.learn_name("John Salley", [names[5]]) == 3 and store.name_marks("John Salley") == 3
    assert np.allclose(store.name_prototype("John Salley"), unit(vectors[[0, 1, 5]].mean(0)), atol=1e-6)
    dist, found = store.search_name("John Salley", 3)
    proto = store.name_prototype("John Salley")
    assert found[0] == names[int(np.argmax(vectors @ proto))] and len(found) == 3
    assert np.allclose(dist, 1 - vectors[[names.index(n) for n in found]] @ proto, atol=1e-5)
    # Errors: unknown names, unknown photos (nothing learned), an empty name.
    with pytest.raises(StoreError, match="no learned name 'Bob'"):
        store.search_name("Bob", 3)
    with pytest.raises(StoreError, match="no photo named 'ghost.jpg'"):
        store.learn_name("John Salley", [names[3], "ghost.jpg"])
    assert store.name_marks("John Salley") == 3
    with pytest.raises(StoreError, match="1 to 100 characters"):
        store.learn_name("   ", names[:1])
    with pytest.raises(StoreError, match="no photo to learn"):
        store.learn_name("Eve", [])
    # Kept in the store; the photos' version is not changed by names.
    version = store.info()["version"]
    store.conn.close()
    again = GalleryStore.open(store_root)
    assert np.allclose(again.name_prototype("John Salley"), proto) and again.info()["version"] == version
    again.forget_name("John Salley")
    assert again.learned_names() == []


@pytest.mark.slow
def test_a_fused_store_serves_the_page_info_search_and_add(fused_store, tmp_path, capsys):
    """The page over a fusion's store: GET / and /api/info answer 200 and show how each network crops; a search, an
    add and `facematch store info` work as on a single network's store."""
    from cli import main

    root = Path(shutil.copytree(fused_store, tmp_path / "store"))
    app = web.app_for(root, web_cfg())
    try:
        with TestClient(app, headers={"origin": "http://testserver"}) as c:
            page = c.get("/")
            assert page.status_code == 200
            text = html.unescape(page.text)
            assert "2 networks fused" in text and "dlib_resnet (0.4): faces by yunet" in text and "align dlib" in text
            assert "faceres (0.6): faces by yunet" in text and "align none" in text
            info = c.get("/api/info")
            assert info.status_code == 200
            nets = info.json()["networks"]
            assert [(n["network"], n["align"], n["size"]) for n in nets] == [("dlib_resnet", "dlib", 150),
                                                                            ("faceres", "none", 224)]
            found = c.post("/api/search", files={"photo": ("me.jpg", (FACES / "one_face.jpg").read_bytes())})
            assert found.status_code == 200 and len(found.json()["results"]) == 4, found.text
            added = c.post("/api/photos", files={"photos": ("new.jpg", (FACES / "one_face.jpg").read_bytes())})
            assert added.status_code == 200 and c.get("/api/info").json()["photos"] == info.json()["photos"] + 1
            again = c.post("/api/search", files={"photo": ("me.jpg", (FACES / "one_face.jpg").read_bytes())}).json()
            assert again["results"][0]["name"] == "new.jpg" and again["results"][0]["distance"] < 1e-3
    finally:
        app.state.web.close()
    capsys.readouterr()
    assert main(["store", "info", "--store", str(root)]) == 0
    assert '"crop": "dlib_resnet (0.4): yunet + dlib; faceres (0.6): yunet + none"' in capsys.readouterr().out


def test_a_taken_port_is_refused_before_the_store_is_opened(tmp_path, capsys):
    from cli import web

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert web.main(["--check-port", "--port", str(port)]) == 2
        assert web.main(["--store", str(tmp_path / "no_store"), "--port", str(port)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 2 and all(f"web.port={port}" in e and f"PORT={port + 1}" in e for e in errors)
    assert not (tmp_path / "no_store").exists()
    assert web.main(["--check-port", "--port", str(port)]) == 0  # freed: said free
    assert f"127.0.0.1:{port} is free" in capsys.readouterr().err


@pytest.mark.slow
def test_the_store_make_serve_builds_serves_the_page_and_its_checkpoint_compares_submits_and_exports(
        best_store, tmp_path, capsys):
    """config/best.yaml's model as `make serve` builds it (conftest.best_store): the page and /api/info answer 200 and
    name its networks, a search and an add work, and its checkpoint goes through compare, submit and export."""
    from cli import export_model, main, split
    import request_send

    root = Path(shutil.copytree(best_store, tmp_path / "store"))
    ckpt = best_store.parent / "best" / "best.pt"
    best = load_config(["config/best.yaml"])["model"]
    wanted = [load_config([m])["model"]["arch"] for m in best["members"]] or [best["arch"]]
    store = GalleryStore.open(root)
    assert [n["network"] for n in store.networks()] == wanted  # the kind config/best.yaml names
    app = web.app_for(root, web_cfg())
    try:
        with TestClient(app, headers={"origin": "http://testserver"}) as c:
            assert c.get("/").status_code == 200
            info = c.get("/api/info")
            assert info.status_code == 200 and [n["network"] for n in info.json()["networks"]] == wanted
            found = c.post("/api/search", files={"photo": ("me.jpg", (FACES / "one_face.jpg").read_bytes())})
            assert found.status_code == 200 and len(found.json()["results"]) == 4, found.text
            added = c.post("/api/photos", files={"photos": ("new.jpg", (FACES / "one_face.jpg").read_bytes())})
            assert added.status_code == 200
            again = c.post("/api/search", files={"photo": ("me.jpg", (FACES / "one_face.jpg").read_bytes())}).json()
            assert again["results"][0]["name"] == "new.jpg" and again["results"][0]["distance"] < 1e-3
    finally:
        app.state.web.close()
    photos = sorted(PEOPLE.glob("*/*.jpg"))
    same = [p for p in photos if p.parent == photos[0].parent][:2]
    capsys.readouterr()
    assert main(["compare", "--checkpoint", str(ckpt), *map(str, same)]) == 0
    assert "distance" in capsys.readouterr().out
    comp = tmp_path / "comp"
    assert split.main(["--people", str(PEOPLE), "--out", str(comp), "split.test_fraction=0.4",
                       "split.queries_per_person=1"]) == 0
    caches = [f"data.cache_dir={tmp_path / 'cache'}", f"data.embedding_cache={tmp_path / 'emb.sqlite'}"]
    assert request_send.main(["--checkpoint", str(ckpt), "--test", str(comp / "test"), "--out",
                              str(tmp_path / "payload.json"), "--dry-run", "retrieval.k=5", *caches]) == 0
    payload = json.loads((tmp_path / "payload.json").read_text())
    queries = list((comp / "test" / "query").iterdir())
    assert set(payload["images"]) == {q.name for q in queries}
    assert all(len(v) == 5 for v in payload["images"].values())
    assert export_model.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "export"),
                              "--check", str(PEOPLE)]) == 0
    assert "least cosine 1.0000" in capsys.readouterr().out
