"""IoU-family box regression losses: IoU, GIoU, DIoU, CIoU, Inner-IoU and Wise-IoU v3.

All take aligned ``pred_boxes`` and ``target_boxes`` ``(N, 4)`` xyxy (any consistent unit,
usually absolute pixels), compute in float32 even under autocast, and are finite in value and
gradient for degenerate boxes (zero width or height, points, identical or far-apart boxes) and for
``N = 0`` (0 with a graph). A NaN/inf box is not degenerate but meaningless: it raises in debug
mode and otherwise makes its row's loss NaN and is counted in ``nonfinite_count``
(:mod:`detlab.losses.nonfinite`). The per-item loss is ``(N,)``; see
:class:`~detlab.losses._weighted.WeightedLoss` for ``weight``/``reduction``/``avg_factor``.

References: GIoU — Rezatofighi et al. 2019 (arXiv:1902.09630); DIoU/CIoU — Zheng et al. 2020
(arXiv:1911.08287); Inner-IoU — Zhang et al. 2023 (arXiv:2311.02877); Wise-IoU — Tong et al.
2023 (arXiv:2301.10051).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..checks import check_float
from ..errors import ConfigError
from ..ops.boxes import IOU_KINDS, IoUKind, aligned_iou_terms, iou_from_terms
from ..registry import LOSSES
from ._weighted import Reduction, WeightedLoss, as_fp32
from .nonfinite import NonFiniteRows, nan_where

__all__ = [
    "IoULoss",
    "GIoULoss",
    "DIoULoss",
    "CIoULoss",
    "InnerIoULoss",
    "WIoULoss",
    "inner_boxes",
]


def _check_pair(loss: WeightedLoss, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if pred.dim() != 2 or pred.shape[-1] != 4 or pred.shape != target.shape:
        raise ValueError(
            f"{type(loss).__name__}: pred_boxes and target_boxes must both be (N, 4), got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    return as_fp32(pred), as_fp32(target).to(pred.device)


class _IoUFamilyLoss(NonFiniteRows, WeightedLoss):
    """``1 − IoU_kind(pred, target)`` per box; subclasses fix ``kind``."""

    kind: IoUKind = "iou"

    def __init__(
        self,
        weight: float = 1.0,
        reduction: Reduction = "mean",
        eps: float = 1e-7,
        name: str | None = None,
    ) -> None:
        super().__init__(weight, reduction, eps, name or self.kind)

    def per_box(self, pred: Tensor, target: Tensor) -> Tensor:
        """Unreduced, unweighted loss ``(N,)`` for float32 ``(N, 4)`` boxes."""
        return 1.0 - iou_from_terms(aligned_iou_terms(pred, target, self.eps), self.kind, self.eps)

    def forward(
        self,
        pred_boxes: Tensor,
        target_boxes: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        """Loss of ``pred_boxes`` ``(N, 4)`` against ``target_boxes`` ``(N, 4)``, both xyxy."""
        with torch.autocast(device_type=pred_boxes.device.type, enabled=False):
            pred, target = _check_pair(self, pred_boxes, target_boxes)
            bad = self.nonfinite_rows(len(pred), pred, target)
            return self.reduce(nan_where(bad, self.per_box(pred, target)), weight, avg_factor)


@LOSSES.register
class IoULoss(_IoUFamilyLoss):
    """IoU loss ``1 − IoU`` for aligned xyxy boxes ``(N, 4)``."""

    kind: IoUKind = "iou"


@LOSSES.register
class GIoULoss(_IoUFamilyLoss):
    """Generalized IoU loss ``1 − GIoU`` (Rezatofighi et al. 2019, arXiv:1902.09630)."""

    kind: IoUKind = "giou"


@LOSSES.register
class DIoULoss(_IoUFamilyLoss):
    """Distance IoU loss ``1 − IoU + ρ²/c²`` (Zheng et al. 2020, arXiv:1911.08287)."""

    kind: IoUKind = "diou"


@LOSSES.register
class CIoULoss(_IoUFamilyLoss):
    """Complete IoU loss ``1 − IoU + ρ²/c² + αv`` (Zheng et al. 2020, arXiv:1911.08287)."""

    kind: IoUKind = "ciou"


def inner_boxes(boxes: Tensor, ratio: float) -> Tensor:
    """Inner-IoU's auxiliary boxes: xyxy ``(N, 4)`` boxes scaled by ``ratio`` about the centres."""
    center = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = (boxes[..., 2:] - boxes[..., :2]) * (ratio / 2)
    return torch.cat([center - half, center + half], dim=-1)


