"""Relevance feedback chosen by name (`feedback.method`): after each round of results the user
marks some photos relevant or not, and the next round brings the k best gallery photos not shown
yet. Adding a method is one function plus one line in FEEDBACK.

    next_round("svm", query, gallery, marks={12: True, 40: False}, shown={12, 40, 7}, k=8, settings=FeedbackSettings())

Every method is fn(query (D,), gallery (N, D) unit rows, marks {row: relevant?}, shown {row}, k, settings)
-> list of at most k gallery rows, best first, none of them shown or marked (a marked row counts as
shown); fewer than k when fewer remain. settings: FeedbackSettings, the `feedback` section typed. Ties are broken by the
lower row, and every method is deterministic (fixed SVM parameters, a seeded MLP and sample).

Cost: every method scores all rows with matrix products and selects the k best in O(N) (10^5 rows:
about 15 ms for nearest and rocchio, 0.2 s for mlp, 0.5 s for svm on a busy 2-core CPU); the SVM
and the MLP are trained on the marked rows only (plus the query, plus at most
feedback.pseudo_negatives rows), never on the gallery.

  nearest  the baseline: the nearest unseen rows to the query; marks are ignored.
  rocchio  Rocchio's query update: α·query + β·mean(relevant) − γ·mean(irrelevant), then nearest.
  svm      an RBF-kernel SVM (scikit-learn SVC), query and relevant rows against irrelevant ones,
           ranking by decision value.
  mlp      a one-hidden-layer MLP classifier (scikit-learn, lbfgs), ranking by its logit.
  triplet  a small residual MLP re-mapping the embeddings, trained with a triplet loss on the marks,
           ranking by cosine distance to the re-mapped query.

With no relevant mark yet, rocchio keeps α·query − γ·mean(irrelevant) (plain nearest when nothing is
marked at all), and svm, mlp and triplet fall back to exactly that Rocchio ranking: one positive (the query)
is too little to train a classifier on.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from search.exact import unit
from utils import installed, lookup


@dataclass(frozen=True)
class FeedbackSettings:
    """The feedback section (config/default.yaml documents each field): the method and its parameters."""
    method: str = "svm"
    k: int = 8
    rocchio_alpha: float = 1.0
    rocchio_beta: float = 0.75
    rocchio_gamma: float = 0.15
    svm_c: float = 1.0
    svm_gamma: float = 1.0
    mlp_hidden: int = 32
    mlp_alpha: float = 0.0001
    mlp_max_iter: int = 200
    triplet_hidden: int = 64
    triplet_margin: float = 0.2
    triplet_steps: int = 50
    triplet_lr: float = 0.02
    pseudo_negatives: int = 32
    seed: int = 0


# ---------------------------------------------------------------- shared pieces

def _split(marks: dict[int, bool]) -> tuple[np.ndarray, np.ndarray]:
    """(relevant rows, irrelevant rows), each sorted."""
    relevant = sorted(int(i) for i, good in marks.items() if good)
    irrelevant = sorted(int(i) for i, good in marks.items() if not good)
    return np.asarray(relevant, dtype=np.int64), np.asarray(irrelevant, dtype=np.int64)


def _candidates(n: int, marks: dict[int, bool], shown: set[int]) -> np.ndarray:
    """Rows never shown nor marked, ascending."""
    keep = np.ones(n, dtype=bool)
    seen = [int(i) for i in shown] + [int(i) for i in marks]
    if seen:
        keep[np.asarray(seen, dtype=np.int64)] = False
    return np.flatnonzero(keep)


def _best(candidates: np.ndarray, scores: np.ndarray, k: int) -> list[int]:
    """The k candidates with the highest scores (scores[i] belongs to candidates[i]), best first;
    ties go to the lower row. O(N) selection, then a sort of the few selected."""
    if k <= 0 or not len(candidates):
        return []
    neg = -np.asarray(scores, dtype=np.float64)
    if k < len(neg):
        pick = np.flatnonzero(neg <= np.partition(neg, k - 1)[k - 1])  # the k best and any tied with the k-th
    else:
        pick = np.arange(len(neg))
    order = pick[np.argsort(neg[pick], kind="stable")][:k]
    return [int(i) for i in candidates[order]]


def _scores(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Scores of every gallery row, kept for the candidates: scoring all rows and dropping the few
    shown ones is cheaper than copying the candidate rows out of a large gallery."""
    return values if len(candidates) == len(values) else values[candidates]


