"""Smooth L1 (Huber-like) regression loss on box deltas (Girshick, Fast R-CNN, arXiv:1504.08083)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import check_float
from ..registry import LOSSES
from ._weighted import Reduction, WeightedLoss, as_fp32

__all__ = ["SmoothL1Loss"]


@LOSSES.register
class SmoothL1Loss(WeightedLoss):
    """Smooth L1 of ``pred`` vs ``target`` ``(N, D)`` (e.g. encoded box deltas, D = 4), summed
    over D, so the per-item loss is ``(N,)``; ``0.5 x² / beta`` for ``|x| < beta``, else
    ``|x| - 0.5 beta`` (``torch.nn.functional.smooth_l1_loss``; ``beta = 0`` is L1).

    ``reduction="mean"`` with ``avg_factor`` = the number of sampled RoIs is torchvision's
    Faster R-CNN box loss (``beta = 1/9``). Computed in float32 even under autocast.

    ``target_space = "deltas"`` tells a two-stage head to feed encoded deltas, not boxes.

    Args:
        beta: width of the quadratic zone (>= 0).
        weight, reduction, eps, name: see :class:`~detlab.losses._weighted.WeightedLoss`.
    """

    target_space = "deltas"

    def __init__(
        self,
        beta: float = 1.0 / 9.0,
        weight: float = 1.0,
        reduction: Reduction = "mean",
        eps: float = 1e-7,
        name: str = "smooth_l1",
    ) -> None:
        super().__init__(weight, reduction, eps, name)
        self.beta = check_float("SmoothL1Loss", "beta", beta, low=0.0)

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        """Loss of ``pred`` ``(N, D)`` against ``target`` ``(N, D)``."""
        if pred.dim() != 2 or pred.shape != target.shape:
            raise ValueError(
                f"SmoothL1Loss: pred and target must both be (N, D), got {tuple(pred.shape)} and "
                f"{tuple(target.shape)}"
            )
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred, target = as_fp32(pred), as_fp32(target).to(pred.device)
            per_item = F.smooth_l1_loss(pred, target, beta=self.beta, reduction="none").sum(dim=1)
            return self.reduce(per_item, weight, avg_factor)

    def extra_repr(self) -> str:
        return f"beta={self.beta:g}, " + super().extra_repr()
