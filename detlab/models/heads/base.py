"""The :class:`Head` contract shared by every task head."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ...registry import HEADS
from ...structures import Batch, Prediction

__all__ = ["Head"]


class Head(nn.Module):
    """Base class of every head: raw outputs, losses and predictions.

    Subclasses receive ``in_channels`` (list of ints) and ``strides`` (list of ints, pixels per
    feature cell) from the neck or backbone they are attached to.

    Single-stage heads implement :meth:`forward`, :meth:`compute_loss` and :meth:`postprocess`;
    :meth:`loss` and :meth:`predict` chain them. Two-stage heads override :meth:`loss` and
    :meth:`predict` directly (RoI sampling needs targets).

    ``stage`` is ``"val"`` (validation during training) or ``"test"`` (``eval``/``predict``);
    heads with per-stage post-processing settings use it, others ignore it.
    """

    #: Constructor arguments that only affect :meth:`postprocess` (thresholds, NMS, unclip
    #: ratios …). ``detlab sweep`` varies ``model.head.<arg>…`` keys only for these names, reusing
    #: the network outputs computed once.
    postprocess_args: tuple[str, ...] = ()

    def forward(self, feats: list[Tensor]) -> Any:  # pragma: no cover - abstract
        """Raw outputs for a list of feature maps ``(B, C_i, H_i, W_i)``; no targets needed."""
        raise NotImplementedError

    def compute_loss(self, outputs: Any, batch: Batch) -> dict[str, Tensor]:
        """Loss terms from raw outputs; keys start with ``loss_``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement compute_loss")

    def postprocess(self, outputs: Any, batch: Batch, stage: str = "test") -> list[Prediction]:
        """Predictions (one per image, original coordinates) from raw outputs."""
        raise NotImplementedError(f"{type(self).__name__} does not implement postprocess")

    def loss(self, feats: list[Tensor], batch: Batch) -> dict[str, Tensor]:
        """Loss terms for a batch: ``compute_loss(forward(feats), batch)``."""
        return self.compute_loss(self(feats), batch)

    def predict(self, feats: list[Tensor], batch: Batch, stage: str = "test") -> list[Prediction]:
        """Predictions for a batch: ``postprocess(forward(feats), batch, stage)``."""
        return self.postprocess(self(feats), batch, stage=stage)


HEADS.base = Head
