"""``Model``: the one meta-architecture, backbone → optional neck → head."""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import BACKBONES, HEADS, MODELS, NECKS
from ..structures import Batch, Prediction

__all__ = ["Model"]


@MODELS.register
class Model(nn.Module):
    """Backbone (+ neck) + head, wired by channel and stride metadata.

    The neck is built with ``in_channels``/``strides`` of the backbone, the head with those of
    the neck (or of the backbone when there is no neck), unless the config sets them.

    Images whose height or width is not a multiple of the largest backbone stride are padded
    bottom/right with zeros before the backbone; heads crop their outputs back to
    ``batch.images`` size, so any input size is accepted.

    Args:
        backbone: config dict or module exposing ``channels`` and ``strides``.
        head: config dict or :class:`~detlab.models.heads.base.Head`.
        neck: optional config dict or module exposing ``channels`` and ``strides``.
    """

    def __init__(self, backbone: Any, head: Any, neck: Any = None) -> None:
        super().__init__()
        self.backbone = BACKBONES.build(backbone, key="model.backbone")
        channels, strides = list(self.backbone.channels), list(self.backbone.strides)
        self.neck = None
        if neck is not None:
            self.neck = NECKS.build(neck, key="model.neck", in_channels=channels, strides=strides)
            channels, strides = list(self.neck.channels), list(self.neck.strides)
        self.head = HEADS.build(head, key="model.head", in_channels=channels, strides=strides)
        self.size_divisor = int(max(self.backbone.strides))
        self._register_load_state_dict_pre_hook(self._remap_old_keys)

    def _remap_old_keys(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # Weights that moved between components (DBFPN: model.head.neck.* -> model.neck.*):
        # the component renames old checkpoints' keys before they are matched.
        for part in (self.neck, self.head):
            remap = getattr(part, "remap_old_keys", None)
            if callable(remap):
                remap(state_dict, prefix)

    def features(self, images: Tensor) -> list[Tensor]:
        """Feature maps ``(B, C_i, H_i, W_i)`` after backbone and neck (input padded if needed)."""
        h, w = images.shape[-2:]
        d = self.size_divisor
        ph, pw = math.ceil(h / d) * d - h, math.ceil(w / d) * d - w
        if ph or pw:
            images = F.pad(images, (0, pw, 0, ph))
        feats = self.backbone(images)
        if self.neck is not None:
            feats = self.neck(feats)
        return feats

    def forward(self, images: Tensor) -> Any:
        """Raw head outputs for ``images`` ``(B, C, H, W)``."""
        return self.head(self.features(images))

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """Loss terms (``loss_*``) for a batch."""
        return self.head.loss(self.features(batch.images), batch)

    def predict(self, batch: Batch, stage: str = "test") -> list[Prediction]:
        """One :class:`Prediction` per image, in original image coordinates."""
        return self.head.predict(self.features(batch.images), batch, stage=stage)
