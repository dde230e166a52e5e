"""Distribution Focal Loss (Li et al. 2020, Generalized Focal Loss, arXiv:2006.04388)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import check_float, check_int
from ..registry import LOSSES
from ._weighted import Reduction, WeightedLoss, as_fp32
from .nonfinite import NonFiniteRows, nan_where

__all__ = ["DFLoss"]


@LOSSES.register
class DFLoss(NonFiniteRows, WeightedLoss):
    """Distribution Focal Loss over ``reg_max`` bins for box-side distances in bin units.

    Each box side's distance (from the anchor point, divided by the level stride) is predicted as
    a distribution over the integer bins ``0, 1, …, reg_max − 1`` (so ``reg_max = 16`` covers
    distances 0–15, as in YOLOv8). For a target ``t`` between bins ``i = ⌊t⌋`` and ``i + 1`` the
    loss is ``−((i + 1 − t) log p_i + (t − i) log p_{i+1})`` (eq. 6 of the paper).

    Shapes: ``logits`` ``(N, 4, reg_max)`` with ``target`` ``(N, 4)`` gives a per-box loss
    ``(N,)`` (mean of the four sides, so a per-box ``weight`` ``(N,)`` applies); ``logits``
    ``(M, reg_max)`` with ``target`` ``(M,)`` gives a per-row loss ``(M,)``.

    Targets below 0 are clamped to 0; targets above ``reg_max − 1 − clamp_eps`` (at or beyond the
    last bin, which would need bin ``reg_max``) are clamped to it and counted, never an index
    error. ``num_clamped`` is the running count of such upper-clamped targets since construction
    (or :meth:`reset_stats`), ``clamped_fraction`` the fraction in the last call; ``num_negative``
    counts targets clamped up to 0. The counts stay on the device until read (no sync per step).
    A row (box, or row of the 2-D form) with a NaN/inf logit or target raises in debug mode,
    else gets a NaN loss and is counted in ``nonfinite_count`` (:mod:`detlab.losses.nonfinite`).

    Args:
        reg_max: number of bins (>= 2).
        clamp_eps: how far below the last bin upper targets are clamped (in (0, 1)).
    """

    def __init__(
        self,
        reg_max: int = 16,
        clamp_eps: float = 0.01,
        weight: float = 1.0,
        reduction: Reduction = "mean",
        eps: float = 1e-7,
        name: str = "dfl",
    ) -> None:
        super().__init__(weight, reduction, eps, name)
        self.reg_max = check_int("DFLoss", "reg_max", reg_max, low=2)
        self.clamp_eps = check_float("DFLoss", "clamp_eps", clamp_eps, low=0.0, high=1.0,
                                     low_open=True, high_open=True)
        self.reset_stats()

    def reset_stats(self) -> None:
        """Zero the clamping and non-finite counters."""
        self.reset_nonfinite()
        self._num_clamped: Tensor | int = 0
        self._num_negative: Tensor | int = 0
        self._last_fraction: Tensor | float = 0.0

    @property
    def num_clamped(self) -> int:
        """Targets clamped down to ``reg_max − 1 − clamp_eps`` since the last reset."""
        return int(self._num_clamped)

    @property
    def num_negative(self) -> int:
        """Negative targets clamped up to 0 since the last reset."""
        return int(self._num_negative)

    @property
    def clamped_fraction(self) -> float:
        """Fraction of the last call's targets that were clamped down."""
        return float(self._last_fraction)

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        """Loss of bin ``logits`` ``(N, 4, reg_max)`` or ``(M, reg_max)`` for distances ``target``
        ``(N, 4)`` or ``(M,)`` in bin units."""
        if logits.dim() not in (2, 3) or logits.shape[-1] != self.reg_max:
            raise ValueError(
                f"DFLoss: logits must be (N, 4, {self.reg_max}) or (M, {self.reg_max}) "
                f"(reg_max={self.reg_max}), got {tuple(logits.shape)}"
            )
        if target.shape != logits.shape[:-1]:
            raise ValueError(
                f"DFLoss: target must have shape {tuple(logits.shape[:-1])} to match logits "
                f"{tuple(logits.shape)}, got {tuple(target.shape)}"
            )
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits32 = as_fp32(logits)
            target32 = as_fp32(target).to(logits.device).detach()
            bad = self.nonfinite_rows(len(logits32), logits32, target32)
            # NaN would index bin -2**63; the row's loss is set to NaN below instead.
            target32 = torch.where(torch.isfinite(target32), target32, 0.0)
            upper = self.reg_max - 1 - self.clamp_eps
            with torch.no_grad():
                too_high = (target32 > upper).sum()
                self._num_clamped = self._num_clamped + too_high
                self._num_negative = self._num_negative + (target32 < 0).sum()
                self._last_fraction = too_high / max(target32.numel(), 1)
            t = target32.clamp(min=0.0, max=upper)
            left = t.floor().long()  # in [0, reg_max - 2] after the clamp
            w_right = t - left
            flat = logits32.reshape(-1, self.reg_max)
            ce_left = F.cross_entropy(flat, left.reshape(-1), reduction="none")
            ce_right = F.cross_entropy(flat, (left + 1).reshape(-1), reduction="none")
            loss = (ce_left * (1 - w_right.reshape(-1)) + ce_right * w_right.reshape(-1)).reshape(
                t.shape
            )
            if loss.dim() == 2:  # (N, 4) sides → per box
                loss = loss.mean(dim=1)
            return self.reduce(nan_where(bad, loss), weight, avg_factor)

    def extra_repr(self) -> str:
        return f"reg_max={self.reg_max}, clamp_eps={self.clamp_eps}, " + super().extra_repr()