@LOSSES.register
class InnerIoULoss(_IoUFamilyLoss):
    """Inner-IoU loss (Zhang et al. 2023, arXiv:2311.02877): ``L_base + IoU − IoU_inner``.

    ``IoU_inner`` is the IoU of auxiliary boxes scaled by ``ratio`` about the centres of the
    prediction and the target. ``ratio < 1`` speeds up regression of high-IoU pairs, ``ratio > 1``
    helps low-IoU pairs (the paper uses 0.5–1.5); ``ratio = 1`` gives back the ``base`` loss.

    Args:
        ratio: scale of the auxiliary boxes (> 0).
        base: the IoU loss it extends: ``"iou"``, ``"giou"``, ``"diou"`` or ``"ciou"``.
    """

    def __init__(
        self,
        ratio: float = 0.75,
        base: IoUKind = "ciou",
        weight: float = 1.0,
        reduction: Reduction = "mean",
        eps: float = 1e-7,
        name: str | None = None,
    ) -> None:
        if base not in IOU_KINDS:
            raise ConfigError(f"InnerIoULoss: base must be one of {IOU_KINDS}, got {base!r}")
        check_float("InnerIoULoss", "ratio", ratio, low=0.0, low_open=True)
        super().__init__(weight, reduction, eps, name or f"inner_{base}")
        self.kind = base
        self.ratio = float(ratio)

    def per_box(self, pred: Tensor, target: Tensor) -> Tensor:
        terms = aligned_iou_terms(pred, target, self.eps)
        base_loss = 1.0 - iou_from_terms(terms, self.kind, self.eps)
        inner = aligned_iou_terms(
            inner_boxes(pred, self.ratio), inner_boxes(target, self.ratio), self.eps
        )
        return base_loss + terms.iou - inner.iou

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, base={self.kind!r}, " + super().extra_repr()


@LOSSES.register
class WIoULoss(NonFiniteRows, WeightedLoss):
    """Wise-IoU v3 (Tong et al. 2023, arXiv:2301.10051): IoU loss with dynamic focusing.

    Per box: ``L_v1 = exp(ρ² / c²*) · L_IoU`` with ``c²*`` the (detached) squared diagonal of the
    enclosing box, and ``L_v3 = r · L_v1`` with the non-monotonic focusing coefficient
    ``r = β / (δ · α^(β − δ))`` of the outlier degree ``β = L_IoU* / mean(L_IoU)`` (``*``:
    detached). ``mean(L_IoU)`` is a running mean kept in the buffer ``iou_loss_mean`` (so it is in
    ``state_dict`` and checkpoints), updated in training mode only, before use:
    ``mean ← (1 − momentum) · mean + momentum · batch_mean(L_IoU)``. It starts at 1.0.

    Args:
        alpha, delta: focusing parameters α and δ (the paper's best: 1.9 and 3).
        momentum: running-mean momentum in (0, 1]. The paper picks ``1 − 0.05^(1/(t·n))`` for
            ``t`` epochs of ``n`` batches, so that the mean forgets its start within ``t`` epochs.
    """

    def __init__(
        self,
        alpha: float = 1.9,
        delta: float = 3.0,
        momentum: float = 0.01,
        weight: float = 1.0,
        reduction: Reduction = "mean",
        eps: float = 1e-7,
        name: str = "wiou",
    ) -> None:
        super().__init__(weight, reduction, eps, name)
        self.alpha = check_float("WIoULoss", "alpha", alpha, low=0.0, low_open=True)
        self.delta = check_float("WIoULoss", "delta", delta, low=0.0, low_open=True)
        self.momentum = check_float("WIoULoss", "momentum", momentum, low=0.0, high=1.0,
                                    low_open=True)
        self.register_buffer("iou_loss_mean", torch.tensor(1.0))

    def forward(
        self,
        pred_boxes: Tensor,
        target_boxes: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        """Loss of ``pred_boxes`` ``(N, 4)`` against ``target_boxes`` ``(N, 4)``, both xyxy."""
        with torch.autocast(device_type=pred_boxes.device.type, enabled=False):
            pred, target = _check_pair(self, pred_boxes, target_boxes)
            bad = self.nonfinite_rows(len(pred), pred, target)
            terms = aligned_iou_terms(pred, target, self.eps)
            iou_loss = 1.0 - terms.iou
            if self.training and iou_loss.numel() > 0:
                with torch.no_grad():
                    # Finite rows only: one NaN box would poison the running mean for good.
                    good = (~bad).to(iou_loss)
                    n_good = good.sum()
                    batch_mean = (iou_loss.detach().nan_to_num() * good).sum() / n_good.clamp(min=1)
                    momentum = self.momentum * (n_good > 0).to(iou_loss)
                    self.iou_loss_mean.lerp_(batch_mean.to(self.iou_loss_mean),
                                             momentum.to(self.iou_loss_mean))
            diag2 = terms.enclose_diag2.detach()
            ok = diag2 > self.eps
            dist = torch.where(ok, terms.center_dist2 / torch.where(ok, diag2, 1.0), 0.0)
            loss_v1 = torch.exp(dist) * iou_loss
            with torch.no_grad():
                mean = self.iou_loss_mean.to(iou_loss).clamp(min=self.eps)
                beta = iou_loss / mean
                # β / (δ α^(β−δ)); β is bounded by 1/eps, α^(β−δ) may overflow to inf → r = 0.
                focus = beta / (self.delta * torch.pow(self.alpha, beta - self.delta))
            return self.reduce(nan_where(bad, focus * loss_v1), weight, avg_factor)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, delta={self.delta}, momentum={self.momentum}, "
            + super().extra_repr()
        )
