"""Sigmoid binary cross-entropy with soft targets, for dense detection classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import LOSSES
from ._weighted import Reduction, WeightedLoss
from .quality_focal import check_soft_targets

__all__ = ["SigmoidBCELoss"]


@LOSSES.register
class SigmoidBCELoss(WeightedLoss):
    """Per-class sigmoid BCE against soft targets in [0, 1], summed over classes.

    ``logits`` ``(N, C)`` and ``targets`` ``(N, C)`` (e.g. the task-alignment quality at the true
    class, 0 elsewhere, as YOLOv8 trains its classifier) give a per-anchor loss ``(N,)``, so that
    ``reduction="mean"`` with ``avg_factor`` = sum of target scores is YOLOv8's
    ``BCE.sum() / target_scores_sum``. A per-anchor ``weight`` is ``(N,)`` (0 drops an anchor,
    e.g. one inside an ignore region). Computed in float32 even under autocast.

    Args:
        weight, reduction, eps, name: see :class:`~detlab.losses._weighted.WeightedLoss`.
    """

    def __init__(
        self,
        weight: float = 1.0,
        reduction: Reduction = "mean",
        eps: float = 1e-7,
        name: str = "bce",
    ) -> None:
        super().__init__(weight, reduction, eps, name)

    def forward(
        self,
        logits: Tensor,
        targets: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against soft ``targets`` ``(N, C)`` in [0, 1]."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            x, y = check_soft_targets("SigmoidBCELoss", logits, targets)
            bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
            return self.reduce(bce.sum(dim=1), weight, avg_factor)
