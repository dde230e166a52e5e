"""What every anchor-to-ground-truth assigner returns, and the batched steps they share.

Ground truth arrives padded to the largest count ``G`` in the batch: ``gt_boxes`` ``(B, G, 4)``
xyxy pixels, ``gt_labels`` ``(B, G)`` int64 and ``gt_valid`` ``(B, G)`` bool marking the real
rows. Padding rows may hold anything (their labels and boxes are never used); ``G = 0`` is valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import DataError

__all__ = ["AssignResult", "points_in_boxes", "check_gt", "keep_best_gt", "gather_targets"]


@dataclass
class AssignResult:
    """Per-anchor training targets for a batch of ``B`` images with ``A`` anchors each.

    Attributes:
        target_labels: ``(B, A)`` int64 class of the assigned ground truth; ``num_classes`` (the
            ``C`` of ``target_scores``) for background anchors.
        target_boxes: ``(B, A, 4)`` xyxy pixels of the assigned ground truth; zeros for
            background.
        target_scores: ``(B, A, C)`` soft classification targets (the assigner's quality at the
            true class, 0 elsewhere); all zero for background.
        fg_mask: ``(B, A)`` bool, True for anchors assigned to a ground-truth box.
        gt_index: ``(B, A)`` int64 index into the image's (padded) ground truth; -1 for
            background.
    """

    target_labels: Tensor
    target_boxes: Tensor
    target_scores: Tensor
    fg_mask: Tensor
    gt_index: Tensor

    @property
    def num_classes(self) -> int:
        return int(self.target_scores.shape[-1])

    @classmethod
    def background(
        cls, batch: int, anchors: int, num_classes: int, device: torch.device, dtype: torch.dtype
    ) -> AssignResult:
        """All-background result (no ground truth anywhere in the batch)."""
        return cls(
            target_labels=torch.full(
                (batch, anchors), num_classes, dtype=torch.long, device=device
            ),
            target_boxes=torch.zeros(batch, anchors, 4, dtype=dtype, device=device),
            target_scores=torch.zeros(batch, anchors, num_classes, dtype=dtype, device=device),
            fg_mask=torch.zeros(batch, anchors, dtype=torch.bool, device=device),
            gt_index=torch.full((batch, anchors), -1, dtype=torch.long, device=device),
        )


def check_gt(
    gt_labels: Tensor, gt_boxes: Tensor, gt_valid: Tensor, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Validate padded ground truth; return ``(labels, valid)`` with padding labels set to 0."""
    b, g = gt_labels.shape[:2] if gt_labels.dim() == 2 else (-1, -1)
    if gt_labels.dim() != 2 or gt_boxes.shape != (b, g, 4) or gt_valid.shape != (b, g):
        raise ValueError(
            "gt_labels (B, G), gt_boxes (B, G, 4) and gt_valid (B, G) do not match: got "
            f"{tuple(gt_labels.shape)}, {tuple(gt_boxes.shape)}, {tuple(gt_valid.shape)}"
        )
    valid = gt_valid.bool()
    labels = torch.where(valid, gt_labels.long(), torch.zeros_like(gt_labels, dtype=torch.long))
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"ground-truth labels must be in [0, {num_classes}) (num_classes from the score "
            f"tensor); got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels, valid


def points_in_boxes(points: Tensor, boxes: Tensor) -> Tensor:
    """Whether each point lies strictly inside each box.

    ``points`` ``(A, 2)`` (x, y) × xyxy ``boxes`` ``(B, G, 4)`` → bool ``(B, G, A)``.
    """
    x, y = points[:, 0], points[:, 1]
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))
    return (x > x1) & (x < x2) & (y > y1) & (y < y2)


def keep_best_gt(mask_pos: Tensor, quality: Tensor) -> Tensor:
    """Resolve anchors matched to several ground truths: keep the one with the highest
    ``quality`` (e.g. IoU) among those matched.

    ``mask_pos`` bool ``(B, G, A)`` × ``quality`` ``(B, G, A)`` → bool ``(B, G, A)``.
    """
    multiple = mask_pos.sum(dim=1, keepdim=True) > 1
    best = quality.masked_fill(~mask_pos, float("-inf")).argmax(dim=1, keepdim=True)
    is_best = torch.zeros_like(mask_pos).scatter_(1, best, True)
    return torch.where(multiple, is_best & mask_pos, mask_pos)


def gather_targets(
    mask_pos: Tensor, labels: Tensor, gt_boxes: Tensor, quality: Tensor, num_classes: int
) -> AssignResult:
    """Build an :class:`AssignResult` from the final one-gt-per-anchor ``mask_pos`` ``(B, G, A)``.

    ``quality`` ``(B, A)`` is the soft score put at the true class of positive anchors.
    """
    fg_mask = mask_pos.any(dim=1)
    gt_index = mask_pos.to(torch.uint8).argmax(dim=1)  # (B, A), 0 for background (fixed below)
    target_labels = labels.gather(1, gt_index)
    target_boxes = gt_boxes.gather(1, gt_index[..., None].expand(-1, -1, 4))
    target_labels = torch.where(fg_mask, target_labels, torch.full_like(target_labels, num_classes))
    target_boxes = target_boxes * fg_mask[..., None].to(target_boxes.dtype)
    one_hot = torch.nn.functional.one_hot(target_labels, num_classes + 1)[..., :num_classes]
    target_scores = one_hot.to(quality.dtype) * (quality * fg_mask)[..., None]
    gt_index = torch.where(fg_mask, gt_index, torch.full_like(gt_index, -1))
    return AssignResult(target_labels, target_boxes, target_scores, fg_mask, gt_index)
