"""Max-IoU matching of anchors or proposals to ground truth (Faster R-CNN, Ren et al. 2015,
arXiv:1506.01497): the RPN and RoI assigner of
:class:`~detlab.models.heads.faster_rcnn.FasterRCNNHead`.

Same decisions as torchvision's ``Matcher`` (``torchvision.models.detection._utils``), which the
tests use as the oracle: each box takes its highest-IoU ground truth; IoU >= ``pos_iou`` makes it
positive, IoU < ``neg_iou`` negative, anything between is ignored; with
``low_quality_matches`` every ground truth also claims the boxes of its highest IoU (ties
included), so no object is left without a positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

from ..checks import check_bool, check_float
from ..errors import ConfigError
from ..registry import ASSIGNERS

__all__ = ["MaxIoUAssigner", "MaxIoUResult"]


@dataclass
class MaxIoUResult:
    """Assignment of ``A`` boxes of one image to its ``G`` ground-truth boxes.

    Attributes:
        gt_index: ``(A,)`` int64: index of the matched ground truth for positives,
            :attr:`MaxIoUAssigner.NEGATIVE` (-1) for negatives, :attr:`MaxIoUAssigner.IGNORED`
            (-2) for boxes left out of training.
        labels: ``(A,)`` int64: the matched ground truth's label for positives (``gt_labels``,
            else 1), 0 for negatives, -1 for ignored boxes (what the samplers read).
    """

    gt_index: Tensor
    labels: Tensor

    def matched(self, gt_boxes: Tensor) -> Tensor:
        """``(A, 4)`` ground-truth box of each positive (box 0 for the others, zeros without
        ground truth): regression targets before masking."""
        if len(gt_boxes) == 0:
            return gt_boxes.new_zeros((len(self.gt_index), 4))
        return gt_boxes[self.gt_index.clamp(min=0)]


@ASSIGNERS.register
class MaxIoUAssigner:
    """IoU-threshold assigner: positives, negatives and ignored boxes from an IoU matrix.

    Args:
        pos_iou: a box whose best IoU is >= this is positive (RPN: 0.7, RoI: 0.5).
        neg_iou: a box whose best IoU is < this is negative (RPN: 0.3, RoI: 0.5); must be
            <= ``pos_iou``; IoUs in between are ignored.
        low_quality_matches: also make positive, for each ground truth, the boxes of its highest
            IoU (ties included) even below ``pos_iou`` (the RPN uses it, the RoI stage not).
    """

    NEGATIVE = -1
    IGNORED = -2

    def __init__(self, pos_iou: float = 0.5, neg_iou: float = 0.5,
                 low_quality_matches: bool = False) -> None:
        owner = "MaxIoUAssigner"
        self.pos_iou = check_float(owner, "pos_iou", pos_iou, low=0.0, high=1.0)
        self.neg_iou = check_float(owner, "neg_iou", neg_iou, low=0.0, high=1.0)
        if self.neg_iou > self.pos_iou:
            raise ConfigError(f"{owner}: neg_iou={neg_iou} must be <= pos_iou={pos_iou}")
        self.low_quality_matches = check_bool(owner, "low_quality_matches", low_quality_matches)

    def __repr__(self) -> str:
        return (f"MaxIoUAssigner(pos_iou={self.pos_iou:g}, neg_iou={self.neg_iou:g}, "
                f"low_quality_matches={self.low_quality_matches})")

    def match(self, iou: Tensor) -> Tensor:
        """``(G, A)`` IoU matrix (``G >= 1``) → ``(A,)`` int64 ground-truth index, or
        :attr:`NEGATIVE` / :attr:`IGNORED`."""
        if iou.dim() != 2 or iou.shape[0] == 0:
            raise ValueError(f"MaxIoUAssigner.match needs a (G >= 1, A) IoU matrix, got "
                             f"{tuple(iou.shape)}")
        best, index = iou.max(dim=0)
        matches = index.clone()
        matches[best < self.neg_iou] = self.NEGATIVE
        matches[(best >= self.neg_iou) & (best < self.pos_iou)] = self.IGNORED
        if self.low_quality_matches:
            # Each ground truth's best boxes (ties included) take their own best ground truth,
            # which need not be this one (as torchvision's Matcher does).
            best_per_gt = iou.max(dim=1).values
            boxes = torch.where(iou == best_per_gt[:, None])[1]
            matches[boxes] = index[boxes]
        return matches

    @torch.no_grad()
    def __call__(self, boxes: Tensor, gt_boxes: Tensor,
                 gt_labels: Tensor | None = None) -> MaxIoUResult:
        """Assign ``boxes`` ``(A, 4)`` to ``gt_boxes`` ``(G, 4)`` (xyxy px, ``G`` may be 0:
        everything negative) with optional ``gt_labels`` ``(G,)`` int64."""
        if len(gt_boxes) == 0:
            neg = torch.full((len(boxes),), self.NEGATIVE, dtype=torch.long, device=boxes.device)
            return MaxIoUResult(neg, torch.zeros_like(neg))
        matches = self.match(box_iou(gt_boxes, boxes))
        if gt_labels is None:
            labels = torch.ones_like(matches)
        else:
            labels = gt_labels[matches.clamp(min=0)].to(torch.long)
        labels[matches == self.NEGATIVE] = 0
        labels[matches == self.IGNORED] = -1
        return MaxIoUResult(matches, labels)
