"""Metric-learning losses chosen by name (`loss.name` in the config), from pytorch-metric-learning,
and the classification losses of the classifier baselines (other_models/classifier.py).

Adding one is one function returning a LossFn plus one line in LOSSES.

The classification losses (softmax, normalized_softmax, arcface) hold their class weights
themselves: the network stays an embedding network (its output, the penultimate feature, is what
retrieval uses), the classifier lives in the loss, trains with the head learning rate and is saved
in the checkpoint's 'loss' entry, never in the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from pytorch_metric_learning import losses, miners

from utils import ConfigError, lookup


@dataclass(frozen=True)
class LossSettings:
    """The loss section (config/default.yaml documents each field): the loss by name and its parameters."""
    name: str = "triplet_batch_hard"
    margin: float = 0.2
    pos_margin: float = 0.0
    neg_margin: float = 1.0
    ms_alpha: float = 2.0
    ms_beta: float = 50.0
    ms_base: float = 0.5
    ms_epsilon: float = 0.1
    arc_margin: float = 28.6
    arc_scale: float = 64.0
    softmax_scale: float = 16.0
    ns_temperature: float = 0.05
    metric_threshold: float = 0.42
    metric_margin: float = 0.03
    teacher: str = ""
    distill_weight: float = 0.0


class LossFn(torch.nn.Module):
    """A loss with an optional miner, plus `distill_weight` times the distillation term (1 - cosine
    of each embedding to its teacher target): loss_fn(embeddings, labels, targets=None) -> scalar.
    A LossFn without a loss is distillation alone (labels unused)."""

    def __init__(self, loss: torch.nn.Module | None, miner: Callable | None = None, distill_weight: float = 0.0):
        super().__init__()
        self.loss, self.miner, self.distill_weight = loss, miner, float(distill_weight)

    @property
    def needs_targets(self) -> bool:
        """Whether a batch must bring the teacher's embedding of each photo (loss.teacher)."""
        return self.distill_weight > 0

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        value = embeddings.new_zeros(())
        if self.loss is not None:
            pairs = self.miner(embeddings, labels) if self.miner is not None else None
            value = self.loss(embeddings, labels, pairs)
        if self.distill_weight:
            value = value + self.distill_weight * distill_term(embeddings, targets)
        return value


