"""Focal loss (Lin et al., RetinaNet, arXiv:1708.02002) for dense per-pixel logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..registry import LOSSES
from .base import Loss, check_choice, check_float, power_finite_grad
from .seg_common import Activation, check_channels, prepare_target, prepare_valid

__all__ = ["FocalLoss"]

@LOSSES.register
class FocalLoss(Loss):
    """``alpha_t (1 - p_t) ** gamma * CE`` averaged over elements, times ``weight``.

    ``activation="sigmoid"``: per channel binary focal loss, the same values as
    ``torchvision.ops.sigmoid_focal_loss(reduction="mean")`` (mean over B*C*pixels);
    ``alpha_t`` is ``alpha`` on positives and ``1 - alpha`` on negatives, ``alpha=None`` turns
    it off. ``activation="softmax"``: multi-class focal loss ``-(1 - p_t) ** gamma log p_t``
    averaged over pixels; ``alpha`` must then be None (it is a positive/negative balance).
    Pixels where ``valid`` is False count in neither sum nor mean. Computed in fp32.

    Args:
        alpha: weight of positives in [0, 1], or None.
        gamma: focusing exponent (>= 0); 0 gives (alpha-balanced) cross-entropy.
        activation: ``"sigmoid"`` or ``"softmax"``.
        weight: factor on the result (see :class:`~detlab.losses.base.Loss`).
        name: key suffix, reported as ``loss_<name>`` (see :class:`~detlab.losses.base.Loss`).
    """

    def __init__(
        self,
        alpha: float | None = 0.25,
        gamma: float = 2.0,
        activation: Activation = "sigmoid",
        weight: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(weight=weight, name=name)
        owner = type(self).__name__
        self.activation = check_choice(owner, "activation", activation, ("sigmoid", "softmax"))
        if alpha is not None:
            alpha = check_float(owner, "alpha", alpha, low=0.0, high=1.0)
            if activation == "softmax":
                raise ConfigError(
                    f"{owner}: alpha must be None with activation='softmax' (alpha balances "
                    f"positives against negatives of a sigmoid), got {alpha!r}"
                )
        self.alpha = alpha
        self.gamma = check_float(owner, "gamma", gamma, low=0.0)

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        """Scalar loss for ``logits`` ``(B, C, *spatial)`` and a target as in
        :func:`~detlab.losses.seg_common.prepare_target`; ``valid`` ``(B[, 1], *spatial)``."""
        logits = logits.float()
        mask = prepare_valid(logits, valid)
        target = prepare_target(logits, target, mask)
        if self.activation == "softmax":
            check_channels("FocalLoss", logits, "activation='softmax'")
            log_probs = logits.log_softmax(dim=1)
            ce = -target * log_probs
            p_t = log_probs.exp()  # only where target = 1 matters: ce is 0 elsewhere
            terms_per_pixel = 1  # the channel sum of a one-hot CE is one term
        else:
            ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            probs = logits.sigmoid()
            p_t = probs * target + (1.0 - probs) * (1.0 - target)
            terms_per_pixel = logits.shape[1]
        # power_finite_grad: for gamma < 1, (1 - p_t) ** gamma has an infinite slope at p_t = 1
        loss = ce * power_finite_grad((1.0 - p_t).clamp_min(0.0), self.gamma)
        if self.alpha is not None:
            loss = loss * (self.alpha * target + (1.0 - self.alpha) * (1.0 - target))
        if mask is None:
            pixels = loss.numel() / logits.shape[1]
        else:
            loss = loss * mask
            pixels = mask.sum().clamp_min(1.0)
        return loss.sum() / (pixels * terms_per_pixel) * self.weight

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, alpha={self.alpha}, gamma={self.gamma:g}, "
            f"activation={self.activation!r}"
        )
