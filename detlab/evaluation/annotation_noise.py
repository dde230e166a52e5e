"""Annotation noise estimated from repeated annotations of the same objects.

When two annotators (or two rounds) boxed the same images, their disagreement measures the
noise the GT-noise ceiling (:func:`detlab.evaluation.analysis.noise_ceiling`) needs. The
ceiling models each edge of a box as the true edge plus uniform noise on ``[-k, k]`` px. Two
independent annotations of one object then differ, per edge, by the difference of two such
uniforms (a triangular law on ``[-2k, 2k]``) whose variance is ``2 k² / 3``; so

    k = sqrt(3 · mean(d²) / 2)

over all matched edges ``d`` (px). Objects are matched one-to-one per image and class by
maximum total IoU (Hungarian, :func:`scipy.optimize.linear_sum_assignment`), keeping pairs with
IoU >= ``min_iou``; unmatched objects (boxed by one annotator only) are counted, not used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..checks import check_float
from ..errors import DataError
from .analysis import box_iou

__all__ = ["NoiseEstimate", "match_annotations", "estimate_noise_px"]


@dataclass(frozen=True)
class NoiseEstimate:
    """What :func:`estimate_noise_px` found.

    Attributes:
        noise_px: ``k`` of the uniform ±k px per-edge model (NaN without matched pairs).
        pairs: objects boxed by both annotations (matched with IoU >= ``min_iou``).
        only_a, only_b: objects boxed by one annotation only.
        edge_rms: RMS difference per edge ``(x1, y1, x2, y2)``, px.
        median_iou: median IoU of the matched pairs.
    """

    noise_px: float
    pairs: int
    only_a: int
    only_b: int
    edge_rms: tuple[float, float, float, float]
    median_iou: float

    def summary(self) -> str:
        """One line for logs and reports."""
        return (f"annotation noise ±{self.noise_px:.2f} px per edge from {self.pairs} objects "
                f"boxed twice (median IoU {self.median_iou:.3f}; {self.only_a} boxed only in "
                f"the first annotation, {self.only_b} only in the second)")


def match_annotations(
    boxes_a: np.ndarray, labels_a: np.ndarray, boxes_b: np.ndarray, labels_b: np.ndarray,
    min_iou: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches between two annotations ``(N, 4)``/``(M, 4)`` xyxy px of one image:
    same class, maximum total IoU, IoU >= ``min_iou``. Returns ``(rows_a, rows_b)``."""
    labels_a = np.asarray(labels_a).reshape(-1)
    labels_b = np.asarray(labels_b).reshape(-1)
    iou = box_iou(boxes_a, boxes_b)
    iou = np.where(labels_a[:, None] == labels_b[None, :], iou, 0.0)
    if not iou.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = linear_sum_assignment(-iou)
    keep = iou[rows, cols] >= min_iou
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


def estimate_noise_px(
    boxes_a: Sequence[np.ndarray], labels_a: Sequence[np.ndarray],
    boxes_b: Sequence[np.ndarray], labels_b: Sequence[np.ndarray], min_iou: float = 0.3,
) -> NoiseEstimate:
    """``k`` (px) of the uniform per-edge noise model from two annotations of the same images
    (module docstring). Each argument holds one array per image, in the same image order:
    boxes ``(N_i, 4)`` xyxy in original pixels, labels ``(N_i,)``."""
    check_float("estimate_noise_px", "min_iou", min_iou, low=0, high=1, low_open=True)
    if not (len(boxes_a) == len(labels_a) == len(boxes_b) == len(labels_b)):
        raise DataError(
            f"repeated annotations: the two annotations cover {len(boxes_a)} and "
            f"{len(boxes_b)} images (labels: {len(labels_a)}, {len(labels_b)}); they must "
            "annotate the same images in the same order")
    diffs, ious, only_a, only_b = [], [], 0, 0
    for ba, la, bb, lb in zip(boxes_a, labels_a, boxes_b, labels_b):
        ba = np.asarray(ba, np.float64).reshape(-1, 4)
        bb = np.asarray(bb, np.float64).reshape(-1, 4)
        ra, rb = match_annotations(ba, la, bb, lb, min_iou)
        only_a += len(ba) - len(ra)
        only_b += len(bb) - len(rb)
        if len(ra):
            diffs.append(ba[ra] - bb[rb])
            ious.append(np.diag(box_iou(ba[ra], bb[rb])))
    if not diffs:
        nan = float("nan")
        return NoiseEstimate(nan, 0, only_a, only_b, (nan, nan, nan, nan), nan)
    d = np.concatenate(diffs)
    rms = np.sqrt((d**2).mean(axis=0))
    k = math.sqrt(1.5 * float((d**2).mean()))
    return NoiseEstimate(k, int(len(d)), only_a, only_b,
                         tuple(float(v) for v in rms), float(np.median(np.concatenate(ious))))
