"""Task-aligned assignment (Feng et al. 2021, TOOD, arXiv:2108.07755), batched over images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ..checks import check_choice, check_float, check_int
from ..ops.boxes import aligned_iou
from ..registry import ASSIGNERS
from .base import (
    AssignResult,
    build_result,
    check_gt,
    pick_best_gt,
    points_in_boxes,
    segment_topk,
)

__all__ = ["TaskAlignedAssigner"]


@ASSIGNERS.register
class TaskAlignedAssigner:
    """Assign anchor points to ground truth by the task-alignment metric ``t = s^α · u^β``.

    ``s`` is the predicted score of the ground truth's class at the anchor and ``u`` the IoU of
    the anchor's predicted box with the ground-truth box. For each ground truth the ``topk``
    anchors with the largest ``t`` among those whose point lies strictly inside the box are
    positives (only inside anchors are ranked, unlike YOLOv8/mmdet which rank all anchors and
    then drop outside ones: there a tiny box with ``t = 0`` everywhere can lose its anchors);
    an anchor claimed by several ground truths keeps the one with the highest IoU. The soft
    classification target of a positive is ``t`` normalized per ground truth so that its best
    anchor gets that ground truth's best IoU: ``t · max_u / max_t`` (paper eq. 9, as in YOLOv8).

    The whole batch is assigned at once (no per-image loop); ground truth is padded
    (``gt_valid``), and images or batches without ground truth give all-background results.

    Args:
        topk: candidates per ground truth (TOOD: 13; YOLOv8 uses 10).
        alpha: exponent of the classification score (1.0).
        beta: exponent of the IoU (6.0).
        iou_kind: ``"iou"`` (paper) or ``"ciou"`` (YOLOv8), clamped at 0.
        eps: guards the normalization.
    """

    def __init__(
        self,
        topk: int = 13,
        alpha: float = 1.0,
        beta: float = 6.0,
        iou_kind: Literal["iou", "ciou"] = "iou",
        eps: float = 1e-9,
    ) -> None:
        owner = "TaskAlignedAssigner"
        self.topk = check_int(owner, "topk", topk, low=1)
        self.alpha = check_float(owner, "alpha", alpha, low=0.0)
        self.beta = check_float(owner, "beta", beta, low=0.0)
        self.iou_kind = check_choice(owner, "iou_kind", iou_kind, ("iou", "ciou"))
        self.eps = check_float(owner, "eps", eps, low=0.0, high=1.0, low_open=True, high_open=True)

    def __repr__(self) -> str:
        return (
            f"TaskAlignedAssigner(topk={self.topk}, alpha={self.alpha}, beta={self.beta}, "
            f"iou_kind={self.iou_kind!r})"
        )

    @torch.no_grad()
    def __call__(
        self,
        pred_scores: Tensor,
        pred_boxes: Tensor,
        anchor_points: Tensor,
        gt_labels: Tensor,
        gt_boxes: Tensor,
        gt_valid: Tensor,
        *,
        anchor_strides: Tensor | None = None,
        num_anchors_per_level: Sequence[int] | None = None,
    ) -> AssignResult:
        """Assign a batch.

        Args:
            pred_scores: ``(B, A, C)`` predicted class probabilities (after sigmoid).
            pred_boxes: ``(B, A, 4)`` predicted boxes, xyxy pixels.
            anchor_points: ``(A, 2)`` anchor centres (x, y), pixels.
            gt_labels: ``(B, G)`` int64 classes in ``[0, C)`` (padding rows: anything).
            gt_boxes: ``(B, G, 4)`` xyxy pixels.
            gt_valid: ``(B, G)`` bool, False for padding.
            anchor_strides, num_anchors_per_level: accepted for interface parity with
                :class:`~detlab.assigners.atss.ATSSAssigner`; unused.
        """
        b, a, c = pred_scores.shape
        if pred_boxes.shape != (b, a, 4) or anchor_points.shape != (a, 2):
            raise ValueError(
                "pred_scores (B, A, C), pred_boxes (B, A, 4), anchor_points (A, 2) do not match: "
                f"{tuple(pred_scores.shape)}, {tuple(pred_boxes.shape)}, "
                f"{tuple(anchor_points.shape)}"
            )
        labels, valid = check_gt(gt_labels, gt_boxes, gt_valid, c)
        dtype = torch.promote_types(pred_scores.dtype, torch.float32)
        g = labels.shape[1]
        if g == 0 or a == 0:
            return AssignResult.background(b, a, c, pred_scores.device, dtype)
        gt_boxes = gt_boxes.to(dtype)
        pred_boxes = pred_boxes.to(dtype)

        # IoU and scores only where they can matter (anchor inside a real box): tiny objects
        # leave most (gt, anchor) pairs empty.
        inside = points_in_boxes(anchor_points.to(dtype), gt_boxes, valid)
        bi, gi, ai = inside.nonzero(as_tuple=True)
        iou = aligned_iou(gt_boxes[bi, gi], pred_boxes[bi, ai], self.iou_kind).clamp(min=0)
        score = pred_scores[bi, ai, labels[bi, gi]].to(dtype)
        metric = score.pow(self.alpha) * iou.pow(self.beta)

        # Rank only anchors inside the box: a tiny box whose few inside anchors all have t = 0
        # (early training) still gets them, instead of ties with outside anchors.
        pos = segment_topk(bi * g + gi, metric, self.topk)
        bi, gi, ai, iou, metric = bi[pos], gi[pos], ai[pos], iou[pos], metric[pos]
        # An anchor claimed by several ground truths keeps the one it overlaps most.
        gt_index, fg, chosen = pick_best_gt((b, g, a), (bi, gi, ai), iou)
        bi, gi, ai, iou, metric = bi[chosen], gi[chosen], ai[chosen], iou[chosen], metric[chosen]

        # Normalize per ground truth: its best anchor's target is its best IoU (paper eq. 9).
        max_metric = _segment_max((b, g), (bi, gi), metric)
        max_iou = _segment_max((b, g), (bi, gi), iou)
        quality = torch.zeros(b, a, dtype=dtype, device=iou.device)
        quality[bi, ai] = metric * max_iou[bi, gi] / (max_metric[bi, gi] + self.eps)
        return build_result(gt_index, fg, labels, gt_boxes, quality, c)


def _segment_max(shape: tuple[int, int], index: tuple[Tensor, Tensor], values: Tensor) -> Tensor:
    """``out[i, j] = max(values[k] for k with index[k] == (i, j))``, 0 where none (values >= 0)."""
    flat = index[0] * shape[1] + index[1]
    out = values.new_zeros(shape[0] * shape[1])
    return out.scatter_reduce_(0, flat, values, "amax").reshape(shape)