def distill_term(embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cosine(embedding, teacher target): 0 when the student points where the teacher does."""
    if targets is None:
        raise ConfigError("a distillation loss needs loss.teacher (a checkpoint, or self)")
    return (1 - torch.nn.functional.cosine_similarity(embeddings, targets.to(embeddings.dtype), dim=1)).mean()


class DlibMetricLoss(torch.nn.Module):
    """dlib's loss_metric_ (dlib/dnn/loss.h), the objective its face descriptor was trained with:
    every same-person pair closer than threshold - margin costs nothing, beyond it its excess; every
    other pair farther than threshold + margin costs nothing, within it its shortfall; only the
    hardest negative pairs count, as many as there are positive pairs; the sum is divided by the
    number of positive pairs. Written here because pytorch-metric-learning has no such loss (its
    ContrastiveLoss has no balanced hardest-negative rule), on Euclidean distances of the embeddings."""

    def __init__(self, threshold: float, margin: float):
        super().__init__()
        self.threshold, self.margin = float(threshold), float(margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple=None) -> torch.Tensor:
        sq = (embeddings * embeddings).sum(1)
        d2 = sq[:, None] + sq[None, :] - 2 * embeddings @ embeddings.T
        d = d2.clamp(min=1e-12).sqrt() * (d2 > 0)  # dlib: a distance of zero, and no gradient, at d2 <= 0
        upper = torch.ones_like(d, dtype=torch.bool).triu(1)
        same = labels[:, None] == labels[None, :]
        pos, neg = upper & same, upper & ~same
        n_pos, n_neg = int(pos.sum()), int(neg.sum())
        if n_pos == 0 or n_neg == 0:
            return embeddings.sum() * 0
        hardest = d[neg].detach().sort().values[min(n_pos, n_neg) - 1]
        pos_cost = (d[pos] - (self.threshold - self.margin)).clamp(min=0).sum()
        neg_d = d[neg]
        neg_cost = ((self.threshold + self.margin - neg_d).clamp(min=0) * (neg_d <= hardest)).sum()
        return (pos_cost + neg_cost) / n_pos


def triplet_batch_hard(s: LossSettings, num_classes: int, embedding_size: int) -> LossFn:
    """Triplet loss on the hardest positive and hardest negative of each anchor in the batch."""
    return LossFn(losses.TripletMarginLoss(margin=s.margin), miners.BatchHardMiner())


def triplet_semihard(s: LossSettings, num_classes: int, embedding_size: int) -> LossFn:
    """Triplet loss on negatives farther than the positive but inside the margin."""
    return LossFn(losses.TripletMarginLoss(margin=s.margin),
                  miners.TripletMarginMiner(margin=s.margin, type_of_triplets="semihard"))


def contrastive(s: LossSettings, num_classes: int, embedding_size: int) -> LossFn:
    """Pull positive pairs within pos_margin, push negatives beyond neg_margin."""
    return LossFn(losses.ContrastiveLoss(pos_margin=s.pos_margin, neg_margin=s.neg_margin))


def multi_similarity(s: LossSettings, num_classes: int, embedding_size: int) -> LossFn:
    """Multi-similarity loss with its pair miner (Wang et al. 2019)."""
    return LossFn(losses.MultiSimilarityLoss(alpha=s.ms_alpha, beta=s.ms_beta, base=s.ms_base),
                  miners.MultiSimilarityMiner(epsilon=s.ms_epsilon))


def arcface(s: LossSettings, num_classes: int, embedding_size: int) -> LossFn:
    """Additive angular margin softmax over the training identities (its class weights are learned)."""
    return LossFn(losses.ArcFaceLoss(num_classes=num_classes, embedding_size=embedding_size,
                                     margin=s.arc_margin, scale=s.arc_scale))


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


def softmax(s: LossSettings, num_classes: int, embedding_size: int) -> LossFn:
    """Softmax cross-entropy over the training identities (its linear classifier is learned)."""
    return LossFn(SoftmaxCrossEntropy(num_classes, embedding_size, s.softmax_scale))


def normalized_softmax(s: LossSettings, num_classes: int, embedding_size: int) -> LossFn:
    """Softmax over cosines to L2-normalised class weights, divided by a temperature (Zhai & Wu 2019)."""
    return LossFn(losses.NormalizedSoftmaxLoss(num_classes=num_classes, embedding_size=embedding_size,
                                               temperature=s.ns_temperature))


def dlib_metric(s: LossSettings, num_classes: int, embedding_size: int) -> LossFn:
    """dlib's own metric loss (DlibMetricLoss), thresholds scaled to unit-length embeddings."""
    return LossFn(DlibMetricLoss(s.metric_threshold, s.metric_margin))


def distill(s: LossSettings, num_classes: int, embedding_size: int) -> LossFn:
    """Distillation alone: each embedding pulled towards loss.teacher's embedding of the clean photo."""
    return LossFn(None)


def npair(s: LossSettings, num_classes: int, embedding_size: int) -> LossFn:
    """N-pair loss (Sohn 2016): each anchor against its positive and every other person's positive of the
    batch at once, a softmax over their similarities (pytorch-metric-learning's NPairsLoss)."""
    return LossFn(losses.NPairsLoss())


LOSSES = {
    "triplet_batch_hard": triplet_batch_hard,
    "npair": npair,
    "triplet_semihard": triplet_semihard,
    "contrastive": contrastive,
    "multi_similarity": multi_similarity,
    "arcface": arcface,
    "softmax": softmax,
    "normalized_softmax": normalized_softmax,
    "dlib_metric": dlib_metric,
    "distill": distill,
}


def build_loss(settings: LossSettings, num_classes: int, embedding_size: int) -> LossFn:
    """The loss named by settings.name; its parameters (the class weights of arcface, softmax and
    normalized_softmax) train with the head."""
    name = settings.name
    fn = lookup(LOSSES, name, "loss.name")(settings, num_classes, embedding_size)
    fn.distill_weight = 1.0 if name == "distill" else float(settings.distill_weight)
    if fn.needs_targets and not settings.teacher:
        raise ConfigError(f"loss.name={name} with loss.distill_weight={fn.distill_weight:g} needs loss.teacher: "
                          "a checkpoint, or self (the network's own starting weights)")
    return fn
