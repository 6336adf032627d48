"""Every figure facematch draws, in one place: the retrieval grid, the training curve, and per
evaluated run a recall@k curve and a precision–recall curve.

The curve data is computed by plain functions (recall_curve, top_k_curve, precision_recall_points)
so it can be tested and reused without drawing. matplotlib is imported only when drawing (Agg
backend, no display needed), and every PNG is written atomically.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.metrics import SUMMARY, _check, mean_average_precision
from utils import atomic_write


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _image(item) -> np.ndarray:
    """A crop to draw: an RGB array as it is, or a crop file read."""
    if isinstance(item, np.ndarray):
        return item
    from PIL import Image

    with Image.open(item) as im:
        return np.asarray(im.convert("RGB"))


def _save(fig, path: str | Path, dpi: int = 80) -> Path:
    """Write `fig` as a PNG onto `path` atomically and close it."""
    plt = _pyplot()
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        plt.close(fig)
    return path


# ---------------------------------------------------------------- curve data

def recall_curve(relevance: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """recall@k for k = 1 … list length (element k-1), averaged over queries."""
    rel, n = _check(relevance, n_relevant)
    if not len(rel):
        return np.zeros(rel.shape[1])
    return (np.cumsum(rel, axis=1) / n.clip(min=1)[:, None]).mean(axis=0)


def top_k_curve(relevance: np.ndarray) -> np.ndarray:
    """Top-k accuracy for k = 1 … list length (element k-1): queries with a match in the first k."""
    rel, _ = _check(relevance)
    if not len(rel):
        return np.zeros(rel.shape[1])
    return np.logical_or.accumulate(rel, axis=1).mean(axis=0)


def precision_recall_points(relevance: np.ndarray, n_relevant: np.ndarray,
                            points: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision at `points` evenly spaced recall levels 0 … 1, averaged over queries:
    (recall levels, precision). 11 points is the classic 11-point curve.

    A query's interpolated precision at level r is its best precision at any rank where its recall
    is at least r, and 0 where the list never reaches recall r (a truncated list).
    """
    rel, n = _check(relevance, n_relevant)
    levels = np.linspace(0.0, 1.0, points)
    if not len(rel) or rel.shape[1] == 0:
        return levels, np.zeros(points)
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, rel.shape[1] + 1)
    recall = hits / n.clip(min=1)[:, None]
    best_after = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # max over ranks ≥ k
    out = np.empty(points)
    rows = np.arange(len(rel))
    for i, level in enumerate(levels):
        reached = recall >= level - 1e-12
        first = reached.argmax(axis=1)
        out[i] = np.where(reached[rows, first], best_after[rows, first], 0.0).mean()
    return levels, out


# ---------------------------------------------------------------- curve figures

def recall_at_k_curve(path: str | Path, relevance: np.ndarray, n_relevant: np.ndarray, title: str = "",
                      log_x: bool | None = None) -> Path:
    """recall@k and top-k accuracy for k = 1 … list length, on one set of axes, as a PNG.

    `log_x` None: a logarithmic k axis when the lists are longer than 20.
    """
    plt = _pyplot()
    recall, top = recall_curve(relevance, n_relevant), top_k_curve(relevance)
    k = np.arange(1, len(recall) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    marker = "o-" if len(k) <= 20 else "-"
    ax.plot(k, recall, marker, label="recall@k", markersize=4)
    ax.plot(k, top, marker, label="top-k accuracy", markersize=4)
    if log_x if log_x is not None else len(k) > 20:
        ax.set_xscale("log")
    ax.set(xlabel="k", ylabel="score", ylim=(0, 1.02), title=title or "recall@k")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return _save(fig, path)


def precision_recall_curve(path: str | Path, relevance: np.ndarray, n_relevant: np.ndarray, title: str = "",
                           points: int = 11) -> Path:
    """The interpolated precision–recall curve averaged over queries (precision_recall_points),
    with the run's mAP in the legend, as a PNG."""
    plt = _pyplot()
    levels, precision = precision_recall_points(relevance, n_relevant, points)
    m = mean_average_precision(relevance, n_relevant)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(levels, precision, "o-", markersize=4, label=f"{points}-point interpolated (mAP={m:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.0), ylim=(0, 1.02), title=title or "precision–recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return _save(fig, path)


def curves_for(figure_path: str | Path, relevance: np.ndarray, n_relevant: np.ndarray,
               title: str = "") -> tuple[Path, Path]:
    """Write <stem>_recall.png and <stem>_pr.png beside `figure_path` (e.g. the retrieval grid)."""
    figure_path = Path(figure_path)
    stem = figure_path.with_suffix("").name
    return (recall_at_k_curve(figure_path.with_name(f"{stem}_recall.png"), relevance, n_relevant, title),
            precision_recall_curve(figure_path.with_name(f"{stem}_pr.png"), relevance, n_relevant, title))


# ---------------------------------------------------------------- retrieval grid and training curve

def retrieval_figure(path: str | Path, query_crops: list, gallery_crops: list, ranked: np.ndarray,
                     correct: list[set[int]], n_queries: int, top: int, title: str = "") -> Path:
    """Draw queries (left) with their top results, framed green when correct and red when not."""
    plt = _pyplot()


    n = min(n_queries, len(query_crops))
    top = min(top, ranked.shape[1])
    fig, axes = plt.subplots(n, top + 1, figsize=(1.6 * (top + 1), 1.7 * n + 0.4), squeeze=False)
    for row in range(n):
        axes[row, 0].imshow(_image(query_crops[row]))
        axes[row, 0].set_title("query", fontsize=8)
        for col in range(top):
            j = int(ranked[row, col])
            ax = axes[row, col + 1]
            ax.imshow(_image(gallery_crops[j]))
            good = j in correct[row]
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:green" if good else "tab:red")
                spine.set_linewidth(4)
            ax.set_title(f"#{col + 1} {'✓' if good else '✗'}", fontsize=8,
                         color="tab:green" if good else "tab:red")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def draw_curve(path: str | Path, history: list[dict], title: str) -> None:
    """Training loss and validation metrics (metrics.SUMMARY, those logged) per epoch, as a PNG figure."""
    plt = _pyplot()

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    for key in SUMMARY:
        values = [h.get(key) for h in history]
        if any(v is not None and v != "" for v in values):
            ax_val.plot(epochs, values, "o-", label=key)
    ax_val.set(xlabel="epoch", ylabel="score", title="validation (held-out people)", ylim=(0, 1.02))
    if ax_val.lines:
        ax_val.legend(loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
