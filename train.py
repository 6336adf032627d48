"""Train the embedding network with metric learning on identity folders, validating every epoch
on held-out people with the competition protocol.

    python train.py --config config/demo.yaml                 # a config file, then overrides
    python train.py train.epochs=5 model.arch=resnet18 loss.name=multi_similarity
    python train.py --resume checkpoints/run/last.pt          # continue an interrupted run exactly
    torchrun --standalone --nproc_per_node=2 train.py --config config/demo.yaml   # several processes

Writes <train.out_dir>/{best.pt,last.pt,log.csv} and the training-curve figure (train.figure).

Under torchrun (WORLD_SIZE > 1) every process draws the same global P×K batches and embeds its own
contiguous share; the embeddings are gathered so the loss (and its miner) sees the whole global
batch, BatchNorm uses the global batch's statistics, and DistributedDataParallel averages the
gradients: the update is the one a single process makes on the same batch. Rank 0 alone logs,
validates and writes checkpoints, log and figure; a checkpoint resumes with any number of processes.
"""
from __future__ import annotations

import argparse
import atexit
import csv
import datetime
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from dataset import (FaceDataset, PKSampler, degrade, eval_transform, identity_split, list_identities,
                     train_transform)
from detection import crop_paths, list_images, load_crop
from distill import DistillDataset, teacher_targets
from evaluation.protocol import format_report, score_labelled, score_leave_one_out
from losses import build_loss
from evaluation.metrics import METRICS, SUMMARY
from network import (CheckpointError, EmbeddingNet, build_model, embed, load_model_state, model_from_config,
                     read_checkpoint, save_checkpoint)
from evaluation.plots import draw_curve
from utils import (ConfigError, DataError, atomic_write, get_device, get_logger, load_config,
                   run_command, seed_everything)

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
    train_people = {n: people[n] for n in train_names}
    extra = cfg["data"].get("unlabelled") or []
    if extra:  # photos without an identity: each its own 'person', for distillation only, never validation
        if cfg["loss"]["name"] != "distill":
            raise ConfigError("data.unlabelled photos have no identity: they train only with loss.name=distill")
        for folder in [extra] if isinstance(extra, str) else extra:
            for photo in list_images(folder, recursive=True):
                train_people[f"unlabelled:{photo}"] = [photo]
    return train_people, {n: people[n] for n in val_names}


def crop_people(people: dict[str, list[Path]], crop_cfg: dict, cache_dir: str,
                what: str) -> tuple[list, list[int], list[str], list[Path]]:
    """Crop every photo (cached); returns (crops, integer labels, names by label, the photos kept)."""
    paths = [p for photos in people.values() for p in photos]
    owners = [name for name, photos in people.items() for _ in photos]
    crops, report = crop_paths(paths, crop_cfg, cache_dir, desc=f"cropping {what}")
    log.info(f"{what}: {report.summary()}")
    names = sorted({o for o, c in zip(owners, crops) if c is not None})
    index = {n: i for i, n in enumerate(names)}
    kept = [(c, index[o], p) for o, c, p in zip(owners, crops, paths) if c is not None]
    return [c for c, _, _ in kept], [lab for _, lab, _ in kept], names, [p for _, _, p in kept]


# ---------------------------------------------------------------- optimisation

