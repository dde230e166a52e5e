"""Adaptive Training Sample Selection (Zhang et al. 2020, ATSS, arXiv:1912.02424), batched."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..checks import check_float, check_int
from ..ops.boxes import aligned_iou
from ..registry import ASSIGNERS
from .base import AssignResult, build_result, check_gt, pick_best_gt, points_in_boxes

__all__ = ["ATSSAssigner"]


@ASSIGNERS.register
class ATSSAssigner:
    """Assign anchors by an IoU threshold adapted to each ground truth's statistics.

    For each ground truth: on every pyramid level take the ``topk`` anchors whose centres are
    closest to the box centre (candidates); the threshold is mean + standard deviation of the
    candidates' anchor-box IoUs; candidates with IoU >= threshold whose centre lies strictly inside
    the box are positives. An anchor claimed by several ground truths keeps the highest IoU.

    Anchor boxes are ``anchor_boxes`` when given, otherwise squares of side
    ``anchor_size · stride`` centred on the anchor points (anchor-free heads; 5 strides as in
    YOLOv6 / PP-YOLOE; RetinaNet-style ATSS uses 8). The soft classification target of a positive
    is the IoU of its *predicted* box with its ground truth when ``pred_boxes`` is given (as in
    PP-YOLOE), else 1.

    Batched over images with no per-image loop; one small loop over levels for the top-k.

    Args:
        topk: candidates per level and ground truth (paper: 9).
        anchor_size: anchor-box side in strides when boxes are built from points (> 0).
    """

    def __init__(self, topk: int = 9, anchor_size: float = 5.0) -> None:
        self.topk = check_int("ATSSAssigner", "topk", topk, low=1)
        self.anchor_size = check_float("ATSSAssigner", "anchor_size", anchor_size, low=0.0,
                                       low_open=True)

    def __repr__(self) -> str:
        return f"ATSSAssigner(topk={self.topk}, anchor_size={self.anchor_size})"

    @torch.no_grad()
    def __call__(
        self,
        pred_scores: Tensor,
        pred_boxes: Tensor | None,
        anchor_points: Tensor,
        gt_labels: Tensor,
        gt_boxes: Tensor,
        gt_valid: Tensor,
        *,
        num_anchors_per_level: Sequence[int],
        anchor_strides: Tensor | None = None,
        anchor_boxes: Tensor | None = None,
    ) -> AssignResult:
        """Assign a batch.

        Args:
            pred_scores: ``(B, A, C)`` class probabilities (only the shape and dtype are used).
            pred_boxes: ``(B, A, 4)`` predicted xyxy boxes for the soft targets, or None.
            anchor_points: ``(A, 2)`` anchor centres (x, y) in pixels, level by level.
            gt_labels, gt_boxes, gt_valid: padded ground truth ``(B, G)``, ``(B, G, 4)`` xyxy,
                ``(B, G)`` bool.
            num_anchors_per_level: anchors on each level, in the order of ``anchor_points``.
            anchor_strides: ``(A,)`` stride of each anchor (needed unless ``anchor_boxes``).
            anchor_boxes: ``(A, 4)`` xyxy anchor boxes.
        """
        b, a, c = pred_scores.shape
        levels = [int(n) for n in num_anchors_per_level]
        if sum(levels) != a or any(n < 0 for n in levels) or anchor_points.shape != (a, 2):
            raise ValueError(
                f"num_anchors_per_level {levels} (sum {sum(levels)}) and anchor_points "
                f"{tuple(anchor_points.shape)} must match the {a} anchors of pred_scores"
            )
        labels, valid = check_gt(gt_labels, gt_boxes, gt_valid, c)
        dtype = torch.promote_types(pred_scores.dtype, torch.float32)
        g = labels.shape[1]
        if g == 0 or a == 0:
            return AssignResult.background(b, a, c, pred_scores.device, dtype)
        points = anchor_points.to(dtype)
        anchors = self._anchor_boxes(points, anchor_strides, anchor_boxes, dtype)
        gt_boxes = gt_boxes.to(dtype)

        gt_centers = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # (B, G, 2)
        dist = (gt_centers[:, :, None, :] - points[None, None]).pow(2).sum(-1)  # (B, G, A)
        candidates, start = [], 0
        for n in levels:
            if n:
                k = min(self.topk, n)
                idx = dist[..., start : start + n].topk(k, dim=-1, largest=False).indices
                candidates.append(idx + start)
            start += n
        cand = torch.cat(candidates, dim=-1)  # (B, G, K)
        cand_iou = aligned_iou(anchors[cand], gt_boxes[:, :, None, :])  # (B, G, K)
        std = cand_iou.std(dim=-1, keepdim=True) if cand.shape[-1] > 1 else 0.0
        threshold = cand_iou.mean(dim=-1, keepdim=True) + std

        inside = points_in_boxes(points, gt_boxes, valid)  # (B, G, A)
        bi = torch.arange(b, device=cand.device)[:, None, None].expand_as(cand)
        gi = torch.arange(g, device=cand.device)[None, :, None].expand_as(cand)
        pos = (cand_iou >= threshold) & inside.gather(-1, cand)
        # An anchor claimed by several ground truths keeps the one it overlaps most.
        gt_index, fg, _ = pick_best_gt((b, g, a), (bi[pos], gi[pos], cand[pos]), cand_iou[pos])
        quality = torch.ones(b, a, dtype=dtype, device=cand.device)
        if pred_boxes is not None:
            if pred_boxes.shape != (b, a, 4):
                raise ValueError(
                    f"pred_boxes must be (B, A, 4) = {(b, a, 4)}, got {tuple(pred_boxes.shape)}"
                )
            assigned = gt_boxes.gather(1, gt_index[..., None].expand(-1, -1, 4))
            quality = aligned_iou(pred_boxes.to(dtype), assigned).clamp(min=0)
        return build_result(gt_index, fg, labels, gt_boxes, quality, c)

    def _anchor_boxes(
        self, points: Tensor, strides: Tensor | None, boxes: Tensor | None, dtype: torch.dtype
    ) -> Tensor:
        if boxes is not None:
            if boxes.shape != (points.shape[0], 4):
                raise ValueError(f"anchor_boxes must be (A, 4), got {tuple(boxes.shape)}")
            return boxes.to(dtype)
        if strides is None or strides.shape != (points.shape[0],):
            raise ValueError(
                "ATSSAssigner needs anchor_strides (A,) or anchor_boxes (A, 4); got "
                f"{None if strides is None else tuple(strides.shape)}"
            )
        half = (strides.to(dtype) * (self.anchor_size / 2))[:, None]
        return torch.cat([points - half, points + half], dim=-1)
