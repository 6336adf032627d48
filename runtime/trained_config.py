"""A model's trained config on today's keys, for a checkpoint (torchnet/checkpoints.py) and an export
(runtime.load_bundle) alike: here, below PyTorch, so an export's config is read on the inference install too."""
from __future__ import annotations

from detection import CropSettings
from utils import moved_keys, read_defaults


def upgrade_config(trained: dict) -> dict:
    """A checkpoint's config on today's keys: keys it lacks get today's defaults, except crop
    settings, which get what cropping did when it was written (CropSettings.from_saved); keys since
    removed are dropped, keys that moved are read under their names now (utils.moved_keys)."""
    cfg = read_defaults()

    def overlay(base: dict, old: dict) -> None:
        for key, value in old.items():
            if key in base and isinstance(base[key], dict) and isinstance(value, dict):
                overlay(base[key], value)
            elif key in base:
                base[key] = value
    overlay(cfg, moved_keys(trained))
    cfg["crop"] = CropSettings.from_saved(trained.get("crop", {})).to_dict()
    trained_model = trained.get("model", {})
    if "head" not in trained_model:
        cfg["model"]["head"] = "linear"
    for key in ("mean", "std"):
        cfg["input"].setdefault(key, "auto")
    return cfg
