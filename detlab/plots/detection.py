"""Detection plots: precision-recall per class, F1 vs confidence, confusion matrix.

The PR curves are COCOeval's own interpolated precision (``CocoEvaluator.curve_data()``), so
their area is exactly the logged AP. F1-confidence and the confusion matrix match detections
to ground truth here, per image: greedy by descending score (F1, per class, as COCO does) or by
descending IoU (confusion matrix, class-agnostic, so a box of the wrong class shows as a
confusion rather than as a miss plus a false positive).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .common import class_colour, halo, image_grid, new_figure, panel_grid

__all__ = [
    "box_iou", "f1_confidence", "confusion_matrix", "pr_figure", "f1_figure",
    "confusion_figure", "boxes_figure", "best_f1_threshold",
]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``(N, M)`` of xyxy boxes ``a`` ``(N, 4)`` and ``b`` ``(M, 4)``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _match_by_score(dt_boxes: np.ndarray, dt_scores: np.ndarray, gt_boxes: np.ndarray,
                    gt_ignore: np.ndarray, iou: float) -> np.ndarray:
    """Per detection: 1 true positive, 0 false positive, -1 matched to an ignore region (not
    counted). Highest score first, each ground truth matched once (COCO's rule)."""
    out = np.zeros(len(dt_boxes), np.int64)
    if not len(gt_boxes):
        return out
    ious = box_iou(dt_boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), bool)
    for d in np.argsort(-dt_scores, kind="stable"):
        cand = np.where(~taken & ~gt_ignore, ious[d], -1.0)
        g = int(np.argmax(cand))
        if cand[g] >= iou:
            taken[g], out[d] = True, 1
        elif gt_ignore.any() and ious[d][gt_ignore].max() >= iou:
            out[d] = -1
    return out


