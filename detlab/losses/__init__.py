"""Losses shared by the heads. Every loss takes ``weight`` and ``name`` (its ``loss_<name>``
key); segmentation losses take ``forward(logits, target, valid=None)``."""

from .base import Loss, default_loss_name
from .combined import CombinedLoss
from .dice import DiceLoss
from .focal import FocalLoss
from .tversky import FocalTverskyLoss, TverskyLoss, tversky_index

__all__ = [
    "Loss",
    "default_loss_name",
    "CombinedLoss",
    "DiceLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "TverskyLoss",
    "tversky_index",
]
