"""Distillation targets: a teacher's unit embeddings of every clean training photo and of its mirror
image, computed once before training (loss.teacher, loss.distill_weight, loss.name: distill).

The student then sees augmented views (shifted, recoloured, covered by a black square) and is pulled
towards where the teacher puts the clean photo: a network learns to see past what covers a face
(self-distillation, loss.teacher: self), or another backbone learns the face network's space
(loss.teacher: a checkpoint). A flip is the one augmentation that moves the target, so the training
set draws it itself and hands the mirror's target with a mirrored view.
"""
from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dataset import AugmentSettings, train_transform
from detection import crop_paths, load_crop
from network import EmbeddingNet, embed, model_from_checkpoint
from utils import ConfigError, DataError, get_logger

log = get_logger()


def both_views(model: EmbeddingNet, crops: list, device, batch_size: int, what: str) -> torch.Tensor:
    """(N, 2, D) unit embeddings of each crop (view 0) and of its mirror image (view 1), by network.embed
    (the model's own evaluation preprocessing)."""
    views = [embed(model, crops, batch_size, device, desc=f"teacher, {what}", mirror=mirror) for mirror in (False, True)]
    return torch.as_tensor(np.stack(views, 1))


def teacher_targets(teacher: str, student: EmbeddingNet, paths: list[Path], crops: list, device, *,
                    batch_size: int, cache_dir: str | Path | None) -> torch.Tensor:
    """The teacher's (N, 2, D) targets for the training photos `paths` (the student's `crops` of
    them): 'self' is the student as it is now, before any step (its own space, as it is); else a
    checkpoint, which crops the photos with its own detector and alignment, its targets centred."""
    batch = int(batch_size)
    if teacher == "self":
        log.info("distillation targets: the network's own embeddings of the clean photos, before training")
        return both_views(student, crops, device, batch, "training people")
    if not Path(teacher).is_file():
        raise ConfigError(f"loss.teacher: no checkpoint at '{teacher}' (a checkpoint path, or self)")
    model, _ = model_from_checkpoint(teacher, device)
    if len(model.networks()) > 1:
        raise ConfigError(f"loss.teacher {teacher} is a fusion of several networks: distil from one of its members")
    if model.embedding_size != student.embedding_size:
        raise ConfigError(f"loss.teacher {teacher} gives {model.embedding_size}-d embeddings; the student's are "
                          f"{student.embedding_size}-d: set model.embedding_size={model.embedding_size}")
    teacher_crops, report = crop_paths(paths, model.crop_settings(), cache_dir, desc="teacher crops")
    lost = [str(p) for p, c in zip(paths, teacher_crops) if c is None]
    if lost:
        raise DataError(f"the teacher {teacher} finds no face in {len(lost)} training photo(s) that the student "
                        f"keeps (its crop.fallback leaves them out), e.g. {lost[0]}")
    log.info(f"distillation targets: {teacher} ({model.arch}) on its own crops: {report.summary()}")
    return centred(both_views(model, teacher_crops, device, batch, "training people"))


def centred(targets: torch.Tensor) -> torch.Tensor:
    """Targets less their mean, normalised again. A face network's embeddings share one direction
    (dlib's: mean cosine 0.84 between different people's photos, the mean vector's norm 0.91): a
    student pulled to them by cosine learns that direction first and stops there (a ResNet50 from
    random weights sat at top-1 0.05 for 7 epochs), while the rest, what tells people apart, is all
    that is left once it is taken away."""
    return F.normalize(targets - targets.reshape(-1, targets.shape[-1]).mean(0), dim=-1)


class DistillDataset(torch.utils.data.Dataset):
    """Training crops with labels and teacher targets, indexed like FaceDataset by PKSampler's
    (position, draw_seed): the draw decides the mirror (augment.hflip_p) and seeds the rest of the
    augmentation (which then never flips), and the item carries the target of the view it shows."""

    def __init__(self, crops: list, labels: list[int], targets: torch.Tensor, augment: AugmentSettings, inp: dict):
        self.crops, self.labels, self.targets = crops, list(labels), targets
        self.hflip_p = float(augment.hflip_p)
        self.transform = train_transform(replace(augment, hflip_p=0.0), inp)

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, item):
        index, draw_seed = item if isinstance(item, tuple) else (item, None)
        image = load_crop(self.crops[index])
        mirror = False
        if draw_seed is not None:
            mirror = random.Random(draw_seed ^ 0x5DEECE66D).random() < self.hflip_p
            self.transform.set_random_state(np.random.default_rng(draw_seed), random.Random(draw_seed))
        if mirror:
            image = np.ascontiguousarray(image[:, ::-1])
        return self.transform(image=image)["image"], self.labels[index], self.targets[index, int(mirror)]