def make_optimizer(model: EmbeddingNet, loss_fn: torch.nn.Module, cfg: dict) -> torch.optim.AdamW:
    """AdamW with one learning rate for the backbone and another for the head (and loss weights)."""
    t = cfg["train"]
    head = model.head_parameters() + list(loss_fn.parameters())
    lr_backbone = model.lr_backbone if t["lr_backbone"] == "auto" else float(t["lr_backbone"])
    return torch.optim.AdamW([
        {"params": model.backbone_parameters(), "lr": lr_backbone},
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


def validate(model: EmbeddingNet, crops: list, labels: list[int], cfg: dict, device,
             features: torch.Tensor | None = None) -> dict:
    """Competition protocol on the held-out people: top-1/5/10, mAP and the rest (from the
    crops, or from a frozen backbone's stored plain-view features when given)."""
    if features is None:
        emb = embed(model, crops, cfg["train"]["batch_size_eval"], device, desc="validating")
    else:
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            emb = torch.cat([model.from_features(f.to(device)).float().cpu()
                             for f in features.split(cfg["train"]["batch_size_eval"])]).numpy()
        model.train(was_training)
    report = _score(emb, labels, cfg)
    mode = cfg["train"]["val_degrade"]
    if mode != "none" and features is None:
        # The same photos as queries, degraded as evaluate.degrade does (seeded per photo), against the clean ones.
        worse = [degrade(load_crop(c), mode, cfg["seed"] * 1_000_003 + i) for i, c in enumerate(crops)]
        degraded = _score(emb, labels, cfg, embed(model, worse, cfg["train"]["batch_size_eval"], device,
                                                 desc="validating, degraded"))
        for key in METRICS:
            if key in report and key in degraded:
                report[f"degraded_{key}"] = degraded[key]
                report[f"mean_{key}"] = (report[key] + degraded[key]) / 2
    return report


def _score(emb, labels: list[int], cfg: dict, query_emb=None) -> dict:
    if cfg["train"]["val_queries"] == "all":
        return score_leave_one_out(emb, labels, cfg["retrieval"], query_emb)
    report, *_ = score_labelled(emb, labels, cfg, query_emb)
    return report


def check_monitor(cfg: dict) -> None:
    """train.monitor: a name of metrics.METRICS, on clean validation queries, or degraded_<name> (degraded
    queries) or mean_<name> (the mean of both), which need train.val_degrade."""
    t = cfg["train"]
    name = t["monitor"]
    base = name.split("_", 1)[1] if name.startswith(("degraded_", "mean_")) else name
    if base not in METRICS:
        raise ConfigError(f"train.monitor '{name}' is not one of {', '.join(METRICS)} (or degraded_ / mean_ of one)")
    if base != name and t["val_degrade"] == "none":
        raise ConfigError(f"train.monitor '{name}' needs degraded validation queries: set train.val_degrade "
                          "(cutout, gamma or both)")


# ---------------------------------------------------------------- a frozen backbone: its features once

class _Views(torch.utils.data.Dataset):
    """Item j = view j % V of crop j // V: view 0 through the evaluation transform, the others
    through a draw of the training augmentation seeded by (seed, crop, view)."""

    def __init__(self, crops: list, augment: dict, inp: dict, views: int, seed: int):
        self.plain = FaceDataset(crops, [0] * len(crops), eval_transform(inp))
        self.augmented = FaceDataset(crops, [0] * len(crops), train_transform(augment, inp))
        self.views, self.seed = views, seed

    def __len__(self) -> int:
        return len(self.plain) * self.views

    def __getitem__(self, j: int) -> torch.Tensor:
        i, v = divmod(j, self.views)
        if v == 0:
            return self.plain[i][0]
        return self.augmented[(i, (self.seed * 1_000_003 + i) * self.views + v)][0]


def frozen_features(model: EmbeddingNet, crops: list, views: int, cfg: dict, device, what: str) -> torch.Tensor:
    """The frozen backbone's outputs for `views` views of every crop, shaped (N, views, ...).
    A frozen backbone (dlib's descriptor) gives a view the same features at every step, so it runs
    once per view here instead of once per training step (dlib runs at a few photos/s on a CPU)."""
    loader = torch.utils.data.DataLoader(_Views(crops, cfg["augment"], model.meta["input"], views, cfg["seed"]),
                                         batch_size=cfg["train"]["batch_size_eval"],
                                         num_workers=cfg["data"]["num_workers"])
    with torch.inference_mode():
        out = [model.features(batch.to(device)).float().cpu()
               for batch in tqdm(loader, desc=f"backbone features, {what}", unit="batch", leave=False)]
    features = torch.cat(out) if out else torch.zeros(0)
    return features.reshape(len(crops), views, *features.shape[1:])


class FeatureDataset(torch.utils.data.Dataset):
    """Stored backbone features (N, V, ...) with labels, indexed like FaceDataset by PKSampler's
    (position, draw_seed): each draw takes one of the photo's V views."""

    def __init__(self, features: torch.Tensor, labels: list[int]):
        self.features, self.labels = features, list(labels)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, item):
        index, draw_seed = item if isinstance(item, tuple) else (item, 0)
        return self.features[index, (draw_seed or 0) % self.features.shape[1]], self.labels[index]


class _FromFeatures(torch.nn.Module):
    """What trains over stored features: the model after its frozen backbone."""

    def __init__(self, model: EmbeddingNet):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.from_features(features)


# ---------------------------------------------------------------- several processes (torchrun)

class _GatherBatch(torch.autograd.Function):
    """Every process's rows, in rank order: the global batch as one process would hold it.

    Backward hands each process the gradient of its own rows times the world size: every process
    computes the same global-batch loss, so DDP's average of the processes' gradients is then
    exactly the gradient one process gets from that loss."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world, ctx.rows = dist.get_rank(), dist.get_world_size(), local.shape[0]
        parts = [torch.empty_like(local) for _ in range(ctx.world)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows] * ctx.world


class _AllReduceSum(torch.autograd.Function):
    """A sum over the processes whose gradient is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics (and running averages) are those of the global batch
    across processes, as in one process: torch's SyncBatchNorm for CPU processes (gloo), which
    SyncBatchNorm refuses. Two-pass mean and variance, each one all-reduce; differentiable
    through both. Evaluation, or a single process, is plain BatchNorm on the running statistics."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        # Sums in float64, as torch's CPU kernel accumulates: the statistics of a batch split
        # across processes then agree with one process's to float32 rounding.
        f64 = torch.float64
        total = _AllReduceSum.apply(torch.cat([x.sum(dims, dtype=f64), x.new_full((1,), x.numel() / x.shape[1], dtype=f64)]))
        count = total[-1].detach()
        mean = (total[:-1] / count).to(x.dtype)
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims, dtype=f64)) / count
        out = centred * torch.rsqrt(var + self.eps).to(x.dtype).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach() * factor)
                self.running_var.mul_(1 - factor).add_((var.detach() * (count / (count - 1))).to(x.dtype) * factor)
        return out


