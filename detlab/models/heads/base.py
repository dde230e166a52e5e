"""The :class:`Head` contract shared by every task head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ...postprocess.staged import StagedPostprocessor
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

    Post-processing has one slot, ``postprocessor=dict(type=..., <settings>, val=dict(...),
    test=dict(...))`` (:class:`~detlab.postprocess.staged.StagedPostprocessor`), built by
    :meth:`build_postprocessor` into :attr:`postprocessor`. ``stage`` is ``"val"`` (validation
    during training) or ``"test"`` (``eval``/``predict``/``sweep``); a head only passes it on
    to its post-processor. ``detlab sweep`` varies ``postprocessor.sweepable``.
    """

    #: Constructor arguments of earlier versions and where their setting lives now: a recipe
    #: that still uses one gets a ``ConfigError`` naming the new key (checked by the registry).
    renamed_args: dict[str, str] = {"postprocess": "postprocessor"}

    #: The built post-processing slot (set by :meth:`build_postprocessor`).
    postprocessor: StagedPostprocessor

    def build_postprocessor(self, cfg: Any, default: Mapping[str, Any]) -> StagedPostprocessor:
        """Build ``cfg`` (``model.head.postprocessor``; ``None`` uses ``default``) into
        :attr:`postprocessor`, one post-processor per stage, and return it."""
        self.postprocessor = StagedPostprocessor(
            cfg, key="model.head.postprocessor", default=default, owner=type(self).__name__)
        return self.postprocessor

    def forward(self, feats: list[Tensor]) -> Any:  # pragma: no cover - abstract
        """Raw outputs for a list of feature maps ``(B, C_i, H_i, W_i)``; no targets needed."""
        raise NotImplementedError

    def compute_loss(self, outputs: Any, batch: Batch) -> dict[str, Tensor]:
        """Loss terms from raw outputs; keys start with ``loss_``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement compute_loss")

    def postprocess(self, outputs: Any, batch: Batch, stage: str = "test") -> list[Prediction]:
        """Predictions (one per image, original coordinates) from raw outputs, with the
        ``stage`` post-processor."""
        raise NotImplementedError(f"{type(self).__name__} does not implement postprocess")

    def loss(self, feats: list[Tensor], batch: Batch) -> dict[str, Tensor]:
        """Loss terms for a batch: ``compute_loss(forward(feats), batch)``."""
        return self.compute_loss(self(feats), batch)

    def predict(self, feats: list[Tensor], batch: Batch, stage: str = "test") -> list[Prediction]:
        """Predictions for a batch: ``postprocess(forward(feats), batch, stage)``."""
        return self.postprocess(self(feats), batch, stage=stage)


HEADS.base = Head
