"""Train the embedding network with metric learning on identity folders, validating every epoch
on held-out people with the competition protocol.

    python train.py --config config/demo.yaml                 # a config file, then overrides
    python train.py train.epochs=5 model.arch=resnet18 loss.name=multi_similarity
    python train.py --resume checkpoints/run/last.pt          # continue an interrupted run exactly

Writes <train.out_dir>/{best.pt,last.pt,log.csv} and the training-curve figure (train.figure).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from dataset import DataError, FaceDataset, PKSampler, identity_split, list_identities, train_transform
from faces import crop_paths
from evaluate import format_report, score_labelled
from metrics import METRICS, SUMMARY
from plots import draw_curve
from losses import LOSSES, build_loss
from network import (CheckpointError, EmbeddingNet, build_model, embed, load_model_state, model_from_config,
                     read_checkpoint, save_checkpoint)
from utils import ConfigError, FacematchError, atomic_write, get_device, get_logger, load_config, seed_everything

log = get_logger()



# ---------------------------------------------------------------- data

def split_people(cfg: dict) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Training and validation people from data.train_dir, split by identity, never by photo.

    With several folders, people are named <folder>/<person> so two folders never merge people.
    """
    roots = cfg["data"]["train_dir"]
    roots = [roots] if isinstance(roots, str) else list(roots)
    if len(roots) == 1:
        people = list_identities(roots[0], cfg["data"]["min_photos"])
    else:
        people = {f"{Path(root).name}/{name}": photos for root in roots
                  for name, photos in list_identities(root, cfg["data"]["min_photos"]).items()}
    train_names, val_names = identity_split(list(people), cfg["data"]["val_fraction"], cfg["seed"])
    return {n: people[n] for n in train_names}, {n: people[n] for n in val_names}


def crop_people(people: dict[str, list[Path]], crop_cfg: dict, cache_dir: str,
                what: str) -> tuple[list, list[int], list[str]]:
    """Crop every photo (cached); returns (crops, integer labels, names by label)."""
    paths = [p for photos in people.values() for p in photos]
    owners = [name for name, photos in people.items() for _ in photos]
    crops, report = crop_paths(paths, crop_cfg, cache_dir, desc=f"cropping {what}")
    log.info(f"{what}: {report.summary()}")
    names = sorted({o for o, c in zip(owners, crops) if c is not None})
    index = {n: i for i, n in enumerate(names)}
    kept = [(c, index[o]) for o, c in zip(owners, crops) if c is not None]
    return [c for c, _ in kept], [lab for _, lab in kept], names


# ---------------------------------------------------------------- optimisation

def make_optimizer(model: EmbeddingNet, loss_fn: torch.nn.Module, cfg: dict) -> torch.optim.AdamW:
    """AdamW with one learning rate for the backbone and another for the head (and loss weights)."""
    t = cfg["train"]
    head = model.head_parameters() + list(loss_fn.parameters())
    return torch.optim.AdamW([
        {"params": model.backbone_parameters(), "lr": float(t["lr_backbone"])},
        {"params": head, "lr": float(t["lr_head"])},
    ], weight_decay=float(t["weight_decay"]))


