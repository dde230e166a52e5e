"""Soft Dice loss (Milletari et al., V-Net, arXiv:1606.04797), smoothed as in MONAI."""

from __future__ import annotations

from torch import Tensor

from ..registry import LOSSES
from .seg_common import OverlapLoss

__all__ = ["DiceLoss"]


@LOSSES.register
class DiceLoss(OverlapLoss):
    """``1 - (2 TP + smooth) / (2 TP + FP + FN + smooth)`` per class from soft counts, averaged
    over classes (and images when ``batch=False``); see :class:`OverlapLoss` for the arguments
    and :func:`~detlab.losses.seg_common.prepare_target` for the target formats.

    Matches ``monai.losses.DiceLoss(sigmoid=True, batch=...)`` with ``smooth_nr = smooth_dr``
    when every image has ground truth, or always with ``empty="pooled"``; on an image with empty
    ground truth the default ``empty="per_image"`` charges the false-positive fraction instead.
    """

    def per_class(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        return 1.0 - (2.0 * tp + self.smooth) / (2.0 * tp + fp + fn + self.smooth)
