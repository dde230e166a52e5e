"""Probability histograms: the compact state behind PR-AUC, the threshold search and the
"is my model collapsed?" bar chart of
:class:`~detlab.evaluation.segmentation.SegmentationEvaluator`.

Pixels are counted per bin of predicted probability, separately for ground-truth positive and
negative pixels. Bin ``k`` holds probabilities ``p`` with ``edges[k] <= p < edges[k + 1]`` (the
last bin also holds ``p == 1``), so "predict positive when ``p >= edges[k]``" is exactly
"every pixel in bins ``k, k+1, ...``" and every precision/recall point is exact at the edges.

Edges are uniform in logit space (``log(p / (1 - p))``): relative resolution is the same near 0,
near 1 and in between, which is what an imbalanced task needs (a collapsed or under-confident
model puts its lesion pixels at 1e-4..1e-2, where linear bins would lump everything together).
With the default 2048 bins over logit(1e-6)..logit(1 - 1e-6) one step is ~0.0135 in logit, i.e.
~1.4 % relative near ``p = 1e-4`` and ~0.0034 absolute near ``p = 0.5``. Binning treats scores
in one bin as tied; on smooth score distributions that moves AP by ~1e-3 at 1024 bins and
~6e-4 at 2048 (measured against torchmetrics), whatever the number of pixels. A few exact edges
are added (the evaluation threshold, the lowest searched threshold and the decades of the text
chart) so those values need no rounding.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DISPLAY_EDGES",
    "make_bin_edges",
    "bin_counts",
    "average_precision",
    "f1_search",
    "format_bars",
]

# Rows of the console chart: decades near 0 and near 1, coarse in the middle.
DISPLAY_EDGES: tuple[float, ...] = (
    0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0,
)
_LOGIT_RANGE_EPS = 1e-6  # logit-uniform edges span [1e-6, 1 - 1e-6]


def make_bin_edges(num_bins: int, extra: Iterable[float] = ()) -> np.ndarray:
    """Sorted, unique bin edges in ``[0, 1]`` (float64 holding float32-exact values).

    Args:
        num_bins: number of logit-uniform bins between 0 and 1.
        extra: values in ``(0, 1)`` that must be edges themselves; each may add one bin.

    Returns:
        ``(K + 1,)`` array with ``edges[0] == 0`` and ``edges[-1] == 1``; ``K`` is at most
        ``num_bins + len(extra)`` (edges that coincide in float32 are merged).
    """
    lo = np.log(_LOGIT_RANGE_EPS / (1 - _LOGIT_RANGE_EPS))
    inner = 1.0 / (1.0 + np.exp(-np.linspace(lo, -lo, num_bins - 1)))
    edges = np.concatenate([[0.0, 1.0], inner, np.asarray(list(extra), dtype=np.float64)])
    # Probabilities arrive as float32: edges that are float32 values make ``p >= edge`` give
    # the same answer in the histogram (bucketize) and in a direct comparison.
    return np.unique(edges.astype(np.float32)).astype(np.float64)


def bin_counts(
    probs: Tensor, positive: Tensor, edges: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-class histograms of ``probs`` for positive and negative pixels.

    Args:
        probs: ``(C, H, W)`` float probabilities in ``[0, 1]`` (any device).
        positive: ``(C, H, W)`` bool ground truth.
        edges: ``(K + 1,)`` float32 bin edges on ``probs``' device.

    Returns:
        ``(pos, neg)``, each ``(C, K)`` int64 on ``probs``' device.
    """
    num_classes = probs.shape[0]
    num_bins = edges.numel() - 1
    idx = torch.bucketize(probs.float(), edges, right=True) - 1  # edges[k] <= p < edges[k+1]
    idx = idx.clamp_(0, num_bins - 1)  # p == 1.0 falls in the last bin
    offset = torch.arange(num_classes, device=probs.device).view(-1, 1, 1) * num_bins
    # One bincount over (bin, is_positive) pairs: cheaper than two boolean-indexed passes.
    pair = ((idx + offset) * 2 + positive.long()).flatten()
    size = 2 * num_classes * num_bins
    if pair.device.type == "cpu":  # numpy's bincount is >10x faster than torch's on CPU
        counts = torch.from_numpy(np.bincount(pair.numpy(), minlength=size))
    else:
        counts = torch.bincount(pair, minlength=size)
    counts = counts.view(num_classes, num_bins, 2)
    pos, neg = counts[..., 1], counts[..., 0]
    return pos, neg


