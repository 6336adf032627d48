"""One photo's path from `facematch submit` to the payload (request_send.py): traced call by call, it enters each of
the code's files once (a file is left to its callees and returned to, never entered again from one), and it reads
the configuration once (config/default.yaml, each --config file and each override)."""
from __future__ import annotations

import shutil
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from conftest import PEOPLE, ROOT

GENERATOR_FLAGS = 0x20 | 0x80 | 0x200  # CO_GENERATOR, CO_COROUTINE, CO_ASYNC_GENERATOR: resumed, not entered


def _code_file(path: str) -> str | None:
    """The repository-relative name of one of the project's code files (not a test's, not a package's), else None."""
    if not path.startswith(str(ROOT) + "/") or "/.venv/" in path:
        return None
    rel = path[len(str(ROOT)) + 1:]
    return None if rel.startswith("tests/") else rel


def entries(call) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Run call() under sys.setprofile: every entry into a code file, in order, as (file, function) (a call from
    another file, through any library in between; calls while a module is being imported are not the path), and
    the re-entries: (file, function, the files on the stack) where the file entered is already on the stack. A
    helper of utils.py calling back into the file that called it (atomic_write's writer) is that file's own work."""
    found, again, started = [], [], set()

    def profile(frame, event, _arg):
        if event != "call" or (name := _code_file(frame.f_code.co_filename)) is None:
            return
        if frame.f_code.co_flags & GENERATOR_FLAGS:
            if frame in started:
                return
            started.add(frame)
        stack, up = [], frame.f_back
        while up is not None:
            if up.f_code.co_filename.startswith("<frozen importlib"):
                return
            if (above := _code_file(up.f_code.co_filename)) is not None:
                stack.append(above)
            up = up.f_back
        if stack and stack[0] == name:
            return
        found.append((name, frame.f_code.co_name))
        if name in stack and not (stack[0] == "utils.py" and stack[1:2] == [name]):
            again.append((name, frame.f_code.co_name, " > ".join(reversed(stack))))

    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return found, again


@pytest.fixture
def one_photo_each(tiny_cfg, tmp_path):
    """A tiny checkpoint, a test set of one query and one gallery photo, and a --config file."""
    from train import train

    train(tiny_cfg)
    photos = sorted((PEOPLE / "John_Savage").iterdir())
    for folder, photo in (("query", photos[0]), ("gallery", photos[1])):
        (tmp_path / "test" / folder).mkdir(parents=True)
        shutil.copy(photo, tmp_path / "test" / folder / photo.name)
    (tmp_path / "submit.yaml").write_text("retrieval:\n  k: 1\n")
    return tmp_path / "run" / "best.pt", tmp_path / "test", tmp_path / "submit.yaml"


def test_one_photo_enters_each_file_once_and_reads_the_configuration_once(one_photo_each, tmp_path, monkeypatch):
    import request_send
    import settings.config
    import utils

    checkpoint, test, config_file = one_photo_each
    opened = Counter()
    for module in (utils, settings.config):
        monkeypatch.setattr(module, "open", lambda path, *a, **k: opened.update([Path(path).name]) or open(path, *a, **k),
                            raising=False)
    monkeypatch.setattr(utils, "_DEFAULTS", {})  # the configuration read as a new process reads it
    settings.config._schema_and_defaults.cache_clear()
    argv = ["--checkpoint", str(checkpoint), "--test", str(test), "--out", str(tmp_path / "payload.json"), "--dry-run",
            "--config", str(config_file), f"data.cache_dir={tmp_path / 'crops'}",
            f"data.embedding_cache={tmp_path / 'embeddings.sqlite'}"]
    found, again = entries(lambda: request_send.main(argv))

    assert (tmp_path / "payload.json").exists(), "the command ran to its payload"
    files = {name for name, _ in found}
    assert {"request_send.py", "settings/config.py", "settings/models.py", "pipeline/embedding.py",
            "detection/finder.py", "torchnet/embed_loop.py", "torchnet/embedding_net.py", "search/retrieval.py",
            "competition/rules.py"} <= files, f"the trace followed the photo: {sorted(files)}"
    assert not again, "files entered again from their own callees:\n" + "\n".join(map(str, again))
    assert opened["default.yaml"] == 1 and opened["submit.yaml"] == 1, f"configuration files opened: {dict(opened)}"


def test_a_file_entered_again_from_a_callee_is_found(tmp_path):
    """The check can fail: train.py's command still runs through settings.run_command's callbacks (train.py >
    settings/command.py > train.py), which the trace names."""
    import train

    _, again = entries(lambda: train.main(["--calibrate", str(tmp_path / "none.pt")]))
    assert ("train.py", "arguments", "train.py > settings/command.py") in again
