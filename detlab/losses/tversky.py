"""Tversky loss (Salehi et al., arXiv:1706.05721) and Focal Tversky loss (Abraham & Khan,
arXiv:1810.07842)."""

from __future__ import annotations

from torch import Tensor

from ..registry import LOSSES
from .base import check_float, power_finite_grad
from .seg_common import Activation, EmptyTarget, OverlapLoss

__all__ = ["TverskyLoss", "FocalTverskyLoss", "tversky_index"]

def tversky_index(
    tp: Tensor, fp: Tensor, fn: Tensor, alpha: float, beta: float, smooth: float
) -> Tensor:
    """``(TP + smooth) / (TP + alpha FP + beta FN + smooth)`` elementwise; alpha weighs false
    positives, beta false negatives (alpha = beta = 0.5 is Dice up to smoothing)."""
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


@LOSSES.register
class TverskyLoss(OverlapLoss):
    """``1 - TI`` per class (see :func:`tversky_index`), averaged over classes (and images when
    ``batch=False``). Matches ``monai.losses.TverskyLoss(sigmoid=True)`` with the same
    ``alpha``/``beta``/``batch`` and ``smooth_nr = smooth_dr = smooth`` when every image has
    ground truth, or always with ``empty="pooled"``.

    ``activation``, ``batch``, ``smooth``, ``include_background``, ``weight``, ``name`` and
    ``empty`` are those of :class:`OverlapLoss`.

    Args:
        alpha: weight of false positives (>= 0).
        beta: weight of false negatives (>= 0); beta > alpha favours recall, as wanted for small
            lesions.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.5,
        activation: Activation = "sigmoid",
        batch: bool = True,
        smooth: float = 1e-5,
        include_background: bool = True,
        weight: float = 1.0,
        name: str | None = None,
        empty: EmptyTarget = "per_image",
    ) -> None:
        super().__init__(activation, batch, smooth, include_background, weight, name, empty)
        owner = type(self).__name__
        self.alpha = check_float(owner, "alpha", alpha, low=0.0)
        self.beta = check_float(owner, "beta", beta, low=0.0)

    def per_class(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        return 1.0 - tversky_index(tp, fp, fn, self.alpha, self.beta, self.smooth)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, beta={self.beta:g}, {super().extra_repr()}"


@LOSSES.register
class FocalTverskyLoss(TverskyLoss):
    """``(1 - TI) ** gamma`` per class, averaged over classes (and images when ``batch=False``).

    ``gamma`` is the exponent itself, i.e. the paper's ``1/gamma``, and ``alpha`` weighs false
    positives as in MONAI (the paper's alpha weighs false negatives): the paper's best setting
    (alpha=0.7 on FN, gamma=4/3) is ``alpha=0.3, beta=0.7, gamma=0.75`` here, the defaults.
    With gamma < 1 the gradient of ``(1 - TI) ** gamma`` is infinite at TI = 1 (a perfect
    prediction); the power is made linear on ``1 - TI < 1e-6`` (:func:`power_finite_grad`) so
    the loss is still 0 there but its gradient is finite instead of NaN.

    The other arguments are those of :class:`TverskyLoss`; with ``empty="per_image"`` an empty
    (image, class) costs its false-positive fraction ``** gamma``.

    Args:
        gamma: exponent (> 0); 1 gives :class:`TverskyLoss`.
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 0.75,
        activation: Activation = "sigmoid",
        batch: bool = True,
        smooth: float = 1e-5,
        include_background: bool = True,
        weight: float = 1.0,
        name: str | None = None,
        empty: EmptyTarget = "per_image",
    ) -> None:
        super().__init__(
            alpha, beta, activation, batch, smooth, include_background, weight, name, empty
        )
        self.gamma = check_float(type(self).__name__, "gamma", gamma, low=0.0, low_open=True)

    def per_class(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        distance = 1.0 - tversky_index(tp, fp, fn, self.alpha, self.beta, self.smooth)
        # clamp: rounding can put TI a hair above 1, and a negative base ** 0.75 is NaN
        return power_finite_grad(distance.clamp_min(0.0), self.gamma)

    def empty_loss(self, fp_fraction: Tensor) -> Tensor:
        """The false-positive fraction raised to ``gamma``, like the overlap distance."""
        return power_finite_grad(fp_fraction.clamp(0.0, 1.0), self.gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma:g}, {super().extra_repr()}"
