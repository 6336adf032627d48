"""Train the embedding network with metric learning on identity folders, validating every epoch
on held-out people with the competition protocol.

    python train.py --config config/demo.yaml                 # a config file, then overrides
    python train.py train.epochs=5 model.arch=resnet18 loss.name=multi_similarity
    python train.py --resume checkpoints/run/last.pt          # continue an interrupted run exactly
    torchrun --standalone --nproc_per_node=2 train.py --config config/demo.yaml   # several processes

Writes <train.out_dir>/{best.pt,last.pt,log.csv} and the training-curve figure (train.figure).

Read it top to bottom: `train` sets up a Run (the model, its people and their crops, the loss, the
data loader, the optimiser) and a RunState (what a checkpoint carries to resume exactly), scores the
weights as loaded as epoch 0's candidate, then runs `train_epoch` and `end_epoch` until the last
epoch, early stopping or a collapse; `save` writes the checkpoints and best.pt is calibrated last. A fusion
(model.members) trains nothing of its own: `member_checkpoints` and `fuse`, after the loop. The parts live in
training/.

Under torchrun (WORLD_SIZE > 1) every process draws the same global P×K batches and embeds its own
contiguous share; the embeddings are gathered so the loss (and its miner) sees the whole global
batch, BatchNorm uses the global batch's statistics, and DistributedDataParallel averages the
gradients: the update is the one a single process makes on the same batch. Rank 0 alone logs,
validates and writes checkpoints, log and figure; a checkpoint resumes with any number of processes.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import utils  # noqa: F401  first: without .venv's packages it says "run `make venv` first", not a traceback
import torch

from dataset import AugmentSettings, DataSettings, FaceDataset, PKSampler, train_transform
from evaluation.calibration import summary as calibration_summary
from evaluation.metrics import SUMMARY
from evaluation.plots import draw_curve
from pipeline.protocol import format_report
from network import (CheckpointError, EmbeddingNet, load_model_state, model_from_checkpoint, settings_of,
                     read_checkpoint, save_checkpoint)
from training.data import People, crop_people, split_people
from training.distill import DistillDataset, teacher_targets
from training.distributed import Processes
from training.frozen import FeatureDataset, FromFeatures, frozen_features
from training.fusion import fuse_checkpoints
from training.losses import LossSettings, build_loss
from training.optim import make_optimizer, warmup_cosine
from training.thresholds import calibrate_best, recalibrate, thresholds_of
from pipeline.validation import validate
from runtime import EmbeddingSettings
from search.retrieval_settings import RetrievalSettings
from utils import ConfigError, DataError, atomic_write, get_device, get_logger, progress, seed_everything
from settings import build_model, load_config, run_command

log = get_logger()

FIGURE_EVERY_S = 30  # the curve is redrawn at most this often (about 1 s of matplotlib each time), and at the end
LOG_FIELDS = ["epoch", "train_loss", "lr_backbone", "lr_head", *SUMMARY, *(f"degraded_{k}" for k in SUMMARY), "seconds"]


@dataclass
class RunState:
    """What a checkpoint carries about the run besides its weights, so that a resume continues exactly."""
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: float | None = None  # the monitored value of best.pt
    bad_epochs: int = 0  # epochs since it improved (early stopping)
    monitor: str = "loss"
    start: float | None = None  # the monitored value of the weights as loaded (the collapse check)
    collapsed: int | None = None  # the epoch a collapse stopped the run

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> RunState:
        return cls(**{f.name: ckpt.get(f.name) for f in fields(cls)})


@dataclass
class Run:
    """What is set up once: the model and where its weights came from, the people and their crops,
    the loss, the data and the optimiser."""
    cfg: dict
    procs: Processes
    device: torch.device
    model: EmbeddingNet
    source: str
    train: People
    val: People
    val_features: torch.Tensor | None  # a frozen backbone's features of the validation photos
    loss_fn: torch.nn.Module
    dataset: torch.utils.data.Dataset
    sampler: PKSampler
    loader: torch.utils.data.DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # None: full precision
    stored_features: bool  # the head trains on a frozen backbone's stored features

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg["train"]["out_dir"])


# ---------------------------------------------------------------- set-up

def validation(cfg: dict) -> dict:
    """validate()'s settings from the config: how validation embeds, ranks, degrades and picks its queries."""
    t = cfg["train"]
    return {"batch_size": t["batch_size_eval"], "retrieval": RetrievalSettings(**cfg["retrieval"]),
            "degradation": t["val_degrade"], "queries": t["val_queries"],
            "queries_per_person": cfg["split"]["queries_per_person"], "seed": cfg["seed"],
            "cover_kinds": cfg["augment"]["cover_kinds"]}


