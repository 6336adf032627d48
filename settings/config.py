"""The configuration: config/default.yaml, --config files and key=value overrides merged (keys that moved read under
their names now) and checked once against config/schema.yaml with the code's registries (registries.py): one error
naming the key, the value and what it may be.

    cfg = load_config(["config/best.yaml"], ["train.epochs=2"])        # checked
"""
from __future__ import annotations

import copy
import fnmatch
import functools
import re
from pathlib import Path
from typing import Any

import yaml

from utils import SCHEMA, ConfigError, moved_keys, read_defaults
from settings.registries import REGISTRIES


# ---------------------------------------------------------------- merging files and overrides, and the one check

# Keys that take a keyword ('auto': the backbone's own value; 'all') or a value of the type given here.
KEYWORD_KEYS = {"input.size": ("auto", 0), "input.mean": ("auto", []), "input.std": ("auto", []),
                "model.freeze": ("all", 0), "train.lr_backbone": ("auto", 0.0), "model.member_weights": ("auto", [])}
NAME_OR_LIST_KEYS = {"data.train_dir"}  # a folder, or a list of folders


def _merge(base: dict, update: dict, source: str, prefix: str = "") -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{source}: unknown config key '{dotted}' (see config/default.yaml)")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{dotted}' must be a mapping, got {value!r}")
            _merge(base[key], value, source, dotted + ".")
        elif dotted in KEYWORD_KEYS:
            keyword, kind = KEYWORD_KEYS[dotted]
            try:
                base[key] = value if value == keyword else _coerce(kind, value, "")
            except ConfigError:
                what = "a list" if isinstance(kind, list) else "a number"
                raise ConfigError(f"{source}: '{dotted}' must be {keyword} or {what}, got {value!r}") from None
        elif dotted in NAME_OR_LIST_KEYS and isinstance(value, list) and all(isinstance(v, str) for v in value):
            base[key] = value
        else:
            base[key] = _coerce(base[key], value, f"{source}: '{dotted}'")


def _coerce(default: Any, value: Any, where: str) -> Any:
    """Give `value` the type of the documented default: YAML reads 1e-4 as a string, for one."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return int(number) if isinstance(default, int) and number.is_integer() else number
    if isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"{where} must be a list, got {value!r}")
    if isinstance(default, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{where} must be a name, got {value!r}")
    return value


def parse_override(text: str) -> dict:
    """Turn 'a.b.c=value' into {'a': {'b': {'c': value}}}, the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. train.epochs=5)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from None
    tree: dict = {}
    node = tree
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return tree


Layers = list[tuple[str, dict]]  # what each config file and override sets, after the one it names: (source, keys)


def read_layers(files: list[str | Path] | None, overrides: list[str] | None) -> Layers:
    """Each config file (read and parsed once) and each key=value override, in order, with the keys it sets (keys
    that moved under their names now): what load_config merges on config/default.yaml or on a checkpoint's config."""
    layers = []
    for path in files or []:
        try:
            with open(path) as fh:
                data = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys")
        layers.append((str(path), moved_keys(data)))
    return layers + [(f"override '{text}'", moved_keys(parse_override(text))) for text in overrides or []]


def _merged(layers: Layers, base: dict | None) -> dict:
    """config/default.yaml (or `base`), then each layer on top. Unknown keys are errors, so a typo never silently
    leaves a default in place."""
    cfg = read_defaults() if base is None else copy.deepcopy(base)
    for source, keys in layers:
        _merge(cfg, copy.deepcopy(keys), source)
    return cfg


def _flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@functools.lru_cache(maxsize=1)
def _schema_and_defaults() -> tuple[dict, dict]:
    with open(SCHEMA) as fh:
        return yaml.safe_load(fh), _flatten(read_defaults())


