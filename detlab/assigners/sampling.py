"""Samplers that pick the anchors / RoIs a two-stage detector trains on, after assignment."""

from __future__ import annotations

import torch
from torch import Tensor

from ..checks import check_float, check_int
from ..registry import BOX_SAMPLERS

__all__ = ["BalancedSampler"]


@BOX_SAMPLERS.register
class BalancedSampler:
    """Random positives and negatives per image, at most ``num`` with a positive share.

    Takes up to ``int(num * pos_fraction)`` positives and fills the rest of ``num`` with
    negatives, both uniformly at random (``torch.randperm`` on the global generator, positives
    drawn first; the draws of torchvision's ``BalancedPositiveNegativeSampler``, which the tests
    use as the oracle).

    Args:
        num: boxes sampled per image (RPN: 256, RoI: 512).
        pos_fraction: largest share of positives (RPN: 0.5, RoI: 0.25).
    """

    def __init__(self, num: int = 512, pos_fraction: float = 0.25) -> None:
        self.num = check_int("BalancedSampler", "num", num, low=1)
        self.pos_fraction = check_float("BalancedSampler", "pos_fraction", pos_fraction,
                                        low=0.0, high=1.0)

    def __repr__(self) -> str:
        return f"BalancedSampler(num={self.num}, pos_fraction={self.pos_fraction:g})"

    def __call__(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``labels`` ``(A,)`` of one image (>= 1 positive, 0 negative, -1 ignored) →
        ``(positive, negative)`` bool masks ``(A,)`` of the sampled boxes."""
        positive = torch.where(labels >= 1)[0]
        negative = torch.where(labels == 0)[0]
        num_pos = min(positive.numel(), int(self.num * self.pos_fraction))
        num_neg = min(negative.numel(), self.num - num_pos)
        pos = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
        neg = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]
        pos_mask = torch.zeros_like(labels, dtype=torch.bool)
        neg_mask = torch.zeros_like(labels, dtype=torch.bool)
        pos_mask[pos] = True
        neg_mask[neg] = True
        return pos_mask, neg_mask