def global_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Swap every BatchNorm layer of module for a GlobalBatchNorm holding the very same parameters
    and buffers (the state_dict keys and values are unchanged), in place."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(
                child, (GlobalBatchNorm, torch.nn.SyncBatchNorm)):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            global_batchnorm(child)
    return module


class Processes:
    """This process's place in a torchrun launch (RANK, WORLD_SIZE, LOCAL_RANK from torchrun's
    environment, or a process group the caller set up). World size 1, without torchrun or with
    --nproc_per_node=1, is the single-process run: nothing distributed is touched and every
    method below gives back what it was given.

    The process group is made once per process and destroyed when the process exits, so that
    train() can run again in the same processes (re-making a group from torchrun's store races:
    a process may read another's address from the group before)."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0):
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs, validates and writes files."""
        return self.rank == 0

    @classmethod
    def from_env(cls, cfg: dict) -> "Processes":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if dist.is_available() and dist.is_initialized():  # made before, here or by the caller
            world = dist.get_world_size()
            return cls(dist.get_rank(), world, local_rank) if world > 1 else cls()
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_available():
            raise ConfigError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
        t, device = cfg["train"], get_device(cfg["device"])
        backend = t.get("dist_backend", "auto")
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl" and device.type != "cuda":
            raise ConfigError("train.dist_backend nccl needs CUDA devices: use gloo (or auto) for CPU processes")
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(t.get("dist_timeout", 7200))))
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
        return cls(dist.get_rank(), dist.get_world_size(), local_rank)

    def place(self, device: torch.device) -> torch.device:
        """cuda:LOCAL_RANK for CUDA processes under torchrun (one GPU each); otherwise device."""
        if self.world > 1 and device.type == "cuda":
            device = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
        return device

    def wrap(self, model: EmbeddingNet, device: torch.device) -> torch.nn.Module:
        """The module to train: the model itself for one process; else DDP over it, its BatchNorm
        layers synchronised (SyncBatchNorm on CUDA, GlobalBatchNorm on CPU). The model object
        keeps its parameters, so checkpoints and validation use it unwrapped."""
        if self.world == 1:
            return model
        if device.type == "cuda":
            assert torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) is model
        else:
            global_batchnorm(model)
        model.to(device)
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def global_batch(self, emb: torch.Tensor, labels: torch.Tensor,
                     targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The global batch's embeddings (gradient to this process's rows), labels and distillation targets."""
        if self.world == 1:
            return emb, labels, targets

        def gather(t: torch.Tensor) -> torch.Tensor:
            parts = [torch.empty_like(t) for _ in range(self.world)]
            dist.all_gather(parts, t.contiguous())
            return torch.cat(parts)
        return _GatherBatch.apply(emb), gather(labels), None if targets is None else gather(targets)

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Average the gradients of parameters outside DDP (the loss's class weights). Every process
        computed them from the same global batch, so this only keeps the processes in step."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(self.world)

    def share(self, obj):
        """Rank 0's obj on every process (the same numbers drive everybody's early stopping)."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


# ---------------------------------------------------------------- log and figure

