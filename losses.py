"""Metric-learning losses chosen by name (`loss.name` in the config), from pytorch-metric-learning.

Adding one is one function returning a LossFn plus one line in LOSSES.
"""
from __future__ import annotations

from typing import Callable

import torch
from pytorch_metric_learning import losses, miners

from utils import ConfigError


class LossFn(torch.nn.Module):
    """A loss with an optional miner: call it as loss_fn(embeddings, labels) -> scalar."""

    def __init__(self, loss: torch.nn.Module, miner: Callable | None = None):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, pairs)


def triplet_batch_hard(cfg: dict, num_classes: int, embedding_size: int) -> LossFn:
    """Triplet loss on the hardest positive and hardest negative of each anchor in the batch."""
    return LossFn(losses.TripletMarginLoss(margin=cfg["margin"]), miners.BatchHardMiner())


def triplet_semihard(cfg: dict, num_classes: int, embedding_size: int) -> LossFn:
    """Triplet loss on negatives farther than the positive but inside the margin."""
    return LossFn(losses.TripletMarginLoss(margin=cfg["margin"]),
                  miners.TripletMarginMiner(margin=cfg["margin"], type_of_triplets="semihard"))


def contrastive(cfg: dict, num_classes: int, embedding_size: int) -> LossFn:
    """Pull positive pairs within pos_margin, push negatives beyond neg_margin."""
    return LossFn(losses.ContrastiveLoss(pos_margin=cfg["pos_margin"], neg_margin=cfg["neg_margin"]))


def multi_similarity(cfg: dict, num_classes: int, embedding_size: int) -> LossFn:
    """Multi-similarity loss with its pair miner (Wang et al. 2019)."""
    return LossFn(losses.MultiSimilarityLoss(alpha=cfg["ms_alpha"], beta=cfg["ms_beta"], base=cfg["ms_base"]),
                  miners.MultiSimilarityMiner(epsilon=cfg["ms_epsilon"]))


def arcface(cfg: dict, num_classes: int, embedding_size: int) -> LossFn:
    """Additive angular margin softmax over the training identities (its class weights are learned)."""
    return LossFn(losses.ArcFaceLoss(num_classes=num_classes, embedding_size=embedding_size,
                                     margin=cfg["arc_margin"], scale=cfg["arc_scale"]))


LOSSES = {
    "triplet_batch_hard": triplet_batch_hard,
    "triplet_semihard": triplet_semihard,
    "contrastive": contrastive,
    "multi_similarity": multi_similarity,
    "arcface": arcface,
}


def build_loss(loss_cfg: dict, num_classes: int, embedding_size: int) -> LossFn:
    """The loss named by loss_cfg['name']; its parameters (ArcFace's weights) train with the head."""
    name = loss_cfg["name"]
    if name not in LOSSES:
        raise ConfigError(f"loss.name '{name}' is not one of {', '.join(LOSSES)}")
    return LOSSES[name](loss_cfg, num_classes, embedding_size)
