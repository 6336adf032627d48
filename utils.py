"""Small shared helpers: configuration, seeding, device choice, logging, atomic writes."""
from __future__ import annotations

import argparse
import copy
import fnmatch
import functools
import importlib
import logging
import os
import random
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent
_UMASK = os.umask(0)
os.umask(_UMASK)
DEFAULT_CONFIG = ROOT / "config" / "default.yaml"
SCHEMA = ROOT / "config" / "schema.yaml"
# Keys that take a keyword ('auto': the backbone's own value; 'all') or a value of the type given here.
KEYWORD_KEYS = {"input.size": ("auto", 0), "input.mean": ("auto", []), "input.std": ("auto", []),
                "model.freeze": ("all", 0), "train.lr_backbone": ("auto", 0.0)}
NAME_OR_LIST_KEYS = {"data.train_dir"}  # a folder, or a list of folders


class FacematchError(Exception):
    """Base of every error facematch raises on bad input; its message names the file or field."""


class ConfigError(FacematchError, ValueError):
    """A configuration file or override names an unknown key or holds a bad value."""


class DataError(FacematchError, ValueError):
    """A data folder that cannot be used (missing, empty, no identities); the message names it."""


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


def load_config(files: list[str | Path] | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> dict:
    """Load config/default.yaml (or `base`), then each file and each key=value override on top.

    Unknown keys are errors, so a typo never silently leaves a default in place.
    """
    if base is None:
        with open(DEFAULT_CONFIG) as fh:
            cfg = yaml.safe_load(fh)
    else:
        cfg = copy.deepcopy(base)
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
        _merge(cfg, data, str(path))
    for text in overrides or []:
        _merge(cfg, parse_override(text), f"override '{text}'")
    check_config(cfg)
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
    with open(SCHEMA) as fh, open(DEFAULT_CONFIG) as dh:
        return yaml.safe_load(fh), _flatten(yaml.safe_load(dh))


def _registry(spec: str) -> list[str]:
    """The names of a registry in the code, 'module:NAME'. Imported here, by name, so that this module
    (which everything imports) imports nothing of facematch's, and a new entry needs no schema edit."""
    module, name = spec.split(":")
    return list(getattr(importlib.import_module(module), name))


def _rule_error(rule: dict, value: Any, default: Any) -> str | None:
    """What is wrong with `value` under `rule` (None: nothing); `default` spares a registry look-up."""
    if "length" in rule and len(value) != rule["length"]:
        return f"a list of {rule['length']}"
    if "each" in rule:
        known = default if isinstance(default, list) else []
        for item in value:
            if item not in known and (why := _rule_error(rule["each"], item, None)):
                return f"a list whose every item is {why}"
    if "choices" in rule and value not in rule["choices"]:
        return "one of " + ", ".join(map(str, rule["choices"]))
    if "registry" in rule and value != default and value not in (names := _registry(rule["registry"])):
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
    """Check every value against config/schema.yaml: one error naming the key, the value and what it may be."""
    schema, defaults = _schema_and_defaults()
    for key, value in _flatten(cfg).items():
        if key in KEYWORD_KEYS and value == KEYWORD_KEYS[key][0]:
            continue
        for pattern, rule in schema.items():
            if pattern == key or ("*" in pattern and fnmatch.fnmatchcase(key, pattern)):
                why = _rule_error(rule, value, defaults.get(key))
                if why:
                    raise ConfigError(f"config key '{key}' is {value!r}; it must be {why}")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run can be repeated."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(name: str = "auto"):
    """Return the torch device named in the config; 'auto' picks CUDA when present."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for, but no CUDA device is available")
    return torch.device(name)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time, so redirection and test capture see it."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def get_logger(name: str = "facematch") -> logging.Logger:
    """A logger that prints 'facematch: message' to stderr once per process."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path) and rename the result onto `path`, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package
    (face_recognition_models' own import needs pkg_resources, gone from setuptools ≥ 81)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FacematchError(f"package '{package}' is not installed: run `make venv` "
                             f"(it is in requirements.txt) to get {'/'.join(parts)}")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise FacematchError(f"package '{package}' has no file {'/'.join(parts)} (looked at {path})")
    return path


def available_memory(device) -> int:
    """Bytes free now for new tensors on `device`: the GPU's free memory, or the RAM Linux says
    is available (MemAvailable), or the physical RAM where /proc is missing."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))



def run_command(doc: str, arguments: Callable[[argparse.ArgumentParser], None],
                body: Callable[[argparse.Namespace], int | None], argv: list[str] | None = None, *,
                prog: str | None = None, config: str = "config/default.yaml", mixed: str | None = None,
                errors: tuple[type[BaseException], ...] = ()) -> int:
    """The one way in for every command: its own arguments (`arguments` adds them), then --config files
    (on top of `config`) and key=value overrides, and the error tail: a FacematchError, an OSError or
    one of `errors` is one logged line and exit status 2, never a traceback.

    `body(args)` does the work with args.config and args.overrides; with config="config/default.yaml"
    args.cfg is load_config(args.config, args.overrides) (other commands start from a checkpoint's
    config and load it themselves). `mixed` names a positional list that holds the overrides too
    (faces.py's folders), which are moved to args.overrides."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(parser)
    parser.add_argument("--config", action="append", default=[], help=f"config file(s) on top of {config}")
    if mixed is None:
        parser.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. seed=1)")
    args = parser.parse_intermixed_args(argv) if mixed else parser.parse_args(argv)
    if mixed:
        items = getattr(args, mixed)
        args.overrides = [a for a in items if "=" in a]
        setattr(args, mixed, [a for a in items if "=" not in a])
    args.parser = parser
    try:
        if config == "config/default.yaml":
            args.cfg = load_config(args.config, args.overrides)
        return int(body(args) or 0)
    except (FacematchError, OSError, *errors) as exc:
        get_logger().error(f"error: {exc}")
        return 2