def _training_set(query: np.ndarray, gallery: np.ndarray, relevant: np.ndarray, irrelevant: np.ndarray,
                  candidates: np.ndarray, settings: FeedbackSettings) -> tuple[np.ndarray, np.ndarray]:
    """Positives: the query and the relevant rows. Negatives: the irrelevant rows; with none yet,
    pseudo-negatives: a seeded sample (feedback.seed) of feedback.pseudo_negatives unshown rows
    from the half of the unshown rows farthest from the positives' mean (likely other people)."""
    positives = np.vstack([unit(query)[None, :], gallery[relevant]])
    if len(irrelevant):
        negatives = gallery[irrelevant]
    else:
        sims = _scores(gallery @ unit(positives.mean(axis=0)).astype(gallery.dtype), candidates)
        far = candidates[sims <= np.median(sims)] if len(candidates) > 1 else candidates[:0]
        n = min(int(settings.pseudo_negatives), len(far))
        pick = np.sort(np.random.default_rng(int(settings.seed)).choice(len(far), n, replace=False))
        negatives = gallery[far[pick]]
    x = np.vstack([positives, negatives]).astype(np.float64)
    y = np.r_[np.ones(len(positives), dtype=int), np.zeros(len(negatives), dtype=int)]
    return x, y


_CONTROLLER = []


def _one_blas_thread():
    """BLAS on one thread while a tiny model trains: threads only cost there (5× slower on a
    busy 2-core machine); the scoring of the gallery afterwards keeps every thread."""
    from threadpoolctl import ThreadpoolController

    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


# ---------------------------------------------------------------- methods

def nearest(query, gallery, marks, shown, k, settings: FeedbackSettings):
    """The baseline: the k unshown rows nearest the query (cosine), whatever the marks say; the
    rounds walk down the plain ranking. No fallback needed."""
    candidates = _candidates(len(gallery), marks, shown)
    return _best(candidates, _scores(gallery @ query.astype(gallery.dtype), candidates), k)


def rocchio(query, gallery, marks, shown, k, settings: FeedbackSettings):
    """Rocchio's update: q' = feedback.rocchio_alpha·query + feedback.rocchio_beta·mean(relevant)
    − feedback.rocchio_gamma·mean(irrelevant), then the k unshown rows nearest q'.
    Fallback: with no relevant mark the β term is left out (q' = α·query − γ·mean(irrelevant): the
    query moves away from the irrelevant centroid); with no mark at all it is plain nearest."""
    relevant, irrelevant = _split(marks)
    moved = float(settings.rocchio_alpha) * unit(query)
    if len(relevant):
        moved = moved + float(settings.rocchio_beta) * gallery[relevant].mean(axis=0)
    if len(irrelevant):
        moved = moved - float(settings.rocchio_gamma) * gallery[irrelevant].mean(axis=0)
    candidates = _candidates(len(gallery), marks, shown)
    return _best(candidates, _scores(gallery @ moved.astype(gallery.dtype), candidates), k)


def _svm_decision(model, rows: np.ndarray, gamma: float) -> np.ndarray:
    """model.decision_function(rows) as matrix products: Σ dual_coef·exp(−γ|x − sv|²) + intercept.
    libsvm evaluates the kernel row by row: 3 s for 10^5 rows here, against 0.5 s this way."""
    sv = model.support_vectors_.astype(rows.dtype)
    sq = (np.einsum("nd,nd->n", rows, rows)[:, None] + np.einsum("sd,sd->s", sv, sv)[None, :]
          - 2 * (rows @ sv.T))
    kernel = np.exp(-gamma * np.maximum(sq, 0))
    return kernel @ model.dual_coef_[0].astype(rows.dtype) + model.intercept_[0]


