"""The gallery store on disk: build, add, remove without a rebuild, reopen, search, and the
refusal to mix embeddings of two checkpoints."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import FACES, PEOPLE, new_store
from network import save_checkpoint
from settings import build_model
from cli import gallery as store_module
from pipeline import store as store_lib
from pipeline.store import GalleryStore, StoreError
from settings import load_config


def checkpoint(tmp_path, tiny_cfg, seed=0, name="a.pt", overrides=()):
    cfg = load_config(overrides=list(overrides), base=tiny_cfg)
    torch.manual_seed(seed)
    model, _ = build_model(cfg)
    path = tmp_path / name
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg, "meta": model.meta,
                           "model_info": model.describe(), "epoch": 0})
    return path


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    for person in sorted(PEOPLE.iterdir())[:3]:
        shutil.copytree(person, folder / person.name)
    return folder


@pytest.mark.parametrize("index", ["exact", "Flat", "HNSW32"])
def test_build_search_add_remove_and_reopen(tmp_path, tiny_cfg, photos, index):
    ckpt = checkpoint(tmp_path, tiny_cfg)
    root = tmp_path / "store"
    assert store_module.main(["build", "--store", str(root), "--checkpoint", str(ckpt), str(photos),
                              f"retrieval.index={index}", "--allow-no-face"]) == 0
    store = GalleryStore.open(root)
    assert len(store) == 12 and store.info()["index"] == index
    ids, names, vectors = store.vectors()
    # Each stored photo finds itself first.
    dist, found = store.search(vectors[:4], 3)
    assert [row[0] for row in found] == names[:4] and np.allclose(dist[:, 0], 0, atol=1e-5)

    # add: new photos only; the same content again is not stored twice.
    extra = tmp_path / "extra"
    shutil.copytree(sorted(PEOPLE.iterdir())[3], extra)
    report = store.add([extra, photos / sorted(p.name for p in photos.iterdir())[0]], allow_no_face=True)
    assert len(report.added) == 4 and len(report.duplicates) == 4 and len(store) == 16
    _, new_names, new_vectors = store.vectors()
    added = [n for n in new_names if n not in names]
    assert len(added) == 4 and store.search(new_vectors[-1:], 1)[1][0][0] == new_names[-1]

    # remove: gone from the index and the disk, without a rebuild.
    gone = added[0]
    photo = store.photo(gone)
    assert store.remove([gone]) == 1 and len(store) == 15
    assert not photo["file"].exists() and not photo["crop"].exists()
    _, hits = store.search(new_vectors, 15)
    assert all(gone not in row for row in hits)
    with pytest.raises(StoreError, match="no photo named 'nobody.jpg'"):
        store.remove(["nobody.jpg"])

    # Reopen: the index file on disk is current and gives the same answers.
    again = GalleryStore.open(root)
    assert len(again) == 15 and again.info()["version"] == store.info()["version"]
    d1, n1 = store.search(new_vectors[:5], 5)
    d2, n2 = again.search(new_vectors[:5], 5)
    assert n1 == n2 and np.allclose(d1, d2, atol=1e-5)


def test_another_checkpoint_is_refused(tmp_path, tiny_cfg, photos):
    root = tmp_path / "store"
    new_store(root, checkpoint(tmp_path, tiny_cfg)).add([photos], allow_no_face=True)
    other = checkpoint(tmp_path, tiny_cfg, seed=1, name="b.pt")
    store = GalleryStore.open(root)
    before = store.vectors()
    with pytest.raises(StoreError) as err:
        store.add([FACES / "one_face.jpg"], checkpoint=other)
    assert "a.pt" in str(err.value) and "b.pt" in str(err.value) and "cannot be" in str(err.value)
    # Another preprocessing of the same weights is another model too.
    shifted = checkpoint(tmp_path, tiny_cfg, name="c.pt", overrides=["input.mean=[0.5,0.5,0.5]", "input.std=[0.5,0.5,0.5]"])
    with pytest.raises(StoreError, match="c.pt"):
        store.add([FACES / "one_face.jpg"], checkpoint=shifted)
    after = store.vectors()
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[2], after[2])


def test_a_failed_add_changes_nothing(tmp_path, tiny_cfg, photos, monkeypatch):
    root = tmp_path / "store"
    store = new_store(root, checkpoint(tmp_path, tiny_cfg))
    store.add([photos], allow_no_face=True)
    files = sorted(p.name for p in (root / "photos").iterdir())
    version = store.info()["version"]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_lib, "_write_crop", broken)
    with pytest.raises(OSError):
        store.add([FACES / "one_face.jpg"])
    assert len(store) == 12 and store.info()["version"] == version
    assert sorted(p.name for p in (root / "photos").iterdir()) == files
    with pytest.raises(StoreError, match="not an image"):
        store.add([tmp_path / "notes.txt"])
    assert store_module.main(["info", "--store", str(tmp_path / "nowhere")]) == 2


def test_a_stale_index_on_disk_is_rebuilt_and_the_search_command_prints_the_nearest(tmp_path, tiny_cfg, photos,
                                                                                    capsys):
    from search.index import build_index

    ckpt = checkpoint(tmp_path, tiny_cfg)
    root = tmp_path / "store"
    assert store_module.main(["build", "--store", str(root), "--checkpoint", str(ckpt), str(photos),
                              "--allow-no-face"]) == 0
    store = GalleryStore.open(root)
    ids, names, vectors = store.vectors()
    version = store.info()["version"]
    # An index file left behind by an older version of the store: it holds only two photos.
    old = build_index("exact", vectors.shape[1], "cosine")
    old.add(vectors[:2], ids[:2])
    old.save(root / "index.bin")
    (root / "index.json").write_text(json.dumps({"version": version - 1}))
    again = GalleryStore.open(root)
    dist, found = again.search(vectors, 1)
    assert [row[0] for row in found] == names  # every photo found: the stale file was not used
    assert json.loads((root / "index.json").read_text()) == {"version": version}  # and it was rewritten

    capsys.readouterr()
    one = sorted((photos / sorted(p.name for p in photos.iterdir())[0]).iterdir())[0]
    assert store_module.main(["search", "--store", str(root), str(one), "-k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    line = next(t for t in out if ": " in t and not t.startswith(" "))  # the results; the decision follows, indented
    assert any(t.startswith("  no calibration in this model") for t in out)
    results = re.findall(r"(\S+) \(([0-9.]+)\)", line.split(": ", 1)[1])
    assert len(results) == 3 and results[0][0] in names and float(results[0][1]) < 1e-3  # itself, first
    assert [float(d) for _, d in results] == sorted(float(d) for _, d in results)


KILLED_ADD = """
import hashlib, os, signal, sys
import numpy as np
from pipeline.store import GalleryStore, NewPhoto
store = GalleryStore.open(sys.argv[1])
def write(target, n=[0]):
    target.write_bytes(b"photo")
    n[0] += 1
    if n[0] == 3:  # the third photo's file is written: killed before the transaction that names them
        os.kill(os.getpid(), signal.SIGKILL)