def f1_confidence(records: Sequence[dict[str, Any]], num_classes: int, iou: float = 0.5,
                  points: int = 1001) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F1 of each class at confidence thresholds ``linspace(0, 1, points)``.

    Returns ``(thresholds (P,), f1 (K, P), has_gt (K,) bool)``: detections with
    ``score >= threshold`` count, a true positive overlaps an unmatched ground truth of its class
    with IoU >= ``iou``; F1 is 0 where a class has no ground truth and no detection.
    """
    thresholds = np.linspace(0.0, 1.0, points)
    tp = np.zeros((num_classes, points))
    fp = np.zeros((num_classes, points))
    num_gt = np.zeros(num_classes)
    hits: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    for r in records:
        for k in range(num_classes):
            gmask = r["gt_labels"] == k
            dmask = r["dt_labels"] == k
            num_gt[k] += int((gmask & ~r["gt_ignore"]).sum())
            if not dmask.any():
                continue
            sc = r["dt_scores"][dmask]
            hits[k].append(_match_by_score(r["dt_boxes"][dmask], sc, r["gt_boxes"][gmask],
                                           r["gt_ignore"][gmask], iou))
            scores[k].append(sc)
    for k in range(num_classes):
        if not scores[k]:
            continue
        sc, hit = np.concatenate(scores[k]), np.concatenate(hits[k])
        for out, which in ((tp, sc[hit == 1]), (fp, sc[hit == 0])):
            # number of scores >= each threshold
            out[k] = len(which) - np.searchsorted(np.sort(which), thresholds, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(num_gt[:, None] > 0, tp / num_gt[:, None], 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return thresholds, f1, num_gt > 0


def best_f1_threshold(thresholds: np.ndarray, f1: np.ndarray,
                      has_gt: np.ndarray) -> float | None:
    """The confidence threshold of the highest F1 averaged over the classes with ground truth
    (ties: the highest threshold); None when no class has ground truth."""
    shown = np.flatnonzero(has_gt)
    if not len(shown):
        return None
    mean = f1[shown].mean(0)
    return float(thresholds[len(mean) - 1 - int(np.argmax(mean[::-1]))])


def confusion_matrix(records: Sequence[dict[str, Any]], num_classes: int, iou: float = 0.5,
                     conf: float = 0.25) -> np.ndarray:
    """Counts ``(K + 1, K + 1)``: row = predicted class, column = true class, index ``K`` =
    background (row K: missed ground truth, column K: detections matching nothing).

    Detections below ``conf`` are dropped; pairs with IoU >= ``iou`` are matched one to one,
    highest IoU first, whatever their classes. Ignore (crowd) ground truths are not counted,
    nor are detections whose best match is one.
    """
    cm = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    bg = num_classes
    for r in records:
        keep = r["dt_scores"] >= conf
        dt_boxes, dt_labels = r["dt_boxes"][keep], r["dt_labels"][keep]
        gt_boxes, gt_labels, ignore = r["gt_boxes"], r["gt_labels"], r["gt_ignore"]
        ious = box_iou(dt_boxes, gt_boxes)
        dt_used = np.zeros(len(dt_boxes), bool)
        gt_used = np.zeros(len(gt_boxes), bool)
        if ious.size:
            pairs = np.argwhere(ious >= iou)
            order = np.argsort(-ious[pairs[:, 0], pairs[:, 1]], kind="stable")
            for d, g in pairs[order]:
                if dt_used[d] or gt_used[g]:
                    continue
                dt_used[d] = gt_used[g] = True
                if not ignore[g]:
                    cm[dt_labels[d], gt_labels[g]] += 1
        for g in np.flatnonzero(~gt_used & ~ignore):
            cm[bg, gt_labels[g]] += 1
        for d in np.flatnonzero(~dt_used):
            cm[dt_labels[d], bg] += 1
    return cm


def _class_legend(ax: Any, n: int) -> None:
    """A few entries inside the axes; more (one per class) beside them, never over curves."""
    if n <= 4:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                  ncol=1 + n // 25)


def pr_figure(precision: np.ndarray | None, class_names: Sequence[str],
              recall_thresholds: np.ndarray, iou_thresholds: np.ndarray) -> Figure:
    """Two panels, IoU 0.5 and IoU 0.50:0.95 (mean over IoU thresholds): precision vs recall
    of each class (legend ``name AP=...``) and the mean over classes (thick black).
    ``precision`` ``(T, R, K)`` from ``CocoEvaluator.curve_data()``; ``-1`` entries (class
    without ground truth) are left out."""
    wide = len(class_names) > 3  # the legend goes beside each panel
    fig, axes = panel_grid(2, columns=2, panel=(6.4 if wide else 5.0, 4.2),
                           title="Precision-recall per class")
    t50 = int(np.argmin(np.abs(np.asarray(iou_thresholds) - 0.5)))
    for ax, name in zip(axes, ("IoU 0.5", "IoU 0.50:0.95")):
        curves = []
        if precision is not None:
            for k, cls in enumerate(class_names):
                p = precision[t50, :, k] if name == "IoU 0.5" else precision[:, :, k]
                if (p < 0).any():
                    continue  # no ground truth for this class
                p = p if p.ndim == 1 else p.mean(0)
                curves.append(p)
                ax.plot(recall_thresholds, p, linewidth=1, label=f"{cls} AP={p.mean():.3f}")
        if curves:
            mean = np.mean(curves, axis=0)
            ax.plot(recall_thresholds, mean, color="black", linewidth=2.5,
                    label=f"all classes AP={mean.mean():.3f}")
            _class_legend(ax, len(curves) + 1)
        else:
            ax.text(0.5, 0.5, "no ground truth evaluated", ha="center", transform=ax.transAxes)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=name)
        ax.grid(True, alpha=0.3)
    return fig


def f1_figure(thresholds: np.ndarray, f1: np.ndarray, has_gt: np.ndarray,
              class_names: Sequence[str], iou: float = 0.5) -> Figure:
    """F1 vs confidence threshold per class and averaged over the classes with ground truth
    (thick), the best average F1 marked with its threshold."""
    shown = [k for k in range(len(class_names)) if has_gt[k]]
    fig = new_figure(8.2 if len(shown) > 3 else 6.0, 4.4)  # room for a legend beside
    ax = fig.add_subplot(1, 1, 1)
    for k in shown:
        ax.plot(thresholds, f1[k], linewidth=1, label=class_names[k])
    if shown:
        mean = f1[shown].mean(0)
        best = int(np.searchsorted(thresholds, best_f1_threshold(thresholds, f1, has_gt)))
        ax.plot(thresholds, mean, color="black", linewidth=2.5,
                label=f"all classes: best F1 {mean[best]:.3f} at {thresholds[best]:.2f}")
        ax.axvline(thresholds[best], color="red", linestyle="--", linewidth=1)
        ax.plot([thresholds[best]], [mean[best]], "o", color="red")
        _class_legend(ax, len(shown) + 1)
    else:
        ax.text(0.5, 0.5, "no ground truth evaluated", ha="center", transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence threshold", ylabel="F1",
           title=f"F1 vs confidence (IoU {iou:g})")
    ax.grid(True, alpha=0.3)
    return fig


def confusion_figure(cm: np.ndarray, class_names: Sequence[str], iou: float = 0.5,
                     conf: float = 0.25) -> Figure:
    """The matrix of :func:`confusion_matrix` as a heat map with counts in the cells (columns
    normalised for the colour: the share of each true class), background last."""
    names = [*class_names, "background"]
    n = len(names)
    size = min(14.0, 3.0 + 0.55 * n)
    fig = new_figure(size + 1.2, size)
    ax = fig.add_subplot(1, 1, 1)
    col = cm.sum(0, keepdims=True)
    share = np.where(col > 0, cm / np.maximum(col, 1), 0.0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set(xlabel="true", ylabel="predicted",
           title=f"Confusion matrix (IoU {iou:g}, confidence >= {conf:g})")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    return fig


def boxes_figure(samples: Sequence[dict[str, Any]], class_names: Sequence[str],
                 title: str, min_score: float = 0.0, columns: int = 4,
                 score_note: str = "", max_boxes: int = 15) -> Figure:
    """Images with boxes, coloured per class, with a legend of the class names.

    Each sample: ``image`` ``(H, W, 3)`` uint8, ``gt_boxes`` ``(G, 4)`` xyxy px and
    ``gt_labels``; optionally ``boxes``/``scores``/``labels`` (predictions, same px; drawn solid
    with ``name score`` above each box, those below ``min_score`` left out) and ``name``
    (panel title). Ground truth is dashed when predictions are drawn, solid otherwise.
    ``score_note`` follows the score limit in the legend (e.g. ``", best F1"``). At most
    ``max_boxes`` predictions per image (highest scores); a label that would cover a
    higher-scoring one is left out (its box is drawn).
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    fig, axes = image_grid(len(samples), columns=columns, title=title)
    used: set[int] = set()
    has_pred = any(s.get("boxes") is not None for s in samples)
    for ax, s in zip(axes, samples):
        ax.imshow(s["image"])
        ax.set_title(f"image {str(s.get('name', ''))[:34]}", fontsize=8)
        for box, label in zip(np.asarray(s["gt_boxes"]).reshape(-1, 4),
                              np.asarray(s["gt_labels"]).reshape(-1)):
            used.add(int(label))
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linewidth=1.3,
                                   linestyle="--" if has_pred else "-",
                                   edgecolor=class_colour(label), path_effects=halo(1.3)))
        if s.get("boxes") is None:
            continue
        boxes = np.asarray(s["boxes"]).reshape(-1, 4)
        scores = np.asarray(s["scores"]).reshape(-1)
        labels = np.asarray(s["labels"]).reshape(-1)
        keep = np.flatnonzero(scores >= min_score)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:max_boxes]
        # label size in image px (a panel is ~320 px wide): labels that would cover an
        # earlier (higher-scoring) one are left out, their boxes are still drawn
        px = max(s["image"].shape[:2]) / 320.0
        placed: list[tuple[float, float, float]] = []
        for i in keep:
            box, score, label = boxes[i], scores[i], int(labels[i])
            used.add(int(label))
            x0, y0, x1, y1 = box
            colour = class_colour(label)
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linewidth=1.6,
                                   edgecolor=colour, path_effects=halo(1.6)))
            name = class_names[label] if 0 <= label < len(class_names) else str(label)
            text = f"{name} {score:.2f}"
            width, height = 5.2 * len(text) * px, 11 * px
            if any(abs(x0 - qx) < max(width, qw) and abs(y0 - qy) < height
                   for qx, qy, qw in placed):
                continue
            placed.append((x0, y0, width))
            ax.text(x0, y0, text, fontsize=7, color="white", va="bottom",
                    clip_on=True, bbox=dict(facecolor=colour, alpha=0.8, pad=0.5,
                                            linewidth=0))
    handles = [Line2D([], [], color=class_colour(k), linewidth=2,
                      label=class_names[k] if k < len(class_names) else str(k))
               for k in sorted(used)]
    if has_pred:
        handles.append(Line2D([], [], color="grey", linestyle="--", label="ground truth"))
        handles.append(Line2D([], [], color="grey",
                              label=f"prediction (score >= {min_score:.3g}{score_note})"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(6, len(handles)),
                   fontsize=8)
    return fig