def _learned(query, gallery, marks, shown, k, settings: FeedbackSettings, scores_of) -> list[int]:
    """The frame svm and mlp share: rocchio's ranking with no relevant mark yet, the positives'
    mean with no negative at all, else the unshown rows by scores_of(x, y) (a score per gallery row)
    of a classifier fitted on _training_set's rows."""
    relevant, irrelevant = _split(marks)
    if not len(relevant):
        return rocchio(query, gallery, marks, shown, k, settings)
    candidates = _candidates(len(gallery), marks, shown)
    if not len(candidates) or k <= 0:
        return []
    x, y = _training_set(query, gallery, relevant, irrelevant, candidates, settings)
    if y.min() == 1:  # no negative at all (a single row left): nearest the positives' mean
        return _best(candidates, _scores(gallery @ unit(x.mean(axis=0)).astype(gallery.dtype), candidates), k)
    return _best(candidates, _scores(scores_of(x, y), candidates), k)


def svm(query, gallery, marks, shown, k, settings: FeedbackSettings):
    """An RBF-kernel SVM (sklearn SVC, C = feedback.svm_c, gamma = feedback.svm_gamma on unit
    vectors, balanced class weights) trained on the query and the relevant rows against the
    irrelevant rows (or, with none yet, pseudo-negatives: see _training_set); the unshown rows are
    ranked by decision value.
    Fallback: with no relevant mark, exactly rocchio's ranking (α·query − γ·mean(irrelevant));
    with no mark at all, plain nearest neighbours."""
    from sklearn.svm import SVC

    def scores_of(x, y):
        model = SVC(C=float(settings.svm_c), kernel="rbf", gamma=float(settings.svm_gamma), class_weight="balanced")
        model.fit(x, y)
        return _svm_decision(model, gallery, float(settings.svm_gamma))

    return _learned(query, gallery, marks, shown, k, settings, scores_of)


