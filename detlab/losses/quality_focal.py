"""IoU-aware classification losses with soft targets: Quality Focal Loss and Varifocal Loss.

Both take classification ``logits`` ``(N, C)`` and soft ``targets`` ``(N, C)`` in [0, 1] — the
IoU (or alignment metric) of the box at the true class, 0 elsewhere — and give a per-anchor loss
``(N,)``: the sum over classes, so that ``reduction="mean"`` with ``avg_factor`` = number of
positives (or sum of target scores) is the usual normalization. A per-anchor ``weight`` is
``(N,)``. Computed in float32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import check_bool, check_float
from ..registry import LOSSES
from ._weighted import Reduction, WeightedLoss, as_fp32

__all__ = ["QualityFocalLoss", "VarifocalLoss"]


def check_soft_targets(cls: str, logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Validate ``(N, C)`` logits against same-shape soft targets; both as fp32."""
    if logits.dim() != 2 or logits.shape != targets.shape:
        raise ValueError(
            f"{cls}: logits and targets must both be (N, C), got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    return as_fp32(logits), as_fp32(targets).to(logits.device)


@LOSSES.register
class QualityFocalLoss(WeightedLoss):
    """Quality Focal Loss (Li et al. 2020, Generalized Focal Loss, arXiv:2006.04388).

    ``QFL(σ, y) = −|y − σ|^β · ((1 − y) log(1 − σ) + y log σ)`` per class, summed over classes;
    ``σ`` = sigmoid(logit), ``y`` ∈ [0, 1] the quality (IoU) target. With hard 0/1 targets it is
    the sigmoid focal loss with ``γ = β`` and no α.

    Args:
        beta: focusing exponent β (paper: 2).
    """

    def __init__(
        self,
        beta: float = 2.0,
        weight: float = 1.0,
        reduction: Reduction = "mean",
        eps: float = 1e-7,
        name: str = "qfl",
    ) -> None:
        super().__init__(weight, reduction, eps, name)
        self.beta = check_float("QualityFocalLoss", "beta", beta, low=0.0)

    def forward(
        self,
        logits: Tensor,
        targets: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against soft ``targets`` ``(N, C)`` in [0, 1]."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            x, y = check_soft_targets("QualityFocalLoss", logits, targets)
            bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
            # clamp: pow's gradient at 0 is infinite for β < 1
            loss = bce * (y - x.sigmoid()).abs().clamp(min=self.eps).pow(self.beta)
            return self.reduce(loss.sum(dim=1), weight, avg_factor)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, " + super().extra_repr()


@LOSSES.register
class VarifocalLoss(WeightedLoss):
    """Varifocal Loss (Zhang et al. 2021, VarifocalNet, arXiv:2008.13367).

    Per class, with ``p`` = sigmoid(logit) and IoU-aware target ``q``:
    ``−q (q log p + (1 − q) log(1 − p))`` where ``q > 0`` (positives weighted by their own
    quality) and ``−α p^γ log(1 − p)`` where ``q = 0`` (negatives down-weighted as in focal loss);
    summed over classes.

    Args:
        alpha: weight α of negatives (paper: 0.75).
        gamma: focusing exponent γ of negatives (paper: 2).
        iou_weighted: weight positives by ``q`` (paper); if False, by 1.
    """

    def __init__(
        self,
        alpha: float = 0.75,
        gamma: float = 2.0,
        iou_weighted: bool = True,
        weight: float = 1.0,
        reduction: Reduction = "mean",
        eps: float = 1e-7,
        name: str = "vfl",
    ) -> None:
        super().__init__(weight, reduction, eps, name)
        self.alpha = check_float("VarifocalLoss", "alpha", alpha, low=0.0)
        self.gamma = check_float("VarifocalLoss", "gamma", gamma, low=0.0)
        self.iou_weighted = check_bool("VarifocalLoss", "iou_weighted", iou_weighted)

    def forward(
        self,
        logits: Tensor,
        targets: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against IoU-aware ``targets`` ``(N, C)`` in [0, 1]."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            x, q = check_soft_targets("VarifocalLoss", logits, targets)
            positive = q > 0
            pos_weight = q if self.iou_weighted else torch.ones_like(q)
            neg_weight = self.alpha * x.sigmoid().clamp(min=self.eps).pow(self.gamma)
            focal_weight = torch.where(positive, pos_weight, neg_weight)
            bce = F.binary_cross_entropy_with_logits(x, q, reduction="none")
            return self.reduce((bce * focal_weight).sum(dim=1), weight, avg_factor)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, gamma={self.gamma}, iou_weighted={self.iou_weighted}, "
            + super().extra_repr()
        )