def warmup_cosine(warmup_steps: int, total_steps: int, min_factor: float):
    """Learning-rate factor per step: linear warm-up to 1, then cosine decay to min_factor."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def validate(model: EmbeddingNet, crops: list, labels: list[int], cfg: dict, device) -> dict:
    """Competition protocol on the held-out people: top-1/5/10, mAP and the rest."""
    emb = embed(model, crops, cfg["train"]["batch_size_eval"], device, desc="validating")
    report, *_ = score_labelled(emb, labels, cfg)
    return report


# ---------------------------------------------------------------- log and figure

LOG_FIELDS = ["epoch", "train_loss", "lr_backbone", "lr_head", *SUMMARY, "seconds"]


def write_log(path: Path, history: list[dict]) -> None:
    """The CSV log, rewritten whole from the history so it always matches the checkpoint."""
    def write(tmp):
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)
    atomic_write(path, write)


# ---------------------------------------------------------------- the loop

def train(cfg: dict, resume: str | Path | None = None) -> dict:
    """Train from cfg (or continue the checkpoint `resume`); returns the last checkpoint's state."""
    t = cfg["train"]
    if cfg["loss"]["name"] not in LOSSES:
        raise ConfigError(f"loss.name '{cfg['loss']['name']}' is not one of {', '.join(LOSSES)}")
    if t["monitor"] not in METRICS:
        raise ConfigError(f"train.monitor '{t['monitor']}' is not one of {', '.join(METRICS)}")
    device = get_device(cfg["device"])
    seed_everything(cfg["seed"])
    out_dir = Path(t["out_dir"])

    ckpt = read_checkpoint(resume) if resume else None
    if ckpt is not None:
        model = model_from_config(cfg)
        load_model_state(model, ckpt, resume)
        source = f"resumed from {resume} (epoch {ckpt['epoch']})"
    else:
        model, source = build_model(cfg)
    log.info(f"model: {cfg['model']['arch']}, {model.embedding_size}-d, weights: {source}")
    if cfg["model"]["weights"] in ("none", "", None) and ckpt is None:
        log.warning("training from random weights (model.weights=none): expect far lower scores "
                    "than from pretrained weights")

    train_people, val_people = split_people(cfg)
    overlap = set(train_people) & set(val_people)
    assert not overlap, f"identity split leaked people into validation: {sorted(overlap)[:3]}"
    crop_cfg, cache_dir = model.meta["crop"], cfg["data"]["cache_dir"]
    train_crops, train_labels, train_names = crop_people(train_people, crop_cfg, cache_dir, "training people")
    val_crops, val_labels, val_names = (crop_people(val_people, crop_cfg, cache_dir, "validation people")
                                        if val_people else ([], [], []))
    if len(train_names) < 2:
        raise DataError(f"{cfg['data']['train_dir']}: need 2 or more training people, got {len(train_names)}")
    log.info(f"{len(train_names)} training people ({len(train_crops)} photos), "
             f"{len(val_names)} validation people ({len(val_crops)} photos)")
    if ckpt is not None and ckpt.get("people", {}).get("train") != train_names:
        raise CheckpointError(f"{resume} was trained on other people than {cfg['data']['train_dir']} "
                              f"with seed {cfg['seed']} gives: cannot resume it exactly")
    model.to(device)
    loss_fn = build_loss(cfg["loss"], len(train_names), model.embedding_size).to(device)

    dataset = FaceDataset(train_crops, train_labels, train_transform(cfg["augment"], model.meta["input"]))
    sampler = PKSampler(train_labels, t["P"], t["K"], t["batches_per_epoch"], cfg["seed"])
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg["data"]["num_workers"],
                                         pin_memory=device.type == "cuda")
    optimizer = make_optimizer(model, loss_fn, cfg)
    steps = len(sampler) * t["epochs"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(max(1, int(t["warmup_epochs"] * len(sampler))), steps, float(t["min_lr_factor"])))
    use_amp = bool(t["amp"]) and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    monitor = t["monitor"] if val_crops else "loss"
    state = {"epoch": 0, "history": [], "best": None, "bad_epochs": 0, "monitor": monitor}
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        loss_fn.load_state_dict(ckpt["loss"])
        state = {k: ckpt[k] for k in state}

    def save(metrics: dict, improved: bool) -> None:
        ckpt_state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "loss": loss_fn.state_dict(),
            "metrics": metrics, "config": cfg, "weights_source": source,
            "meta": model.meta, "model_info": model.describe(),
            "people": {"train": train_names, "val": val_names}, **state,
        }
        save_checkpoint(out_dir / "last.pt", ckpt_state)
        if improved:
            save_checkpoint(out_dir / "best.pt", ckpt_state)

    trainable = any(p.requires_grad for g in optimizer.param_groups for p in g["params"])
    if ckpt is None and (t["epochs"] == 0 or not trainable):
        # A pretrained network used as it is (dlib's descriptor with head none, or epochs 0):
        # scored once on the validation people and saved, so evaluation and submission take it.
        log.info("nothing to train (train.epochs=0 or no trainable parameter): saving the network as it is")
        metrics = validate(model, val_crops, val_labels, cfg, device) if val_crops else {}
        if metrics:
            log.info(f"validation: {format_report(metrics)}")
            state["best"] = metrics[monitor] if monitor != "loss" else None
        save(metrics, True)
        return state

    for epoch in range(state["epoch"] + 1, t["epochs"] + 1):
        if t["patience"] and state["bad_epochs"] >= t["patience"]:
            log.info(f"early stopping: no {monitor} improvement in {t['patience']} epochs")
            break
        started = time.time()
        model.train()
        sampler.set_epoch(epoch)
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{t['epochs']}", unit="batch", leave=False, disable=None)
        for images, labels in bar:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                emb = model(images)
            loss = loss_fn(emb.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if t["grad_clip"]:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(loss_fn.parameters()), t["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total, count = total + loss.item(), count + 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        row = {"epoch": epoch, "train_loss": total / max(count, 1),
               "lr_backbone": optimizer.param_groups[0]["lr"], "lr_head": optimizer.param_groups[1]["lr"]}
        metrics = validate(model, val_crops, val_labels, cfg, device) if val_crops else {}
        row.update({k: metrics[k] for k in SUMMARY if k in metrics})
        row["seconds"] = round(time.time() - started, 2)
        state["history"].append(row)
        value = row["train_loss"] if monitor == "loss" else row[monitor]
        improved = state["best"] is None or (value < state["best"] if monitor == "loss" else value > state["best"])
        state["best"] = value if improved else state["best"]
        state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        state["epoch"] = epoch
        log.info(f"epoch {epoch}: loss {row['train_loss']:.4f}"
                 + (f"  val {format_report(metrics)}" if metrics else "") + ("  (best)" if improved else ""))

        save(metrics, improved)
        write_log(out_dir / "log.csv", state["history"])
        draw_curve(t["figure"], state["history"],
                   f"{cfg['model']['arch']}, {cfg['loss']['name']}, {len(train_names)} training people")
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], help="config file(s) on top of config/default.yaml")
    parser.add_argument("--resume", help="a last.pt to continue; its own config is used, then the overrides")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. train.epochs=5)")
    args = parser.parse_args(argv)
    try:
        if args.resume:
            cfg = load_config(args.config, args.overrides, base=read_checkpoint(args.resume)["config"])
        else:
            cfg = load_config(args.config, args.overrides)
        state = train(cfg, args.resume)
    except (FacematchError, OSError) as exc:
        log.error(f"error: {exc}")
        return 2
    if state["best"] is not None:
        print(f"trained {state['epoch']} epochs; best {state['monitor']} {state['best']:.4f}; "
              f"checkpoints in {cfg['train']['out_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
