"""Verification as the field measures it on LFW's pairs: ten folds, each fold's same-person threshold chosen on
the other nine (the one that classifies most of their pairs right), the accuracy on the fold itself; the mean
and standard deviation over folds, as published figures are given (dlib's 99.38% on LFW, for one), and TAR@FAR
over every pair.

    report = pair_report(distances, same, folds)   # {'accuracy': .., 'accuracy_std': .., 'tar@far=1e-3': .., ...}

Written by hand: ten lines over numpy; scikit-learn's cross-validation would need an estimator around a
threshold for the same thing.
"""
from __future__ import annotations

import numpy as np

from evaluation.metrics import VERIFICATION, tar_at_far


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The distance threshold (same person at or below it) that classifies the most pairs right; of equally good
    ones, the midpoint between the two distances around it, so it does not sit on a pair's own distance."""
    order = np.argsort(distances, kind="stable")
    d, s = np.asarray(distances, float)[order], np.asarray(same, bool)[order]
    # accepting the first i pairs: right = the genuine among them + the impostors after them
    right = np.concatenate([[0], np.cumsum(s)]) + ((~s).sum() - np.concatenate([[0], np.cumsum(~s)]))
    i = int(np.argmax(right))
    if i == 0:
        return float(d[0] - 1e-6)
    if i == len(d):
        return float(d[-1] + 1e-6)
    return float((d[i - 1] + d[i]) / 2)


def fold_accuracies(distances: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each fold's accuracy at the threshold chosen on the other folds: (accuracies, thresholds), by fold number."""
    distances, same, folds = np.asarray(distances, float), np.asarray(same, bool), np.asarray(folds)
    names = np.unique(folds)
    if len(names) < 2:
        raise ValueError("pairs in one fold only: the threshold must be chosen on other folds")
    accuracies, thresholds = [], []
    for fold in names:
        held = folds == fold
        threshold = best_threshold(distances[~held], same[~held])
        accuracies.append(float(np.mean((distances[held] <= threshold) == same[held])))
        thresholds.append(threshold)
    return np.array(accuracies), np.array(thresholds)


def pair_report(distances: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """Ten-fold accuracy (mean and standard deviation over folds), TAR at each VERIFICATION rate over all pairs,
    and the numbers of pairs behind them."""
    distances, same = np.asarray(distances, float), np.asarray(same, bool)
    accuracies, thresholds = fold_accuracies(distances, same, folds)
    report = {"accuracy": float(accuracies.mean()), "accuracy_std": float(accuracies.std()),
              "threshold": float(thresholds.mean()), "pairs": int(len(same)), "genuine": int(same.sum()),
              "folds": int(len(accuracies))}
    report.update({name: tar_at_far(distances[same], distances[~same], far) for name, far in VERIFICATION.items()})
    return report
