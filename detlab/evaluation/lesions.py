"""Detection-style rates for segmentation: slice-, case- and lesion-level.

What a radiologist asks beside Dice: of the slices (or patients) with a fracture, how many did
the model flag (sensitivity), of those without, how many did it leave alone (specificity), and
of the individual lesions, how many did it touch (lesion recall).

Lesions are connected components of the ground truth **per 2D slice** (8-connectivity, so thin
oblique clefts stay one lesion); a lesion spanning several slices counts once per slice. A
lesion is hit when at least one predicted pixel overlaps it. Predicted components smaller than
``min_lesion_pixels`` are dropped first (specks then neither flag a slice nor hit a lesion).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["RATE_NAMES", "lesion_stats", "detection_rates"]

RATE_NAMES: tuple[str, ...] = (
    "slice_sensitivity",
    "slice_specificity",
    "case_sensitivity",
    "case_specificity",
    "lesion_recall",
)
_EIGHT = np.ones((3, 3), dtype=bool)


def _drop_small(pred: np.ndarray, min_pixels: int) -> np.ndarray:
    if min_pixels <= 1 or not pred.any():
        return pred
    labels, n = ndimage.label(pred, structure=_EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def lesion_stats(pred: np.ndarray, gt: np.ndarray, min_lesion_pixels: int = 1) -> dict[str, Any]:
    """Per-class counts for one slice.

    Args:
        pred: ``(C, H, W)`` bool, predicted mask at the evaluation threshold.
        gt: ``(C, H, W)`` bool ground truth.
        min_lesion_pixels: smallest predicted component that counts.

    Returns:
        ``gt_any``/``pred_any`` ``(C,)`` bool (slice has a lesion / a kept prediction) and
        ``lesions``/``lesions_hit`` ``(C,)`` int64 (ground-truth components / those touched).
    """
    num_classes = gt.shape[0]
    out = {
        "gt_any": np.zeros(num_classes, dtype=bool),
        "pred_any": np.zeros(num_classes, dtype=bool),
        "lesions": np.zeros(num_classes, dtype=np.int64),
        "lesions_hit": np.zeros(num_classes, dtype=np.int64),
    }
    for c in range(num_classes):
        p = _drop_small(pred[c], min_lesion_pixels)
        out["pred_any"][c] = bool(p.any())
        if not gt[c].any():
            continue
        out["gt_any"][c] = True
        labels, n = ndimage.label(gt[c], structure=_EIGHT)
        out["lesions"][c] = n
        out["lesions_hit"][c] = len(np.unique(labels[p & (labels > 0)]))
    return out


def _sens_spec(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class sensitivity and specificity over rows of ``(N, C)`` bool arrays (NaN where
    there is no positive / no negative row)."""
    tp = (gt & pred).sum(0).astype(np.float64)
    pos = gt.sum(0).astype(np.float64)
    tn = (~gt & ~pred).sum(0).astype(np.float64)
    neg = (~gt).sum(0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pos > 0, tp / pos, np.nan), np.where(neg > 0, tn / neg, np.nan)


def detection_rates(records: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Per-class rates over records holding :func:`lesion_stats` keys and ``case_id``.

    A case is positive when any of its slices is; it is flagged when any of its slices is.
    Every rate is NaN when undefined (no positive slice/case, no negative one, no lesion).
    """
    gt = np.stack([r["gt_any"] for r in records])
    pred = np.stack([r["pred_any"] for r in records])
    out: dict[str, list[float]] = {}
    sens, spec = _sens_spec(gt, pred)
    out["slice_sensitivity"], out["slice_specificity"] = sens.tolist(), spec.tolist()
    cases: dict[Any, int] = {}
    for r in records:
        cases.setdefault(r["case_id"], len(cases))
    index = np.array([cases[r["case_id"]] for r in records])
    case_gt = np.zeros((len(cases), gt.shape[1]), dtype=bool)
    case_pred = np.zeros_like(case_gt)
    np.logical_or.at(case_gt, index, gt)
    np.logical_or.at(case_pred, index, pred)
    sens, spec = _sens_spec(case_gt, case_pred)
    out["case_sensitivity"], out["case_specificity"] = sens.tolist(), spec.tolist()
    lesions = np.sum([r["lesions"] for r in records], axis=0).astype(np.float64)
    hits = np.sum([r["lesions_hit"] for r in records], axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["lesion_recall"] = np.where(lesions > 0, hits / lesions, np.nan).tolist()
    return out
