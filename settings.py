"""The configuration, read at the top: config/default.yaml, --config files and key=value overrides merged and
checked once against config/schema.yaml with the code's registries (named here, so no floor below imports
one above it), a checkpoint's config made ready for inference, and the commands' one way in. Below this
floor nothing reads a config dictionary: each command turns the sections it needs into the typed settings
that the library takes as arguments (CropSettings(**cfg["crop"]), RetrievalSettings(**cfg["retrieval"]), …).

    cfg = load_config(["config/best.yaml"], ["train.epochs=2"])        # checked
    model, cfg, device = load_for_inference("checkpoints/best/best.pt", [], ["retrieval.k=5"])
"""
from __future__ import annotations

import argparse
import copy
import fnmatch
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from utils import (DEFAULT_CONFIG, SCHEMA, ConfigError, FacematchError, get_device, get_logger, moved_keys,
                   read_defaults)

log = get_logger()


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


def _merged(files: list[str | Path] | None, overrides: list[str] | None, base: dict | None) -> dict:
    """config/default.yaml (or `base`), then each file and each key=value override on top. Unknown keys are
    errors, so a typo never silently leaves a default in place."""
    if base is None:
        cfg = read_defaults()
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
        _merge(cfg, moved_keys(data), str(path))
    for text in overrides or []:
        _merge(cfg, moved_keys(parse_override(text)), f"override '{text}'")
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
    if "registry" in rule and value != default and value not in (names := REGISTRIES[rule["registry"]]):
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


# ---------------------------------------------------------------- the registries the schema names

def _steps():
    from detection.chain import STEPS
    return STEPS


def _alignments():
    from detection.align import ALIGNMENTS
    return ALIGNMENTS


def _backbones():
    from backbones.registry import BACKBONES
    return BACKBONES


def _poolings():
    from network import POOLINGS
    return POOLINGS


def _heads():
    from network import HEADS
    return HEADS


def _landmarks():
    from detection.chain import LANDMARKS
    return LANDMARKS


def _precisions():
    from runtime.onnx_model import PRECISIONS
    return PRECISIONS


def _tta():
    from runtime import TTA
    return TTA


def _losses():
    from training.losses import LOSSES
    return LOSSES


def _degradations():
    from dataset import DEGRADATIONS
    return DEGRADATIONS


def _cover_kinds():
    from occlusion.covers import COVERS
    return COVERS


def _crop_degradations():
    from dataset import CROP_DEGRADATIONS
    return CROP_DEGRADATIONS


def _val_degradations():
    from dataset import VAL_DEGRADATIONS
    return VAL_DEGRADATIONS


def _distances():
    from search.exact import DISTANCES
    return DISTANCES


def _rerankers():
    from search.rerank import RERANKERS
    return RERANKERS


def _feedback_methods():
    from search.feedback import FEEDBACK
    return FEEDBACK


class _Registries(Mapping):
    """The schema's registry names -> the code's registries, each imported only when a value is checked
    against it (a command that never names a loss never imports the losses)."""
    _table: dict[str, Callable[[], Any]] = {
        "detection_steps": _steps, "alignments": _alignments, "landmarks": _landmarks, "backbones": _backbones, "poolings": _poolings,
        "heads": _heads, "tta": _tta, "precisions": _precisions, "losses": _losses, "degradations": _degradations, "crop_degradations": _crop_degradations,
        "val_degradations": _val_degradations,
        "cover_kinds": _cover_kinds,
        "distances": _distances,
        "rerankers": _rerankers, "feedback_methods": _feedback_methods,
    }

    def __getitem__(self, name: str):
        return list(self._table[name]())

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


REGISTRIES = _Registries()


# ---------------------------------------------------------------- what the commands call