dim = int(store.meta["dim"])
store.add_embedded([NewPhoto(f"p{i}.jpg", hashlib.sha1(str(i).encode()).hexdigest(), ".jpg", write,
                             np.zeros((8, 8, 3), np.uint8), "haar", np.ones(dim, np.float32)) for i in range(5)])
"""


def test_files_left_by_a_killed_add_are_swept_at_the_next_open(tmp_path, tiny_cfg, photos):
    """kill -9 in the middle of an add, then an open at once: every file no row names is gone (no add is running:
    the store's lock is free); while an add runs in another process, only files older than SWEEP_AFTER go."""
    import fcntl
    import os
    import subprocess
    import sys
    import time

    root = tmp_path / "store"
    store = new_store(root, checkpoint(tmp_path, tiny_cfg))
    store.add([photos], allow_no_face=True)
    store.conn.close()
    kept = sorted(p.name for p in (root / "photos").iterdir())
    killed = subprocess.run([sys.executable, "-c", KILLED_ADD, str(root)], capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert len(list((root / "photos").iterdir())) == len(kept) + 3  # the orphans the attack left
    again = GalleryStore.open(root)
    assert sorted(p.name for p in (root / "photos").iterdir()) == kept and len(again) == len(kept)
    assert len(list((root / "crops").iterdir())) == len(kept)
    assert all(again.photo(n)["file"].is_file() for n in again.vectors()[1])

    old, fresh = root / "photos" / "dead.jpg", root / "crops" / "dead.png"
    old.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    with open(root / "store.lock", "a") as running_add:  # another process's add holds the lock now
        fcntl.flock(running_add, fcntl.LOCK_SH)
        assert again.sweep() == 1
    assert not old.exists() and fresh.exists()  # a file that young may be the running add's
    assert again.sweep() == 1 and not fresh.exists()


def test_a_photo_with_no_face_is_left_out_and_reported_unless_asked(tmp_path, tiny_cfg, photos, capsys):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), (90, 90, 90)).save(blank)
    root = tmp_path / "store"
    assert store_module.main(["build", "--store", str(root), "--checkpoint", str(checkpoint(tmp_path, tiny_cfg)),
                              str(blank)]) == 0
    assert "0 added" in capsys.readouterr().out and len(GalleryStore.open(root)) == 0
    assert store_module.main(["add", "--store", str(root), str(blank)]) == 0
    assert "1 left out with no face found" in capsys.readouterr().out
    assert store_module.main(["add", "--store", str(root), "--allow-no-face", str(blank)]) == 0
    assert "1 added" in capsys.readouterr().out and len(GalleryStore.open(root)) == 1
