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

__all__ = [
    "AssignResult",
    "points_in_boxes",
    "check_gt",
    "pick_best_gt",
    "segment_topk",
    "build_result",
]


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
        """``C``: the last dimension of ``target_scores`` (also the background label)."""
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
    if labels.numel():
        # The one host read of an assignment (a user mistake needs a message, not a device-side
        # assert in the scatter): both bounds in one transfer.
        low, high = torch.stack(torch.aminmax(labels)).tolist()
        if low < 0 or high >= num_classes:
            raise DataError(
                f"ground-truth labels must be in [0, {num_classes}) (num_classes from the score "
                f"tensor); got values in [{low}, {high}]"
            )
    return labels, valid


def points_in_boxes(points: Tensor, boxes: Tensor, valid: Tensor | None = None) -> Tensor:
    """Whether each point lies strictly inside each box (and the box is ``valid``).

    ``points`` ``(A, 2)`` (x, y) × xyxy ``boxes`` ``(B, G, 4)`` → bool ``(B, G, A)``.
    """
    if valid is not None:  # an invalid box becomes one that holds no point
        empty = boxes.new_tensor([float("inf"), float("inf"), float("-inf"), float("-inf")])
        boxes = torch.where(valid[..., None], boxes, empty)
    x, y = points[:, 0], points[:, 1]
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))
    inside = x > x1  # in-place ands: fewer (B, G, A) temporaries, which cost page faults
    inside &= x < x2
    inside &= y > y1
    inside &= y < y2
    return inside


def pick_best_gt(
    shape: tuple[int, int, int], pairs: tuple[Tensor, Tensor, Tensor], quality: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """For each anchor, its positive (image, gt, anchor) pair of highest ``quality`` (e.g. IoU);
    ties go to the lowest gt index. Works on the pairs only, never a dense ``(B, G, A)`` tensor.

    Args:
        shape: ``(B, G, A)``.
        pairs: index vectors ``(b, g, a)`` of the positive pairs, each ``(P,)``.
        quality: ``(P,)`` values >= 0 of those pairs.

    Returns:
        ``(gt_index, fg_mask, chosen)``: ``(B, A)`` index of each anchor's ground truth (0 where
        it has none), ``(B, A)`` whether it has one, and ``(P,)`` which pairs were kept.
    """
    b, g, a = shape
    bi, gi, ai = pairs
    anchor = bi * a + ai
    best = quality.new_full((b * a,), -1.0).scatter_reduce_(0, anchor, quality, "amax")
    tied = quality == best[anchor]
    lowest = torch.full((b * a,), g, dtype=gi.dtype, device=gi.device)
    lowest.scatter_reduce_(0, anchor, torch.where(tied, gi, g), "amin")
    chosen = tied & (gi == lowest[anchor])
    fg_mask = (best >= 0).reshape(b, a)
    gt_index = torch.where(fg_mask, lowest.reshape(b, a), 0)
    return gt_index, fg_mask, chosen


def segment_topk(segment: Tensor, values: Tensor, k: int) -> Tensor:
    """Mask of the ``k`` largest ``values`` within each segment id (ties: earlier entry first).

    ``segment`` and ``values`` are ``(P,)``; this is a per-group top-k on a sparse list, so a
    dense ``(B, G, A)`` tensor is never built.
    """
    order = values.sort(descending=True, stable=True).indices
    order = order[segment[order].sort(stable=True).indices]  # by segment, then value
    sorted_segment = segment[order]
    first = torch.ones_like(sorted_segment, dtype=torch.bool)
    first[1:] = sorted_segment[1:] != sorted_segment[:-1]
    position = torch.arange(order.numel(), device=order.device)
    start = torch.cummax(torch.where(first, position, 0), dim=0).values
    keep = torch.zeros_like(values, dtype=torch.bool)
    keep[order] = position - start < k
    return keep


def build_result(
    gt_index: Tensor,
    fg_mask: Tensor,
    labels: Tensor,
    gt_boxes: Tensor,
    quality: Tensor,
    num_classes: int,
) -> AssignResult:
    """Gather per-anchor targets from the assignment ``gt_index`` / ``fg_mask`` ``(B, A)``.

    ``quality`` ``(B, A)`` is the soft score put at the true class of positive anchors.
    """
    target_labels = labels.gather(1, gt_index)
    target_boxes = gt_boxes.gather(1, gt_index[..., None].expand(-1, -1, 4))
    target_boxes = target_boxes * fg_mask[..., None].to(target_boxes.dtype)
    b, a = gt_index.shape
    target_scores = quality.new_zeros(b, a, num_classes).scatter_(
        2, (target_labels * fg_mask)[..., None], (quality * fg_mask)[..., None]
    )
    return AssignResult(
        target_labels=torch.where(fg_mask, target_labels, num_classes),
        target_boxes=target_boxes,
        target_scores=target_scores,
        fg_mask=fg_mask,
        gt_index=torch.where(fg_mask, gt_index, -1),
    )
