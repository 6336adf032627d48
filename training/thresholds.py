"""A trained network's same-person thresholds (evaluation/calibration.py) measured on its validation people, never
trained on, and written into its checkpoint's meta, so the checkpoint carries its calibration wherever it goes.

    calib = thresholds_of(model, val, "cpu", batch_size=64, tta="flip")          # val: training.data.People
    recalibrate(path, read_checkpoint(path), model, data=DataSettings(...), seed=0, loss="arcface", batch_size=64,
                tta="flip", device="cpu")
"""
from __future__ import annotations

from pathlib import Path

import torch

from dataset import DataSettings
from evaluation.calibration import calibrate, summary as calibration_summary
from network import CheckpointError, EmbeddingNet, embed, read_checkpoint, save_checkpoint
from training.data import People, crop_people, split_people
from utils import DataError, get_logger

log = get_logger()


def thresholds_of(model: EmbeddingNet, people: People, device, *, batch_size: int, tta: str,
                  features: torch.Tensor | None = None) -> dict:
    """The model's calibration on `people`: all pairs of their photos, embedded as search embeds them (`tta`:
    embedding.tta). A frozen backbone's stored `features` of their photos spare a second pass."""
    if features is not None and tta == "none":
        model.eval()
        with torch.inference_mode():
            emb = torch.cat([model.from_features(f.to(device)).float().cpu()
                             for f in features.split(batch_size)]).numpy()
    else:
        emb = embed(model, people.crops, batch_size, device, desc="calibrating on the validation people", tta=tta)
    calib = calibrate(emb, people.labels)
    log.info(calibration_summary(calib))
    return calib


def calibrate_best(path: Path, model: EmbeddingNet, val: People, device, *, batch_size: int, tta: str,
                   features: torch.Tensor | None = None) -> None:
    """best.pt's calibration: its weights loaded into `model` (the run's network), thresholds_of them on the
    validation people `val`, written into its meta (and the model's)."""
    ckpt = read_checkpoint(path)
    model.load_state_dict(ckpt["model"])
    ckpt["meta"]["calibration"] = model.meta["calibration"] = thresholds_of(
        model, val, device, batch_size=batch_size, tta=tta, features=features)
    save_checkpoint(path, ckpt)


def recalibrate(path: str | Path, ckpt: dict, model: EmbeddingNet, *, data: DataSettings, seed: int, loss: str,
                batch_size: int, tta: str, device) -> dict:
    """Calibrate a checkpoint (`ckpt`, read from `path`; `model`, its network) written before training calibrated,
    or again: its own validation people, found as its training found them (`data`, `seed`, `loss`), into its
    meta; returns the calibration."""
    _, val_people = split_people(data, seed, loss)
    recorded = ckpt.get("people", {}).get("val")
    if recorded is not None and sorted(recorded) != sorted(val_people):
        raise CheckpointError(f"{path}: its validation people are not what {data.train_dir} gives now "
                              f"(moved or changed data): give data.train_dir=... as it was")
    val = crop_people(val_people, model.crop_settings(), data.cache_dir, "validation people")
    if len(set(val.labels)) < 2:
        raise DataError(f"{path}: fewer than 2 validation people to calibrate on (data.val_fraction)")
    ckpt["meta"]["calibration"] = thresholds_of(model, val, device, batch_size=batch_size, tta=tta)
    save_checkpoint(path, ckpt)
    return ckpt["meta"]["calibration"]
