"""Detection-style rates for segmentation: slice-, case- and lesion-level.

What a radiologist asks beside Dice: of the slices (or patients) with a fracture, how many did
the model flag (sensitivity), of those without, how many did it leave alone (specificity), and
of the individual lesions, how many did it touch (lesion recall).

Lesions are connected components of the ground truth **per 2D slice** (8-connectivity, so thin
oblique clefts stay one lesion); a lesion spanning several slices counts once per slice. A
lesion is hit when at least one predicted pixel overlaps it. Predicted components smaller than
``min_lesion_pixels`` are dropped first (specks then neither flag a slice nor hit a lesion).

FROC (:mod:`detlab.evaluation.froc`, when :func:`lesion_stats` gets the probabilities):
candidates are the connected components of ``probs >= FROC_MIN_SCORE`` (components below
``min_lesion_pixels`` dropped), scored by their highest probability. A lesion's score is the
highest candidate probability inside it (it is hit at every threshold up to that score; a
lesion no candidate touches is missed at every threshold); a candidate touching no lesion is
one false positive up to its score. False positives are averaged over scans (cases, as
``case_*``; a 2D image without ``case_id`` is its own scan). A candidate counts as one false
positive at every threshold, even where a higher threshold would split it in two: the usual
candidate-level approximation (LUNA16, CAMELYON16).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from .froc import froc_curve, froc_metric_names, froc_sensitivities

__all__ = ["RATE_NAMES", "FROC_MIN_SCORE", "lesion_stats", "lesion_candidates",
           "detection_rates", "froc_curves"]

RATE_NAMES: tuple[str, ...] = (
    "slice_sensitivity",
    "slice_specificity",
    "case_sensitivity",
    "case_specificity",
    "lesion_recall",
    *froc_metric_names(),
)
# lowest probability that forms an FROC candidate: the curve spans thresholds above it
FROC_MIN_SCORE = 0.05
_EIGHT = np.ones((3, 3), dtype=bool)


def _drop_small(pred: np.ndarray, min_pixels: int) -> np.ndarray:
    if min_pixels <= 1 or not pred.any():
        return pred
    labels, n = ndimage.label(pred, structure=_EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def lesion_candidates(probs: np.ndarray, gt: np.ndarray, min_lesion_pixels: int = 1,
                      min_score: float = FROC_MIN_SCORE) -> tuple[np.ndarray, np.ndarray]:
    """FROC scores of one class on one slice: ``(tp_scores, fp_scores)``.

    ``probs`` ``(H, W)`` float, ``gt`` ``(H, W)`` bool. ``tp_scores``: one per ground-truth
    component touched by a candidate (its highest candidate probability); ``fp_scores``: the
    highest probability of each candidate touching no ground truth (see the module docstring).
    """
    cand = _drop_small(probs >= min_score, min_lesion_pixels)
    tp = np.zeros(0, np.float64)
    fp = np.zeros(0, np.float64)
    if not cand.any():
        return tp, fp
    labels, n = ndimage.label(cand, structure=_EIGHT)
    index = np.arange(1, n + 1)
    peak = np.asarray(ndimage.maximum(probs, labels, index), np.float64).reshape(-1)
    touches = np.asarray(ndimage.maximum(gt, labels, index)).reshape(-1) > 0
    fp = peak[~touches]
    if gt.any():
        glabels, m = ndimage.label(gt, structure=_EIGHT)
        inside = np.where(cand, probs, 0.0)
        best = np.asarray(ndimage.maximum(inside, glabels, np.arange(1, m + 1)),
                          np.float64).reshape(-1)
        tp = best[best >= min_score]
    return tp, fp


def lesion_stats(pred: np.ndarray, gt: np.ndarray, min_lesion_pixels: int = 1,
                 probs: np.ndarray | None = None) -> dict[str, Any]:
    """Per-class counts for one slice.

    Args:
        pred: ``(C, H, W)`` bool, predicted mask at the evaluation threshold.
        gt: ``(C, H, W)`` bool ground truth.
        min_lesion_pixels: smallest predicted component that counts.
        probs: ``(C, H, W)`` predicted probabilities; given, the FROC candidates are
            scored too (:func:`lesion_candidates`).

    Returns:
        ``gt_any``/``pred_any`` ``(C,)`` bool (slice has a lesion / a kept prediction) and
        ``lesions``/``lesions_hit`` ``(C,)`` int64 (ground-truth components / those touched);
        with ``probs`` also ``froc_tp``/``froc_fp``: per class the arrays of
        :func:`lesion_candidates`.
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
    if probs is not None:
        cands = [lesion_candidates(np.asarray(probs[c], np.float64), gt[c], min_lesion_pixels)
                 for c in range(num_classes)]
        out["froc_tp"] = [tp for tp, _ in cands]
        out["froc_fp"] = [fp for _, fp in cands]
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
    curves = froc_curves(records)
    if curves is not None:
        per_class = [froc_sensitivities(fps, sens) for _, fps, sens in curves]
        for name in froc_metric_names():
            out[name] = [values[name] for values in per_class]
    return out


def froc_curves(records: Sequence[dict[str, Any]]
                ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """Per class the FROC curve :func:`~detlab.evaluation.froc.froc_curve` ``(thresholds,
    fps_per_scan, sensitivity)`` over records with ``froc_tp``/``froc_fp`` (None when the
    records have no FROC scores), false positives averaged over the cases."""
    if not records or "froc_tp" not in records[0]:
        return None
    num_scans = len({r["case_id"] for r in records})
    lesions = np.sum([r["lesions"] for r in records], axis=0)
    curves = []
    for c in range(len(lesions)):
        tp = np.concatenate([r["froc_tp"][c] for r in records])
        fp = np.concatenate([r["froc_fp"][c] for r in records])
        curves.append(froc_curve(tp, fp, int(lesions[c]), num_scans))
    return curves