def load_model(cfg: dict, resume: str | Path | None, procs: Processes) -> tuple[EmbeddingNet, str, dict | None]:
    """The network: built with its configured weights, or the checkpoint `resume`'s; (model, source, ckpt)."""
    ckpt = read_checkpoint(resume) if resume else None
    if ckpt is not None:
        model = EmbeddingNet(*settings_of(cfg))
        load_model_state(model, ckpt, resume)
        source = f"resumed from {resume} (epoch {ckpt['epoch']})"
        if ckpt.get("world_size", 1) != procs.world:
            log.info(f"{resume} was trained by {ckpt.get('world_size', 1)} process(es), continued by {procs.world}: "
                     f"the global batches of P×K photos are the same")
    else:
        model, source = build_model(cfg)
    log.info(f"model: {cfg['model']['arch']}, {model.embedding_size}-d, weights: {source}")
    if cfg["model"]["weights"] in ("none", "", None) and ckpt is None:
        log.warning("training from random weights (model.weights=none): expect far lower scores "
                    "than from pretrained weights")
    return model, source, ckpt


def load_people(cfg: dict, model: EmbeddingNet, procs: Processes) -> tuple[People, People]:
    """The training and validation people, split by identity, cropped as the model's meta says
    (rank 0 crops first and fills the cache; the others then read it)."""
    train_people, val_people = split_people(DataSettings(**cfg["data"]), cfg["seed"], cfg["loss"]["name"])
    overlap = set(train_people) & set(val_people)
    assert not overlap, f"identity split leaked people into validation: {sorted(overlap)[:3]}"
    crop, cache_dir = model.crop_settings(), cfg["data"]["cache_dir"]
    if not procs.main:
        procs.barrier()
    train = crop_people(train_people, crop, cache_dir, "training people")
    val = crop_people(val_people, crop, cache_dir, "validation people") if val_people else People([], [], [], [])
    if procs.main:
        procs.barrier()
    if len(train.names) < 2:
        raise DataError(f"{cfg['data']['train_dir']}: need 2 or more training people, got {len(train.names)}")
    log.info(f"{len(train.names)} training people ({len(train.crops)} photos), "
             f"{len(val.names)} validation people ({len(val.crops)} photos)")
    return train, val


def make_dataset(cfg: dict, model: EmbeddingNet, loss_fn: torch.nn.Module, people: tuple[People, People],
                 ckpt: dict | None, device: torch.device,
                 procs: Processes) -> tuple[torch.utils.data.Dataset, bool, torch.Tensor | None]:
    """What a batch is drawn from: stored features of a frozen backbone, crops with a teacher's
    targets (distillation), or crops through the training augmentation; (dataset, stored, val features)."""
    t, ((crops, labels, _, paths), val) = cfg["train"], people
    augment = AugmentSettings(**cfg["augment"])
    views = int(t["frozen_views"])
    stored = (not model.trainable_backbone and views > 0 and t["epochs"] > 0 and not loss_fn.needs_targets
              and any(p.requires_grad for p in model.head_parameters()))
    if stored:
        log.info(f"frozen {cfg['model']['arch']} backbone: its features of {views} view(s) of every photo are "
                 f"computed once (train.frozen_views), then the head trains on them")
        how = {"augment": augment, "batch_size": t["batch_size_eval"], "num_workers": cfg["data"]["num_workers"],
               "seed": cfg["seed"]}
        dataset = FeatureDataset(frozen_features(model, crops, views, device, "training people", **how), labels)
        val_features = (frozen_features(model, val.crops, 1, device, "validation people", **how)[:, 0]
                        if val.crops and procs.main else None)
        return dataset, True, val_features
    if loss_fn.needs_targets and t["epochs"] > 0:
        targets = (teacher_targets(cfg["loss"]["teacher"], model, paths, crops, device, batch_size=t["batch_size_eval"],
                                   cache_dir=cfg["data"]["cache_dir"]) if ckpt is None else ckpt["distill_targets"])
        return DistillDataset(crops, labels, targets, augment, model.meta["input"]), False, None
    return FaceDataset(crops, labels, train_transform(augment, model.meta["input"])), False, None