def _from_top(hist: np.ndarray) -> np.ndarray:
    """``out[k] = hist[k:].sum()``: pixels predicted positive at threshold ``edges[k]``."""
    return np.cumsum(hist[::-1])[::-1]


def average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """Step-wise average precision from one class's ``(K,)`` histograms.

    Same definition as ``sklearn.metrics.average_precision_score``:
    ``AP = sum_k (R_k - R_{k+1}) * P_k`` over thresholds from high to low, with all pixels in one
    bin treated as tied scores. Exact when no two distinct probabilities share a bin.
    Returns 0.0 when there is no positive pixel.
    """
    total_pos = int(pos.sum())
    if total_pos == 0:
        return 0.0
    tp = _from_top(pos).astype(np.float64)
    fp = _from_top(neg).astype(np.float64)
    hit = pos > 0  # recall only moves at bins holding positives; there tp > 0
    precision = tp[hit] / (tp[hit] + fp[hit])
    return float(np.sum(pos[hit] / total_pos * precision))


def f1_search(
    pos: np.ndarray, neg: np.ndarray, edges: np.ndarray, min_threshold: float
) -> tuple[float, float]:
    """Best pixel F1 over thresholds ``edges[k] >= min_threshold`` (predict ``p >= t``).

    Ties go to the highest threshold, so a flat F1 curve is not reported as "best at the bottom
    of the range" (the symptom of a collapsed model). Returns ``(best_f1, best_threshold)``;
    ``(0.0, nan)`` when there is no positive pixel (the caller substitutes its threshold).
    """
    total_pos = int(pos.sum())
    if total_pos == 0:
        return 0.0, float("nan")
    tp = _from_top(pos).astype(np.float64)
    fp = _from_top(neg).astype(np.float64)
    f1 = 2 * tp / (tp + fp + total_pos)  # 2TP / (2TP + FP + FN) with FN = P - TP
    cand = np.flatnonzero(edges[:-1] >= np.float32(min_threshold))
    scores = f1[cand]
    best = float(scores.max())
    k = cand[np.flatnonzero(scores >= best - 1e-12)[-1]]
    return best, float(edges[k])


def format_bars(
    edges: np.ndarray,
    counts: np.ndarray,
    positives: np.ndarray,
    width: int = 40,
    display_edges: Iterable[float] = DISPLAY_EDGES,
) -> list[str]:
    """Text rows of a bar chart of ``counts`` regrouped into ``display_edges`` rows.

    Bars grow with ``log10(1 + count)`` so a bin with 10 pixels is visible next to one with
    10 million. ``positives`` (same shape as ``counts``) adds the ground-truth positive pixels
    per row. ``display_edges`` must be edges of ``edges`` (see :func:`make_bin_edges`).
    """
    shown = np.asarray(list(display_edges), dtype=np.float32).astype(np.float64)
    lower = edges[:-1]
    row_of_bin = np.clip(np.searchsorted(shown, lower, side="right") - 1, 0, len(shown) - 2)
    rows = np.bincount(row_of_bin, weights=counts, minlength=len(shown) - 1).astype(np.int64)
    pos_rows = np.bincount(row_of_bin, weights=positives, minlength=len(shown) - 1)
    total = max(int(rows.sum()), 1)
    scale = np.log10(1.0 + max(int(rows.max()), 1))
    lines = []
    for j, n in enumerate(rows):
        bar = 0 if n == 0 else max(1, int(round(width * np.log10(1.0 + n) / scale)))
        lo, hi = shown[j], shown[j + 1]
        close = "]" if j == len(rows) - 1 else ")"
        lines.append(
            f"[{lo:<7.3g}, {hi:<7.3g}{close} {'#' * bar:<{width}} {n:>12d} "
            f"{100.0 * n / total:6.2f}%  gt+ {int(pos_rows[j]):d}"
        )
    return lines
