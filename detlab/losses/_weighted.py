"""Reduction plumbing of the box and quality losses, on top of :class:`~detlab.losses.base.Loss`.

:class:`WeightedLoss` is a :class:`~detlab.losses.base.Loss` (so it has the same ``weight`` and
``name`` as every detlab loss: ``name`` is the suffix of the ``loss_<name>`` key) that adds the
per-item reduction the box and quality losses share (the mmdetection convention):

* ``forward(..., weight=None, avg_factor=None)`` computes a per-item loss ``l`` (shape stated by
  each loss), multiplies it by the optional per-item ``weight``;
* ``reduction="none"`` returns that tensor, ``"sum"`` its sum, ``"mean"`` its sum divided by
  ``avg_factor`` when given (e.g. the number of positives or the sum of target scores) and by the
  number of items otherwise;
* the result is multiplied by the constructor's ``weight`` (the term's weight in the total loss).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from ..checks import check_choice, check_float
from .base import Loss

__all__ = ["Reduction", "WeightedLoss", "as_fp32"]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = get_args(Reduction)


def as_fp32(x: Tensor) -> Tensor:
    """float16/bfloat16 → float32 (float64 kept, for gradcheck)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class WeightedLoss(Loss):
    """A :class:`~detlab.losses.base.Loss` that reduces per-item losses (see module docstring).

    Args:
        weight: multiplier of this term in the total loss (>= 0).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        eps: small positive number guarding divisions.
        name: key suffix of this term (``loss_<name>``); default from the class name.
    """

    def __init__(
        self,
        weight: float = 1.0,
        reduction: Reduction = "mean",
        eps: float = 1e-7,
        name: str | None = None,
    ) -> None:
        super().__init__(weight=weight, name=name)
        cls = type(self).__name__
        self.reduction: Reduction = check_choice(cls, "reduction", reduction, _REDUCTIONS)
        self.eps = check_float(cls, "eps", eps, low=0.0, high=1.0, low_open=True, high_open=True)

    def reduce(
        self, loss: Tensor, weight: Tensor | None = None, avg_factor: float | Tensor | None = None
    ) -> Tensor:
        """Apply the per-item ``weight``, the reduction and the term weight to ``loss``."""
        if weight is not None:
            weight = as_fp32(weight).to(loss.device)
            if weight.dim() < loss.dim():  # (N,) weights a per-item (N, C) loss row-wise
                weight = weight.reshape(weight.shape + (1,) * (loss.dim() - weight.dim()))
            try:
                loss = loss * weight
            except RuntimeError as err:
                raise ValueError(
                    f"{type(self).__name__}: weight of shape {tuple(weight.shape)} does not match "
                    f"the per-item loss of shape {tuple(loss.shape)}"
                ) from err
        if self.reduction == "none":
            if avg_factor is not None:
                raise ValueError(f"{type(self).__name__}: avg_factor needs reduction='mean'")
            return self.weight * loss
        if self.reduction == "sum":
            if avg_factor is not None:
                raise ValueError(f"{type(self).__name__}: avg_factor needs reduction='mean'")
            return self.weight * loss.sum()
        if avg_factor is None:
            # sum / max(n, 1) instead of mean(): an empty batch gives 0 (with a graph), not NaN.
            return self.weight * loss.sum() / max(loss.numel(), 1)
        # float32 eps keeps a zero avg_factor (no positives) from dividing by zero.
        return self.weight * loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reduction={self.reduction!r}"