def set_up(cfg: dict, resume: str | Path | None, procs: Processes) -> tuple[Run, RunState, dict | None]:
    """Everything the loop needs, and the run's state: new, or the checkpoint `resume`'s."""
    t = cfg["train"]
    device = procs.place(get_device(cfg["device"]))
    seed_everything(cfg["seed"])
    model, source, ckpt = load_model(cfg, resume, procs)
    train, val = load_people(cfg, model, procs)
    if ckpt is not None and ckpt.get("people", {}).get("train") != train.names:
        raise CheckpointError(f"{resume} was trained on other people than {cfg['data']['train_dir']} "
                              f"with seed {cfg['seed']} gives: cannot resume it exactly")
    model.to(device)
    loss_fn = build_loss(LossSettings(**cfg["loss"]), len(train.names), model.embedding_size).to(device)
    dataset, stored, val_features = make_dataset(cfg, model, loss_fn, (train, val), ckpt, device, procs)
    sampler = PKSampler(train.labels, t["P"], t["K"], t["batches_per_epoch"], cfg["seed"], procs.rank, procs.world)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg["data"]["num_workers"],
                                         pin_memory=device.type == "cuda")
    optimizer = make_optimizer(model, loss_fn, t["lr_backbone"], t["lr_head"], t["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        max(1, int(t["warmup_epochs"] * len(sampler))), len(sampler) * t["epochs"], float(t["min_lr_factor"])))
    amp_dtype = None
    if bool(t["amp"]) and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    run = Run(cfg, procs, device, model, source, train, val, val_features, loss_fn, dataset, sampler, loader,
              optimizer, scheduler, scaler, amp_dtype, stored)
    state = RunState(monitor=t["monitor"] if val.crops else "loss")
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        loss_fn.load_state_dict(ckpt["loss"])
        state = RunState.from_checkpoint(ckpt)
    return run, state, ckpt


# ---------------------------------------------------------------- saving

def save(run: Run, state: RunState, metrics: dict, improved: bool) -> None:
    """last.pt (and best.pt when improved): weights, optimiser, schedule, the run's state, and what
    inference needs (config, meta with the preprocessing)."""
    ckpt = {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "loss": run.loss_fn.state_dict(),
        "metrics": metrics, "config": run.cfg, "weights_source": run.source,
        "meta": run.model.meta, "model_info": run.model.describe(),
        "people": {"train": run.train.names, "val": run.val.names}, "world_size": run.procs.world, **asdict(state),
    }
    if isinstance(run.dataset, DistillDataset):
        ckpt["distill_targets"] = run.dataset.targets  # a resume trains towards the same targets
    save_checkpoint(run.out_dir / "last.pt", ckpt)
    if improved:
        save_checkpoint(run.out_dir / "best.pt", ckpt)


def write_log(path: Path, history: list[dict]) -> None:
    """The CSV log, rewritten whole from the history so it always matches the checkpoint."""
    def write(tmp):
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)
    atomic_write(path, write)


def draw(run: Run, state: RunState) -> None:
    cfg = run.cfg
    draw_curve(cfg["train"]["figure"], state.history,
               f"{cfg['model']['arch']}, {cfg['loss']['name']}, {len(run.train.names)} training people")


def calibration_of(run: Run) -> dict:
    """The run's model's same-person thresholds on its validation people (training/thresholds.py), embedded as
    search embeds them (embedding.tta)."""
    return thresholds_of(run.model, run.val, run.device, batch_size=run.cfg["train"]["batch_size_eval"],
                         tta=run.cfg["embedding"]["tta"])


# ---------------------------------------------------------------- before the first epoch

def save_as_it_is(run: Run, state: RunState) -> RunState:
    """A pretrained network used as it is (dlib's descriptor with head none, or epochs 0): scored once
    on the validation people and saved, so evaluation and submission take it."""
    log.info("nothing to train (train.epochs=0 or no trainable parameter): saving the network as it is")
    procs = run.procs
    metrics = procs.share(validate(run.model, run.val.crops, run.val.labels, run.device, **validation(run.cfg))
                          if run.val.crops and procs.main else {})
    if metrics:
        log.info(f"validation: {format_report(metrics)}")
        state.best = metrics[state.monitor] if state.monitor != "loss" else None
    if procs.main:
        if len(set(run.val.labels)) >= 2:  # the weights saved are these: calibrate them before the one save
            run.model.meta["calibration"] = calibration_of(run)
        save(run, state, metrics, True)
    procs.barrier()
    return state


def score_as_loaded(run: Run, state: RunState) -> None:
    """Pretrained weights are the first candidate (epoch 0): training must beat them, or best.pt stays them."""
    procs = run.procs
    metrics = procs.share(validate(run.model, run.val.crops, run.val.labels, run.device, **validation(run.cfg),
                                   features=run.val_features) if procs.main else {})
    state.start = metrics[state.monitor] if state.monitor != "loss" else None
    state.best = state.start
    state.history.append({"epoch": 0, "train_loss": float("nan"),
                          **{k: v for k, v in metrics.items() if k in LOG_FIELDS or k == state.monitor}})
    log.info(f"epoch 0 (the weights as loaded): val {format_report(metrics)}")
    if procs.main:
        save(run, state, metrics, True)


# ---------------------------------------------------------------- an epoch

def train_epoch(run: Run, net: torch.nn.Module, epoch: int) -> float:
    """One pass of the sampler's batches: loss on the global batch, a step of the optimiser and the
    schedule per batch; returns the mean loss."""
    t, device, procs = run.cfg["train"], run.device, run.procs
    net.train()
    run.sampler.set_epoch(epoch)
    loss_params = [p for p in run.loss_fn.parameters() if p.requires_grad]
    clipped = list(run.model.parameters()) + list(run.loss_fn.parameters())
    total, count = 0.0, 0
    bar = progress(run.loader, desc=f"epoch {epoch}/{t['epochs']}", unit="batch", disable=not procs.main)
    for images, labels, *targets in bar:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        targets = targets[0].to(device, non_blocking=True) if targets else None
        with torch.autocast(device.type, dtype=run.amp_dtype or torch.float16, enabled=run.amp_dtype is not None):
            emb = net(images)
        loss = run.loss_fn(*procs.global_batch(emb.float(), labels, targets))  # this process's share, gathered
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        procs.average_gradients(loss_params)
        if t["grad_clip"]:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(clipped, t["grad_clip"])
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        total, count = total + loss.item(), count + 1
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def end_epoch(run: Run, state: RunState, epoch: int, loss: float, started: float) -> tuple[dict, bool, bool]:
    """Validate (rank 0), log, and update the state: best, patience, collapse; (metrics, improved, collapsed)."""
    t, monitor, procs = run.cfg["train"], state.monitor, run.procs
    row = {"epoch": epoch, "train_loss": loss,
           "lr_backbone": run.optimizer.param_groups[0]["lr"], "lr_head": run.optimizer.param_groups[1]["lr"]}
    metrics = (validate(run.model, run.val.crops, run.val.labels, run.device, **validation(run.cfg),
                        features=run.val_features) if run.val.crops and procs.main else {})
    row.update({k: v for k, v in metrics.items() if k in LOG_FIELDS or k == monitor})
    row["seconds"] = round(time.time() - started, 2)
    row, metrics = procs.share((row, metrics))  # rank 0's numbers: the same decisions everywhere
    state.history.append(row)
    value = row["train_loss"] if monitor == "loss" else row[monitor]
    improved = state.best is None or (value < state.best if monitor == "loss" else value > state.best)
    state.best = value if improved else state.best
    state.bad_epochs = 0 if improved else state.bad_epochs + 1
    state.epoch = epoch
    log.info(f"epoch {epoch}: loss {row['train_loss']:.4f}"
             + (f"  val {format_report(metrics)}" if metrics else "") + ("  (best)" if improved else ""))
    collapsed = bool(state.start and monitor != "loss" and float(t["collapse"]) > 0
                     and value < float(t["collapse"]) * state.start)
    if collapsed:
        state.collapsed = epoch
        log.error(f"training collapsed: validation {monitor} {value:.4f} is below train.collapse "
                  f"({t['collapse']}) × the starting {state.start:.4f}; stopped. best.pt keeps the best "
                  f"epoch so far ({state.best:.4f}); try a smaller train.lr_backbone or a larger model.freeze")
    return metrics, improved, collapsed


# ---------------------------------------------------------------- the loop

def train(cfg: dict, resume: str | Path | None = None) -> dict:
    """Train from cfg (or continue the checkpoint `resume`); returns the last checkpoint's state.

    Under torchrun (WORLD_SIZE > 1) this process joins the process group (gloo on CPU, nccl on
    CUDA; destroyed when the process exits); only rank 0 logs."""
    if cfg["model"]["members"]:  # several trained networks fused into one model: nothing of its own to train
        if resume:
            raise CheckpointError(f"{resume}: a fusion (model.members) is made, not resumed: run without --resume")
        return fuse(cfg, member_checkpoints(cfg))
    procs = Processes.from_env(cfg["device"], cfg["train"]["dist_backend"], cfg["train"]["dist_timeout"])
    level = log.level
    if not procs.main:
        log.setLevel(logging.ERROR)
    try:
        return asdict(_train(cfg, resume, procs))
    finally:
        log.setLevel(level)


def _train(cfg: dict, resume: str | Path | None, procs: Processes) -> RunState:
    t = cfg["train"]  # load_config checked every value against config/schema.yaml
    run, state, ckpt = set_up(cfg, resume, procs)
    trainable = any(p.requires_grad for g in run.optimizer.param_groups for p in g["params"])
    if ckpt is None and (t["epochs"] == 0 or not trainable):
        return save_as_it_is(run, state)
    if ckpt is None and run.val.crops and cfg["model"]["weights"] not in ("none", "", None):
        score_as_loaded(run, state)
    net = procs.wrap(FromFeatures(run.model) if run.stored_features else run.model, run.device)
    drawn = time.time()
    for epoch in range(state.epoch + 1, t["epochs"] + 1):
        if t["patience"] and state.bad_epochs >= t["patience"]:
            log.info(f"early stopping: no {state.monitor} improvement in {t['patience']} epochs")
            break
        started = time.time()
        loss = train_epoch(run, net, epoch)
        metrics, improved, collapsed = end_epoch(run, state, epoch, loss, started)
        if procs.main:
            save(run, state, metrics, improved)
            write_log(run.out_dir / "log.csv", state.history)
            if time.time() - drawn >= FIGURE_EVERY_S:
                draw(run, state)
                drawn = time.time()
        if collapsed:
            break
    if procs.main and state.history:
        draw(run, state)  # the finished curve, whatever the interval left out
    if procs.main and len(set(run.val.labels)) >= 2 and (run.out_dir / "best.pt").exists():
        calibrate_best(run.out_dir / "best.pt", run.model, run.val, run.device,
                       batch_size=t["batch_size_eval"], tta=cfg["embedding"]["tta"], features=run.val_features)
    procs.barrier()  # every process returns once rank 0 has written its files
    return state


# ---------------------------------------------------------------- a fusion: trained networks as one model

def member_checkpoints(cfg: dict) -> list[Path]:
    """Each fusion member's checkpoint (model.members): a .pt as it is; a config file's
    <train.out_dir>/<its name>/best.pt, trained first (every run: a member is part of what this run trains), on this
    run's data, seed and device."""
    paths = []
    for member in cfg["model"]["members"]:
        if str(member).endswith(".pt"):
            if not Path(member).is_file():
                raise CheckpointError(f"model.members: {member}: no such checkpoint")
            paths.append(Path(member))
            continue
        out = Path(cfg["train"]["out_dir"]) / Path(member).stem
        member_cfg = load_config([member], [f"seed={cfg['seed']}", f"train.out_dir={out}",
                                            f"train.figure={out / 'training_curve.png'}"])
        if member_cfg["model"]["members"]:
            raise ConfigError(f"model.members: {member} is itself a fusion; members are single networks")
        member_cfg["data"], member_cfg["device"] = dict(cfg["data"]), cfg["device"]
        log.info(f"fusion: training member {member} into {out}")
        train(member_cfg)
        paths.append(out / "best.pt")
    return paths


def fuse(cfg: dict, checkpoints: list[Path]) -> dict:
    """The members' `checkpoints` fused as cfg says (model.member_weights) on this run's validation people
    (training/fusion.py), written to <train.out_dir>/best.pt; returns {'epoch': 0, 'best': its mean top-1,
    'monitor': 'mean_top1', 'weights'}."""
    ckpt, best = fuse_checkpoints(checkpoints, get_device(cfg["device"]), members=cfg["model"]["members"],
                                  data=DataSettings(**cfg["data"]), embedding=EmbeddingSettings(**cfg["embedding"]),
                                  retrieval=RetrievalSettings(**cfg["retrieval"]),
                                  kinds=list(cfg["augment"]["cover_kinds"]),
                                  member_weights=cfg["model"]["member_weights"], seed=cfg["seed"])
    ckpt["config"].update({k: cfg[k] for k in ("data", "seed", "train", "embedding", "retrieval", "augment")})
    out = Path(cfg["train"]["out_dir"]) / "best.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, ckpt)
    log.info(f"fusion of {len(checkpoints)} networks written to {out}")
    return {"epoch": 0, "best": best, "monitor": "mean_top1", "weights": ckpt["meta"]["weights"]}


# ---------------------------------------------------------------- command line

def calibrate_checkpoint(path: str | Path, cfg_files: list[str], overrides: list[str]) -> dict:
    """Calibrate a checkpoint written before train.py calibrated (or again) on its own validation people, found
    from its config (then `cfg_files` and `overrides`) as training found them; returns the calibration."""
    ckpt = read_checkpoint(path)
    model, cfg = model_from_checkpoint(path, ckpt=ckpt)
    if "members" in ckpt:
        raise CheckpointError(f"{path} is a fusion: it is calibrated when it is made (train.py with model.members)")
    cfg = load_config(cfg_files, overrides, base=cfg)
    return recalibrate(path, ckpt, model, data=DataSettings(**cfg["data"]), seed=cfg["seed"], loss=cfg["loss"]["name"],
                       batch_size=cfg["train"]["batch_size_eval"], tta=cfg["embedding"]["tta"],
                       device=get_device(cfg["device"]))


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", help="a last.pt to continue; its own config is used, then the overrides")
    parser.add_argument("--calibrate", metavar="CHECKPOINT", help="only calibrate this checkpoint on its own "
                                                                  "validation people (same-person thresholds)")


def train_command(args: argparse.Namespace) -> int:
    if args.calibrate:
        print(f"{args.calibrate}: " + calibration_summary(calibrate_checkpoint(args.calibrate, args.config,
                                                                               args.overrides)))
        return 0
    base = read_checkpoint(args.resume)["config"] if args.resume else None
    cfg = load_config(args.config, args.overrides, base=base)
    state = train(cfg, args.resume)
    if state["best"] is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {state['epoch']} epochs; best {state['monitor']} {state['best']:.4f}; "
              f"checkpoints in {cfg['train']['out_dir']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(__doc__, arguments, train_command, argv, config="config/default.yaml (or --resume's config)")


if __name__ == "__main__":
    sys.exit(main())
