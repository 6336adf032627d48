"""Metric-learning losses chosen by name (`loss.name` in the config), from pytorch-metric-learning,
and the classification losses of the classifier baselines (other_models/classifier.py).

Adding one is one function returning a LossFn plus one line in LOSSES.

The classification losses (softmax, normalized_softmax, arcface) hold their class weights
themselves: the network stays an embedding network (its output, the penultimate feature, is what
retrieval uses), the classifier lives in the loss, trains with the head learning rate and is saved
in the checkpoint's 'loss' entry, never in the model.
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


class SoftmaxCrossEntropy(torch.nn.Module):
    """Plain softmax cross-entropy over a learned linear classifier (weights and bias, neither
    normalised) on the embedding: logits = W (scale * x) + b. pytorch-metric-learning has no such
    loss (its NormalizedSoftmaxLoss normalises the class weights, ArcFace adds a margin).

    The embedding x is unit length (the network L2-normalises its output), so logits from a freshly
    initialised classifier would be tiny; the fixed `scale` (loss.softmax_scale) brings them into a
    useful range, as a radius-`scale` hypersphere would. The classifier can still grow its own
    weight norms, so the scale is a starting point rather than a cap."""

    def __init__(self, num_classes: int, embedding_size: int, scale: float):
        super().__init__()
        self.scale = float(scale)
        self.classifier = torch.nn.Linear(embedding_size, num_classes)

    def get_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.classifier(embeddings * self.scale)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple=None) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.get_logits(embeddings), labels)


def softmax(cfg: dict, num_classes: int, embedding_size: int) -> LossFn:
    """Softmax cross-entropy over the training identities (its linear classifier is learned)."""
    return LossFn(SoftmaxCrossEntropy(num_classes, embedding_size, cfg["softmax_scale"]))


def normalized_softmax(cfg: dict, num_classes: int, embedding_size: int) -> LossFn:
    """Softmax over cosines to L2-normalised class weights, divided by a temperature (Zhai & Wu 2019)."""
    return LossFn(losses.NormalizedSoftmaxLoss(num_classes=num_classes, embedding_size=embedding_size,
                                               temperature=cfg["ns_temperature"]))


LOSSES = {
    "triplet_batch_hard": triplet_batch_hard,
    "triplet_semihard": triplet_semihard,
    "contrastive": contrastive,
    "multi_similarity": multi_similarity,
    "arcface": arcface,
    "softmax": softmax,
    "normalized_softmax": normalized_softmax,
}


def build_loss(loss_cfg: dict, num_classes: int, embedding_size: int) -> LossFn:
    """The loss named by loss_cfg['name']; its parameters (the class weights of arcface, softmax and
    normalized_softmax) train with the head."""
    name = loss_cfg["name"]
    if name not in LOSSES:
        raise ConfigError(f"loss.name '{name}' is not one of {', '.join(LOSSES)}")
    return LOSSES[name](loss_cfg, num_classes, embedding_size)