FIGURE_EVERY_S = 30  # the curve is redrawn at most this often (about 1 s of matplotlib each time), and at the end
LOG_FIELDS = ["epoch", "train_loss", "lr_backbone", "lr_head", *SUMMARY, *(f"degraded_{k}" for k in SUMMARY), "seconds"]


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
    """Train from cfg (or continue the checkpoint `resume`); returns the last checkpoint's state.

    Under torchrun (WORLD_SIZE > 1) this process joins the process group (gloo on CPU, nccl on
    CUDA; destroyed when the process exits); only rank 0 logs."""
    procs = Processes.from_env(cfg)
    level = log.level
    if not procs.main:
        log.setLevel(logging.ERROR)
    try:
        return _train(cfg, resume, procs)
    finally:
        log.setLevel(level)


def _train(cfg: dict, resume: str | Path | None, procs: Processes) -> dict:
    t = cfg["train"]  # load_config checked every value against config/schema.yaml
    check_monitor(cfg)
    device = procs.place(get_device(cfg["device"]))
    seed_everything(cfg["seed"])
    out_dir = Path(t["out_dir"])

    ckpt = read_checkpoint(resume) if resume else None
    if ckpt is not None:
        model = model_from_config(cfg)
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

    train_people, val_people = split_people(cfg)
    overlap = set(train_people) & set(val_people)
    assert not overlap, f"identity split leaked people into validation: {sorted(overlap)[:3]}"
    crop_cfg, cache_dir = model.meta["crop"], cfg["data"]["cache_dir"]
    if not procs.main:
        procs.barrier()  # rank 0 crops first and fills the cache; the others then read it
    train_crops, train_labels, train_names, train_paths = crop_people(train_people, crop_cfg, cache_dir,
                                                                      "training people")
    val_crops, val_labels, val_names, _ = (crop_people(val_people, crop_cfg, cache_dir, "validation people")
                                           if val_people else ([], [], [], []))
    if procs.main:
        procs.barrier()
    if len(train_names) < 2:
        raise DataError(f"{cfg['data']['train_dir']}: need 2 or more training people, got {len(train_names)}")
    log.info(f"{len(train_names)} training people ({len(train_crops)} photos), "
             f"{len(val_names)} validation people ({len(val_crops)} photos)")
    if ckpt is not None and ckpt.get("people", {}).get("train") != train_names:
        raise CheckpointError(f"{resume} was trained on other people than {cfg['data']['train_dir']} "
                              f"with seed {cfg['seed']} gives: cannot resume it exactly")
    model.to(device)
    loss_fn = build_loss(cfg["loss"], len(train_names), model.embedding_size).to(device)

    views = int(t["frozen_views"])
    stored = (not model.trainable_backbone and views > 0 and t["epochs"] > 0 and not loss_fn.needs_targets
              and any(p.requires_grad for p in model.head_parameters()))
    val_features = None
    if stored:
        log.info(f"frozen {cfg['model']['arch']} backbone: its features of {views} view(s) of every photo are "
                 f"computed once (train.frozen_views), then the head trains on them")
        dataset = FeatureDataset(frozen_features(model, train_crops, views, cfg, device, "training people"),
                                 train_labels)
        if val_crops and procs.main:
            val_features = frozen_features(model, val_crops, 1, cfg, device, "validation people")[:, 0]
    elif loss_fn.needs_targets and t["epochs"] > 0:
        targets = (teacher_targets(cfg["loss"]["teacher"], model, train_paths, train_crops, cfg, device)
                   if ckpt is None else ckpt["distill_targets"])
        dataset = DistillDataset(train_crops, train_labels, targets, cfg["augment"], model.meta["input"])
    else:
        dataset = FaceDataset(train_crops, train_labels, train_transform(cfg["augment"], model.meta["input"]))
    sampler = PKSampler(train_labels, t["P"], t["K"], t["batches_per_epoch"], cfg["seed"], procs.rank, procs.world)
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
    state = {"epoch": 0, "history": [], "best": None, "bad_epochs": 0, "monitor": monitor, "start": None,
             "collapsed": None}
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        loss_fn.load_state_dict(ckpt["loss"])
        state = {k: ckpt.get(k) for k in state}

    def save(metrics: dict, improved: bool) -> None:
        ckpt_state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "loss": loss_fn.state_dict(),
            "metrics": metrics, "config": cfg, "weights_source": source,
            "meta": model.meta, "model_info": model.describe(),
            "people": {"train": train_names, "val": val_names}, "world_size": procs.world, **state,
        }
        if isinstance(dataset, DistillDataset):
            ckpt_state["distill_targets"] = dataset.targets  # a resume trains towards the same targets
        save_checkpoint(out_dir / "last.pt", ckpt_state)
        if improved:
            save_checkpoint(out_dir / "best.pt", ckpt_state)

    trainable = any(p.requires_grad for g in optimizer.param_groups for p in g["params"])
    if ckpt is None and (t["epochs"] == 0 or not trainable):
        # A pretrained network used as it is (dlib's descriptor with head none, or epochs 0):
        # scored once on the validation people and saved, so evaluation and submission take it.
        log.info("nothing to train (train.epochs=0 or no trainable parameter): saving the network as it is")
        metrics = procs.share(validate(model, val_crops, val_labels, cfg, device) if val_crops and procs.main else {})
        if metrics:
            log.info(f"validation: {format_report(metrics)}")
            state["best"] = metrics[monitor] if monitor != "loss" else None
        if procs.main:
            save(metrics, True)
        procs.barrier()
        return state

    if ckpt is None and val_crops and cfg["model"]["weights"] not in ("none", "", None):
        # Pretrained weights are the first candidate: training must beat them, or best.pt stays them.
        metrics = procs.share(validate(model, val_crops, val_labels, cfg, device, val_features) if procs.main else {})
        state["start"] = metrics[monitor] if monitor != "loss" else None
        state["best"] = state["start"]
        state["history"].append({"epoch": 0, "train_loss": float("nan"),
                                 **{k: v for k, v in metrics.items() if k in LOG_FIELDS or k == monitor}})
        log.info(f"epoch 0 (the weights as loaded): val {format_report(metrics)}")
        if procs.main:
            save(metrics, True)
    net = procs.wrap(_FromFeatures(model) if stored else model, device)  # the model itself for one process
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]

    def draw() -> None:
        draw_curve(t["figure"], state["history"],
                   f"{cfg['model']['arch']}, {cfg['loss']['name']}, {len(train_names)} training people")

    drawn = time.time()
    for epoch in range(state["epoch"] + 1, t["epochs"] + 1):
        if t["patience"] and state["bad_epochs"] >= t["patience"]:
            log.info(f"early stopping: no {monitor} improvement in {t['patience']} epochs")
            break
        started = time.time()
        net.train()
        sampler.set_epoch(epoch)
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{t['epochs']}", unit="batch", leave=False,
                   disable=None if procs.main else True)
        for images, labels, *targets in bar:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            targets = targets[0].to(device, non_blocking=True) if targets else None
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                emb = net(images)
            loss = loss_fn(*procs.global_batch(emb.float(), labels, targets))  # this process's share, gathered
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            procs.average_gradients(loss_params)
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
        metrics = (validate(model, val_crops, val_labels, cfg, device, val_features)
                   if val_crops and procs.main else {})
        row.update({k: v for k, v in metrics.items() if k in LOG_FIELDS or k == monitor})
        row["seconds"] = round(time.time() - started, 2)
        row, metrics = procs.share((row, metrics))  # rank 0's numbers: the same decisions everywhere
        state["history"].append(row)
        value = row["train_loss"] if monitor == "loss" else row[monitor]
        improved = state["best"] is None or (value < state["best"] if monitor == "loss" else value > state["best"])
        state["best"] = value if improved else state["best"]
        state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        state["epoch"] = epoch
        log.info(f"epoch {epoch}: loss {row['train_loss']:.4f}"
                 + (f"  val {format_report(metrics)}" if metrics else "") + ("  (best)" if improved else ""))
        collapsed = (state.get("start") and monitor != "loss" and float(t["collapse"]) > 0
                     and value < float(t["collapse"]) * state["start"])
        if collapsed:
            state["collapsed"] = epoch
            log.error(f"training collapsed: validation {monitor} {value:.4f} is below train.collapse "
                      f"({t['collapse']}) × the starting {state['start']:.4f}; stopped. best.pt keeps the best "
                      f"epoch so far ({state['best']:.4f}); try a smaller train.lr_backbone or a larger model.freeze")

        if procs.main:
            save(metrics, improved)
            write_log(out_dir / "log.csv", state["history"])
            if time.time() - drawn >= FIGURE_EVERY_S:
                draw()
                drawn = time.time()
        if collapsed:
            break
    if procs.main and state["history"]:
        draw()  # the finished curve, whatever the interval left out
    procs.barrier()  # every process returns once rank 0 has written its files
    return state


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", help="a last.pt to continue; its own config is used, then the overrides")


def train_command(args: argparse.Namespace) -> int:
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