def load_config(files: list[str | Path] | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> dict:
    """config/default.yaml (or `base`), then the files and overrides, checked against config/schema.yaml
    with the code's registries: one error naming the key, the value and what it may be."""
    cfg = _merged(files, overrides, base)
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


def build_model(cfg: dict):
    """The network `cfg` describes, with its configured weights: (model, where the weights came from)."""
    from network import EmbeddingNet, settings_of

    model_settings, inp, crop = settings_of(cfg)
    model = EmbeddingNet(model_settings, inp, crop, model_settings.weights)
    return model, model.weights_source


def crop_settings_of(cfg: dict) -> list:
    """How a config's model crops photos: its crop section, or each member's (model.members: a config file's crop
    section, a checkpoint's saved crop settings)."""
    from detection import CropSettings
    from network import read_checkpoint

    crops = []
    for member in cfg["model"]["members"] or [None]:
        if member is None:
            crops.append(CropSettings(**cfg["crop"]))
        elif str(member).endswith(".pt"):
            ckpt = read_checkpoint(member)
            metas = ckpt["meta"]["members"] if "members" in ckpt else [ckpt["meta"]]
            crops += [CropSettings.from_saved(meta["crop"]) for meta in metas]
        else:
            crops.append(CropSettings(**load_config([member])["crop"]))
    return crops


RUNTIME_KEYS = ("runtime", "precision", "threads")  # how the network runs, the user's to choose at inference


def same_landmark_net(section: str, key: str, cfg: dict, trained: dict) -> bool:
    """Whether crop.landmark_net names the same file content in both configs (a checkpoint carries its landmark network
    under another path: 'shipped' in the config file, its cache copy in the checkpoint)."""
    if (section, key) != ("crop", "landmark_net") or cfg[section][key] == trained[section][key]:
        return False
    from detection import landmark_net

    return landmark_net.same_network(cfg[section][key], trained[section][key])


def load_for_inference(checkpoint: str | Path, cfg_files: list[str] | None = None,
                       overrides: list[str] | None = None):
    """The checkpoint's model, its config with the caller's config files and overrides on top, and the
    device: the network and its preprocessing (model, input and crop settings) stay as trained, so
    queries and gallery are seen exactly as validation saw them (a change to them is named and ignored).
    model.runtime, model.precision and model.threads are the caller's: onnx runs the checkpoint's export (made once,
    deploy.exported) in ONNX Runtime; a folder `facematch export` wrote runs there whatever they say."""
    from detection import CROP_KEYS
    from network import model_from_checkpoint
    from runtime import is_bundle

    user = load_config(cfg_files, overrides)
    device = get_device(user["device"])
    run = {k: user["model"][k] for k in RUNTIME_KEYS}
    path = checkpoint
    if run["runtime"] == "onnx" and not is_bundle(checkpoint):
        from deploy import exported

        path = exported(checkpoint, run["precision"], calibrate=user["data"]["train_dir"])
    model, trained = model_from_checkpoint(path, device, threads=int(run["threads"]))
    if is_bundle(path):
        if run["precision"] != model.precision and path == checkpoint:
            log.warning(f"model.precision={run['precision']!r} ignored: {checkpoint} was exported in {model.precision}")
        run.update(runtime="onnx", precision=model.precision)
    cfg = load_config(cfg_files, overrides, base=trained)
    cfg["device"] = user["device"]
    cfg["model"].update(run)
    for section in ("model", "input", "crop"):
        for key in list(trained[section]):
            if section == "model" and key in RUNTIME_KEYS or same_landmark_net(section, key, cfg, trained):
                continue
            if cfg[section][key] != trained[section][key]:
                log.warning(f"{section}.{key}={cfg[section][key]!r} ignored: {checkpoint} was trained with "
                            f"{trained[section][key]!r}")
                cfg[section][key] = trained[section][key]
    cfg["crop"].update({k: v for k, v in model.crop_settings().to_dict().items() if k in CROP_KEYS})
    return model, cfg, device


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
    (`facematch faces`'s folders), which are moved to args.overrides."""
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