def mlp(query, gallery, marks, shown, k, settings: FeedbackSettings):
    """A small MLP (sklearn MLPClassifier: one hidden layer of feedback.mlp_hidden ReLU units,
    L2 penalty feedback.mlp_alpha, lbfgs for at most feedback.mlp_max_iter iterations, initial
    weights seeded by feedback.seed) on the same training set as svm, positives repeated to balance
    the classes and inputs scaled by √D (unit-scale features); the unshown rows are ranked by the
    network's logit (not its saturating probability, so no ties at 1.0).
    Fallback: with no relevant mark, exactly rocchio's ranking (α·query − γ·mean(irrelevant));
    with no mark at all, plain nearest neighbours."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    def scores_of(x, y):
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        repeat = max(1, round(n_neg / n_pos))
        x = np.vstack([np.repeat(x[y == 1], repeat, axis=0), x[y == 0]])
        y = np.r_[np.ones(n_pos * repeat, dtype=int), np.zeros(n_neg, dtype=int)]
        scale = np.sqrt(gallery.shape[1])
        model = MLPClassifier(hidden_layer_sizes=(int(settings.mlp_hidden),), alpha=float(settings.mlp_alpha),
                              solver="lbfgs", max_iter=int(settings.mlp_max_iter), random_state=int(settings.seed))
        with warnings.catch_warnings(), _one_blas_thread():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x * scale, y)
        hidden = np.maximum(gallery @ (model.coefs_[0] * scale).astype(gallery.dtype)
                            + model.intercepts_[0].astype(gallery.dtype), 0)
        return hidden @ model.coefs_[1][:, 0].astype(gallery.dtype) + model.intercepts_[1][0]

    return _learned(query, gallery, marks, shown, k, settings, scores_of)


def triplet(query, gallery, marks, shown, k, settings: FeedbackSettings):
    """The relevance-feedback thesis's third method: a small residual MLP re-maps the embeddings,
    f(v) = v + W2·relu(W1·v) (feedback.triplet_hidden units; W2 starts at zero, so f starts as the
    identity), trained for feedback.triplet_steps Adam steps (feedback.triplet_lr, seeded by
    feedback.seed) with a triplet loss on the marks: every positive (the query and the relevant rows) as
    anchor, every other positive as positive, every negative (svm's training set: the irrelevant rows,
    or pseudo-negatives) as negative, cosine distance, margin feedback.triplet_margin. The unshown rows
    are then ranked by cosine distance to the re-mapped query. Written with torch here: no library has
    this few-sample re-mapping; the loss is four lines.
    Fallback: with no relevant mark, exactly rocchio's ranking (α·query − γ·mean(irrelevant)); with no
    negative at all, nearest the positives' mean."""
    import torch

    def scores_of(x, y):
        generator = torch.Generator().manual_seed(int(settings.seed))
        d, hidden = x.shape[1], int(settings.triplet_hidden)
        w1 = (torch.randn(d, hidden, generator=generator) / d ** 0.5).requires_grad_()
        w2 = torch.zeros(hidden, d, requires_grad=True)

        def remap(v: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(v + torch.relu(v @ w1) @ w2, dim=1)

        pos, neg = torch.as_tensor(x[y == 1], dtype=torch.float32), torch.as_tensor(x[y == 0], dtype=torch.float32)
        optimizer = torch.optim.Adam([w1, w2], lr=float(settings.triplet_lr))
        for _ in range(int(settings.triplet_steps)):
            p, n = remap(pos), remap(neg)
            d_ap, d_an = 1 - p @ p.T, 1 - p @ n.T  # (P, P) and (P, N) cosine distances
            loss = torch.relu(d_ap[:, :, None] - d_an[:, None, :] + float(settings.triplet_margin))
            loss = loss[~torch.eye(len(p), dtype=torch.bool)].mean()  # an anchor is never its own positive
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            mapped = remap(torch.as_tensor(gallery, dtype=torch.float32))
            return (mapped @ remap(torch.as_tensor(x[:1], dtype=torch.float32))[0]).numpy()  # x[0] is the query

    return _learned(query, gallery, marks, shown, k, settings, scores_of)


FEEDBACK: dict[str, Callable] = {
    "nearest": nearest,
    "rocchio": rocchio,
    "svm": svm,
    "mlp": mlp,
    "triplet": triplet,
}


# The methods that need a package the inference install (pip install -e .) leaves out: scikit-learn (the [feedback]
# extra, or [train]) and PyTorch ([train]).
NEEDS = {"svm": "sklearn", "mlp": "sklearn", "triplet": "torch"}


def available_methods() -> list[str]:
    """The feedback methods this install can run (FEEDBACK's order): those of NEEDS whose package is not installed
    left out, without importing it."""
    return [m for m in FEEDBACK if m not in NEEDS or installed(NEEDS[m])]


def next_round(method: str, query: np.ndarray, gallery: np.ndarray, marks: dict[int, bool], shown: set[int],
               k: int, settings: FeedbackSettings = FeedbackSettings()) -> list[int]:
    """The next k gallery rows for `query` by the feedback method named `method`, best first, none
    of them in `shown` or `marks`; settings holds the methods' parameters.
    An unknown method is a ConfigError naming feedback.method and the choices; rows out of range,
    k < 0 or mismatched shapes are ValueErrors."""
    chosen = lookup(FEEDBACK, method, "feedback.method")
    gallery = np.asarray(gallery)
    if gallery.dtype not in (np.float32, np.float64):
        gallery = gallery.astype(np.float32)
    query = np.asarray(query, dtype=gallery.dtype).reshape(-1)
    if gallery.ndim != 2 or query.shape[0] != gallery.shape[1]:
        raise ValueError(f"query {tuple(query.shape)} and gallery {tuple(gallery.shape)}: need (D,) and (N, D)")
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be 0 or more, got {k}")
    n = len(gallery)
    bad = [int(i) for i in list(marks) + list(shown) if not 0 <= int(i) < n]
    if bad:
        raise ValueError(f"gallery rows {sorted(set(bad))[:5]} are out of range 0..{n - 1}")
    marks = {int(i): bool(v) for i, v in marks.items()}
    shown = {int(i) for i in shown}
    return chosen(unit(query), gallery, marks, shown, k, settings)
