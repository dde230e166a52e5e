"""Text plots: predicted vs ground-truth polygons (true positive / false positive / missed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .common import halo, image_grid, new_figure

__all__ = ["STATUS_COLOURS", "text_overlay_figure", "hmean_vs_threshold", "hmean_figure"]

STATUS_COLOURS = {
    "true positive": "#2ca02c",
    "false positive": "#d62728",
    "missed ground truth": "#ffbf00",
    "not scored (don't care)": "#9e9e9e",
}


def text_overlay_figure(samples: Sequence[dict[str, Any]], title: str = "",
                        columns: int = 4) -> Figure:
    """Images with their polygons in three colours (legend :data:`STATUS_COLOURS`).

    Each sample: ``image`` ``(H, W, 3)`` uint8, ``preds``/``gts`` lists of ``(K, 2)`` (x, y)
    px polygons, ``pred_status``/``gt_status`` as
    :func:`~detlab.evaluation.text_hmean.match_text_status` (1 matched, 0 not, -1 not
    scored), optional ``name``. Matched ground truth is not drawn again (its prediction is).
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Polygon

    fig, axes = image_grid(len(samples), columns=columns, title=title)
    for ax, s in zip(axes, samples):
        ax.imshow(s["image"])
        counts = {"TP": 0, "FP": 0, "missed": 0}
        for poly, st in zip(s["preds"], s["pred_status"]):
            key = {1: "true positive", 0: "false positive"}.get(int(st), "not scored (don't care)")
            counts["TP" if st == 1 else "FP"] += int(st >= 0)
            ax.add_patch(Polygon(np.asarray(poly).reshape(-1, 2), closed=True, fill=False,
                                 linewidth=1.4, edgecolor=STATUS_COLOURS[key],
                                 path_effects=halo(1.4)))
        for poly, st in zip(s["gts"], s["gt_status"]):
            if st == 1:
                continue
            key = "missed ground truth" if st == 0 else "not scored (don't care)"
            counts["missed"] += int(st == 0)
            ax.add_patch(Polygon(np.asarray(poly).reshape(-1, 2), closed=True, fill=False,
                                 linewidth=1.4, linestyle="--", edgecolor=STATUS_COLOURS[key],
                                 path_effects=halo(1.4)))
        name = str(s.get("name", ""))[:24]
        ax.set_title(f"{name}  TP {counts['TP']}  FP {counts['FP']}  missed {counts['missed']}",
                     fontsize=8)
    handles = [Line2D([], [], color=c, linewidth=2, label=k,
                      linestyle="--" if "ground truth" in k or "care" in k else "-")
               for k, c in STATUS_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8)
    return fig


def hmean_vs_threshold(samples: Sequence[dict[str, Any]], postprocessor: Any,
                       thresholds: Sequence[float], iou_threshold: float = 0.5,
                       ignore_overlap: float = 0.5) -> dict[str, np.ndarray]:
    """Precision, recall and H-mean of ``samples`` with ``postprocessor``'s
    ``binarize_threshold`` set to each of ``thresholds`` (a copy; the model's is unchanged).

    Each sample: ``prob_map`` ``(h, w)`` (the content region at input resolution, as
    ``Prediction.extras["prob_map"]`` of the DB head), ``scale`` ``(sy, sx)``, ``orig_size``,
    ``gts`` (original px) and ``ignore``. Counts are pooled over the samples (ICDAR protocol,
    :func:`~detlab.evaluation.text_hmean.match_text_polygons`).
    """
    import copy

    from ..evaluation.text_hmean import match_text_polygons

    out = {k: np.zeros(len(thresholds)) for k in ("precision", "recall", "hmean")}
    for j, t in enumerate(thresholds):
        pp = copy.copy(postprocessor)
        pp.binarize_threshold = float(t)
        matched = num_pred = num_gt = 0
        for s in samples:
            polygons, _ = pp(s["prob_map"], scale=s["scale"], pad=(0.0, 0.0),
                             orig_size=s["orig_size"])
            m, p, g = match_text_polygons([np.asarray(q, np.float64) for q in polygons],
                                          s["gts"], s["ignore"], iou_threshold, ignore_overlap)
            matched, num_pred, num_gt = matched + m, num_pred + p, num_gt + g
        precision = matched / num_pred if num_pred else 0.0
        recall = matched / num_gt if num_gt else 0.0
        out["precision"][j], out["recall"][j] = precision, recall
        out["hmean"][j] = (2 * precision * recall / (precision + recall)
                           if precision + recall > 0 else 0.0)
    return out


def hmean_figure(thresholds: Sequence[float], curves: dict[str, np.ndarray],
                 current: float | None = None, title: str = "") -> Figure:
    """Precision, recall and H-mean vs binarization threshold; the best H-mean and the
    model's ``current`` threshold marked."""
    fig = new_figure(6.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    thresholds = np.asarray(thresholds, np.float64)
    for key, style in (("precision", ":"), ("recall", "--")):
        ax.plot(thresholds, curves[key], style, linewidth=1.2, label=key)
    h = np.asarray(curves["hmean"])
    best = len(h) - 1 - int(np.argmax(h[::-1]))  # ties: the highest threshold
    ax.plot(thresholds, h, color="black", linewidth=2.2,
            label=f"H-mean: best {h[best]:.3f} at {thresholds[best]:.2f}")
    ax.plot([thresholds[best]], [h[best]], "o", color="red")
    if current is not None:
        ax.axvline(current, color="grey", linestyle="--", linewidth=1,
                   label=f"model's threshold {current:g}")
    ax.set(xlim=(float(thresholds.min()), float(thresholds.max())), ylim=(0, 1.02),
           xlabel="binarization threshold", ylabel="score",
           title=title or "H-mean vs binarization threshold")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig
