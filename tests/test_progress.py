"""Progress that reaches a log (utils.progress): a line every few seconds when stderr is not a terminal."""
from __future__ import annotations

import re

import utils
from conftest import PEOPLE
from detection import CropSettings, crop_paths, list_images


def test_a_long_loop_writes_count_rate_and_time_left_to_a_log(monkeypatch, capsys):
    monkeypatch.setattr(utils, "PROGRESS_EVERY", 0.0)
    bar = utils.progress(range(5), desc="embedding gallery", unit="img")
    assert isinstance(bar, utils.LogProgress)  # captured stderr is no terminal
    assert list(bar) == [0, 1, 2, 3, 4]
    lines = [line for line in capsys.readouterr().err.splitlines() if "embedding gallery" in line]
    assert len(lines) == 5 and lines[-1].startswith("facematch: embedding gallery: 5/5 img (")
    assert re.search(r"1/5 img \([\d.]+ img/s, \d+ s left\)", lines[0])


def test_a_short_loop_is_silent_and_a_manual_bar_keeps_its_postfix(monkeypatch, capsys):
    assert list(utils.progress(range(3), desc="quick")) == [0, 1, 2]
    assert "quick" not in capsys.readouterr().err  # under PROGRESS_EVERY seconds: nothing to say
    monkeypatch.setattr(utils, "PROGRESS_EVERY", 0.0)
    bar = utils.progress(total=10, desc="training", unit="batch")
    bar.set_postfix(loss="0.1234")
    bar.update(4)
    bar.close()
    assert "training: 4/10 batch (" in capsys.readouterr().err and ", loss 0.1234" in bar.line(bar.last)
    assert list(utils.progress(range(3), desc="off", disable=True)) == [0, 1, 2]
    assert "off" not in capsys.readouterr().err


def test_cropping_a_folder_reports_its_progress_in_a_log(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(utils, "PROGRESS_EVERY", 0.0)
    paths = [p for person in sorted(PEOPLE.iterdir()) if person.is_dir() for p in list_images(person)]
    assert len(paths) >= 20  # shorter lists stay silent
    crop_paths(paths, CropSettings(detector="haar", fallback=["center"]), tmp_path, desc="cropping the people")
    err = capsys.readouterr().err
    assert f"cropping the people: {len(paths)}/{len(paths)} img" in err
