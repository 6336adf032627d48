"""Configuration loading and overrides."""
from __future__ import annotations

import pytest

from settings import parse_override
from utils import ConfigError
from settings import load_config


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
    from utils import ROOT, SCHEMA

    for path in sorted((ROOT / "config").glob("*.yaml")):
        if path != SCHEMA:  # the rules the others obey, not a configuration
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


@pytest.mark.parametrize("override, key, why", [
    ("server.k=0", "server.k", ">= 1"),
    ("data.val_fraction=3", "data.val_fraction", "< 1"),
    ("crop.detector=[1,2]", "crop.detector", "must be a name"),
    ("crop.detector=hog", "crop.detector", "one of haar, mtcnn, yunet, guess, center"),
    ("crop.fallback=[haar,nothing]", "crop.fallback", "every item is one of"),
    ("retrieval.rerank=[dba,rocchio]", "retrieval.rerank", "every item is one of aqe"),
    ("model.arch=resnet51", "model.arch", "one of resnet18"),
    ("loss.name=tripplet", "loss.name", "one of triplet_batch_hard"),
    ("feedback.method=knn", "feedback.method", "one of nearest"),
    ("augment.erase_p=1.5", "augment.erase_p", "<= 1"),
    ("crop.mtcnn_thresholds=[0.6,0.7]", "crop.mtcnn_thresholds", "a list of 3"),
    ("embedding.batch_size=lots", "embedding.batch_size", "auto|"),
    ("retrieval.batch_size=lots", "embedding.batch_size", "auto|"),  # the old key, read as the new one
])
def test_the_schema_refuses_bad_values_naming_key_value_and_rule(override, key, why):
    with pytest.raises(ConfigError, match=r"'" + key.replace(".", r"\.") + r"'") as info:
        load_config(overrides=[override])
    assert why in str(info.value)


def test_the_schema_lets_keywords_and_good_values_through():
    cfg = load_config(overrides=["input.size=auto", "model.freeze=all", "train.lr_backbone=auto",
                                 "crop.fallback=[yunet,guess,center]", "retrieval.rerank=[aqe,dba]", "server.k=1"])
    assert cfg["model"]["freeze"] == "all" and cfg["server"]["k"] == 1


def test_the_schema_names_real_keys_and_registries():
    import fnmatch

    import yaml

    from settings import REGISTRIES
    from settings.config import _flatten
    from utils import DEFAULT_CONFIG, SCHEMA
    schema, defaults = yaml.safe_load(SCHEMA.read_text()), _flatten(yaml.safe_load(DEFAULT_CONFIG.read_text()))
    for pattern, rule in schema.items():
        matched = [k for k in defaults if fnmatch.fnmatchcase(k, pattern)]
        assert matched, f"config/schema.yaml: '{pattern}' matches no key of config/default.yaml"
        for key in matched:
            spec = rule.get("registry") or rule.get("each", {}).get("registry")
            if spec:  # the default itself must be in the registry it is checked against
                names = REGISTRIES[spec]
                values = defaults[key] if isinstance(defaults[key], list) else [defaults[key]]
                assert set(values) <= set(names), f"{key}: default {defaults[key]!r} not in {spec}"


def test_run_command_owns_config_overrides_and_the_error_tail(caplog):
    from settings import run_command
    from utils import DataError

    seen = {}

    def arguments(parser):
        parser.add_argument("folders", nargs="+")

    def body(args):
        seen.update(folders=args.folders, overrides=args.overrides, k=args.cfg["retrieval"]["k"])
        if "missing" in args.folders:
            raise DataError("missing: no images")
        return 0

    assert run_command("doc", arguments, body, ["a", "retrieval.k=5", "b"], mixed="folders") == 0
    assert seen == {"folders": ["a", "b"], "overrides": ["retrieval.k=5"], "k": 5}
    assert run_command("doc", arguments, body, ["missing"], mixed="folders") == 2
    assert "error: missing: no images" in caplog.text
    seen.clear()
    assert run_command("doc", arguments, body, ["a", "retrieval.k=0"], mixed="folders") == 2
    assert not seen and "'retrieval.k' is 0" in caplog.text  # a bad value stops before the work


def test_typed_settings_hold_the_documented_defaults_and_every_key():
    """Each section's dataclass has exactly the keys config/default.yaml documents, with the same defaults, so
    a library user's CropSettings() and a command's CropSettings(**cfg["crop"]) mean the same thing."""
    from dataclasses import asdict

    from dataset import AugmentSettings, DataSettings, SplitSettings
    from detection import CropSettings
    from network import InputSettings, ModelSettings
    from pipeline.protocol import EvaluateSettings
    from search.feedback import FeedbackSettings
    from search.retrieval_settings import RetrievalSettings
    from training.losses import LossSettings
    from competition.server import ServerSettings
    from webapp.service import WebSettings

    defaults = load_config()
    sections = {"data": DataSettings, "split": SplitSettings, "augment": AugmentSettings, "crop": CropSettings,
                "input": InputSettings, "model": ModelSettings, "evaluate": EvaluateSettings,
                "feedback": FeedbackSettings, "retrieval": RetrievalSettings, "loss": LossSettings, "web": WebSettings,
                "server": ServerSettings}
    for section, kind in sections.items():
        assert asdict(kind()) == defaults[section], section
        assert kind(**defaults[section]) == kind(), section
    with pytest.raises(TypeError, match="detectr"):
        CropSettings(detectr="haar")  # a misspelt setting is refused, as an unknown config key is


def test_the_embedding_section_reads_the_keys_it_once_had_under_retrieval(tmp_path):
    from torchnet.checkpoints import upgrade_config

    old = tmp_path / "old.yaml"
    old.write_text("retrieval:\n  tta: flip\n  batch_size: 4\n  k: 3\n")
    cfg = load_config([old])
    assert cfg["embedding"] == {"tta": "flip", "batch_size": "4"} and cfg["retrieval"]["k"] == 3
    assert "tta" not in cfg["retrieval"] and "batch_size" not in cfg["retrieval"]
    assert load_config(overrides=["retrieval.tta=flip"])["embedding"]["tta"] == "flip"
    assert load_config(overrides=["retrieval.tta=flip", "embedding.tta=none"])["embedding"]["tta"] == "none"
    trained = {"retrieval": {"tta": "flip", "k": 5}, "crop": {}, "model": {"head": "linear"}}
    assert upgrade_config(trained)["embedding"]["tta"] == "flip" and trained["retrieval"]["tta"] == "flip"