def _rule_error(rule: dict, value: Any, default: Any) -> str | None:
    """What is wrong with `value` under `rule` (None: nothing); the documented default always passes a
    registry rule."""
    if "length" in rule and len(value) != rule["length"]:
        return f"a list of {rule['length']}"
    if "each" in rule:
        known = default if isinstance(default, list) else []
        for item in value:
            if item not in known and (why := _rule_error(rule["each"], item, None)):
                return f"a list whose every item is {why}"
    if "choices" in rule and value not in rule["choices"]:
        return "one of " + ", ".join(map(str, rule["choices"]))
    if "registry" in rule and value != default and (names := REGISTRIES.get(rule["registry"])) is not None \
            and value not in names:  # None: a registry of the full install's code, not checked on the inference one
        return "one of " + ", ".join(names)
    if rule.get("whole") and not (isinstance(value, int) and not isinstance(value, bool)):
        return "a whole number"
    if "pattern" in rule and not re.fullmatch(rule["pattern"], str(value)):
        return f"of the form {rule['pattern']}"
    bounds = {"min": (">=", lambda v, b: v >= b), "max": ("<=", lambda v, b: v <= b),
              "above": (">", lambda v, b: v > b), "below": ("<", lambda v, b: v < b)}
    for name, (sign, holds) in bounds.items():
        if name in rule and not (isinstance(value, (int, float)) and holds(value, rule[name])):
            return " and ".join(f"{s} {rule[n]}" for n, (s, _) in bounds.items() if n in rule)
    return None


def check_config(cfg: dict) -> None:
    """Check every value against config/schema.yaml (its `registry` rules against the code's registries, named
    in REGISTRIES) and train.monitor against the metrics: one error naming the key, the value and what it may be.
    load_config calls it; a command that merges flags of its own into a config (facematch serve) calls it too."""
    schema, defaults = _schema_and_defaults()
    for key, value in _flatten(cfg).items():
        if key in KEYWORD_KEYS and value == KEYWORD_KEYS[key][0]:
            continue
        for pattern, rule in schema.items():
            if pattern == key or ("*" in pattern and fnmatch.fnmatchcase(key, pattern)):
                why = _rule_error(rule, value, defaults.get(key))
                if why:
                    raise ConfigError(f"config key '{key}' is {value!r}; it must be {why}")
    check_monitor(cfg)


# ---------------------------------------------------------------- what the commands call

def load_config(files: list[str | Path] | None = None, overrides: list[str] | None = None,
                base: dict | None = None, *, layers: Layers | None = None) -> dict:
    """config/default.yaml (or `base`), then the files and overrides (or the `layers` read_layers read of them),
    checked against config/schema.yaml with the code's registries: one error naming the key, the value and what it
    may be."""
    cfg = _merged(read_layers(files, overrides) if layers is None else layers, base)
    check_config(cfg)
    return cfg


def check_monitor(cfg: dict) -> None:
    """train.monitor: a name of metrics.METRICS, on clean validation queries, or degraded_<name> (degraded
    queries) or mean_<name> (the mean of both), which need train.val_degrade: the one check across keys."""
    from evaluation.metrics import METRICS

    t = cfg["train"]
    name = t["monitor"]
    base = name.split("_", 1)[1] if name.startswith(("degraded_", "mean_")) else name
    if base not in METRICS:
        raise ConfigError(f"train.monitor '{name}' is not one of {', '.join(METRICS)} (or degraded_ / mean_ of one)")
    if base != name and t["val_degrade"] == "none":
        raise ConfigError(f"train.monitor '{name}' needs degraded validation queries: set train.val_degrade "
                          "(cutout, gamma or both)")


def embed_settings(cfg: dict) -> dict:
    """The keyword settings pipeline.embedding's embed_paths and embed_folder take, from a config: the data
    and embedding sections typed, and the seed."""
    from dataset import DataSettings
    from runtime import EmbeddingSettings

    return {"data": DataSettings(**cfg["data"]), "embedding": EmbeddingSettings(**cfg["embedding"]), "seed": cfg["seed"]}
