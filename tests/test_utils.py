"""Configuration loading and overrides."""
from __future__ import annotations

import pytest

from utils import ConfigError, load_config, parse_override


def test_overrides_are_typed_and_nested():
    cfg = load_config(overrides=["train.epochs=3", "model.arch=resnet18", "input.mean=[0.5,0.5,0.5]",
                                 "train.amp=false", "train.lr_head=2e-4"])
    assert cfg["train"]["epochs"] == 3 and cfg["model"]["arch"] == "resnet18"
    assert cfg["input"]["mean"] == [0.5, 0.5, 0.5] and cfg["train"]["amp"] is False
    assert cfg["train"]["lr_head"] == pytest.approx(2e-4)
    assert parse_override("a.b=") == {"a": {"b": None}}


def test_unknown_keys_and_bad_files_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="train.epoch'"):
        load_config(overrides=["train.epoch=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["train.epochs"])
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(overrides=["train=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  depth: 3\n")
    with pytest.raises(ConfigError, match=f"{bad}.*model.depth"):
        load_config([bad])
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config([tmp_path / "missing.yaml"])


def test_files_layer_on_defaults_then_overrides(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("train:\n  epochs: 4\n  P: 6\n")
    cfg = load_config([f], ["train.P=2"])
    assert (cfg["train"]["epochs"], cfg["train"]["P"], cfg["train"]["K"]) == (4, 2, 4)


def test_every_shipped_config_loads():
    from utils import ROOT

    for path in sorted((ROOT / "config").glob("*.yaml")):
        load_config([path])


def test_values_take_the_documented_type():
    cfg = load_config(overrides=["train.lr_backbone=1e-5", "train.epochs=3.0", "submit.groupname=42"])
    assert cfg["train"]["lr_backbone"] == pytest.approx(1e-5) and isinstance(cfg["train"]["epochs"], int)
    assert cfg["submit"]["groupname"] == "42"
    with pytest.raises(ConfigError, match="train.epochs' must be a number, got 'many'"):
        load_config(overrides=["train.epochs=many"])
    with pytest.raises(ConfigError, match="train.amp' must be true or false"):
        load_config(overrides=["train.amp=3"])
    with pytest.raises(ConfigError, match="input.mean' must be auto or a list"):
        load_config(overrides=["input.mean=0.5"])
    assert load_config(overrides=["input.size=auto"])["input"]["size"] == "auto"
    assert load_config(overrides=["input.size=64.0", "input.mean=[0.5, 0.5, 0.5]"])["input"]["size"] == 64
    with pytest.raises(ConfigError, match="input.size' must be auto or a number"):
        load_config(overrides=["input.size=big"])


def test_atomic_write_gives_usual_permissions_and_leaves_no_temp_file(tmp_path):
    import os
    import stat

    from utils import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.txt", lambda tmp: open(tmp, "w").write("hello"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) & 0o044 == 0o044  # others can read
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
