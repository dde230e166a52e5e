"""The two data contracts every part of detlab speaks: :class:`Batch` and :class:`Prediction`.

Coordinates are absolute pixels, boxes are ``xyxy`` (x1, y1, x2, y2), polygons are ``(K, 2)``
arrays of (x, y). A :class:`Batch` is in *network input* coordinates (after resize and padding);
a :class:`Prediction` is in *original image* coordinates (heads map back with ``meta``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Batch", "Prediction", "to_device"]


def to_device(obj: Any, device: torch.device | str) -> Any:
    """Move every tensor inside nested dicts/lists/tuples to ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_device(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_device(v, device) for v in obj)
    return obj


@dataclass
class Batch:
    """What :func:`detlab.data.collate.collate` produces and every head consumes.

    Attributes:
        images: float tensor ``(B, C, H, W)``, padded to a common size (zeros bottom/right).
        targets: one dict per image with any of
            ``boxes`` ``(N, 4)`` float32 xyxy pixels in input coordinates,
            ``labels`` ``(N,)`` int64 in ``[0, num_classes)``,
            ``polygons`` list of ``(K, 2)`` float arrays,
            ``ignore`` ``(N,)`` bool,
            ``mask`` ``(C, H, W)`` or ``(H, W)`` tensor at input resolution.
            Zero boxes is a valid target.
        meta: one dict per image with at least ``image_id``, ``path``, ``orig_size`` (h, w),
            ``scale``, ``pad`` and ``input_size``, with ONE convention (continuous pixel-edge
            coordinates; :class:`~detlab.data.geometry.InputGeometry` writes them,
            :mod:`detlab.ops.coords` inverts them):

            * ``scale`` ``(sy, sx)``: ``input_size / orig_size`` per axis, exactly;
            * ``pad`` ``(top, left)``: rows / columns of padding BEFORE the image content
              (a centred letterbox pads both sides; padding after the content, bottom/right,
              is not recorded: it is whatever the batch adds up to ``images.shape``);
            * ``input_size`` ``(h, w)``: the resized image content WITHOUT any padding; the
              content occupies rows ``[top, top + h)`` and columns ``[left, left + w)`` of
              ``images``;
            * ``input = orig * scale + pad`` (x with sx / left, y with sy / top).

            (Before this contract was written down, the U-Net's content crop read
            ``input_size`` as including ``pad`` (``h = input_size[0] - top``) while the
            detection datasets wrote the un-padded size.)
    """

    images: Tensor
    targets: list[dict[str, Any]] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor on ``device``."""
        return Batch(
            images=self.images.to(device, non_blocking=True),
            targets=to_device(self.targets, device),
            meta=self.meta,
        )


@dataclass
class Prediction:
    """One image's prediction, in original image coordinates.

    Detection: ``boxes`` ``(N, 4)`` xyxy pixels, ``scores`` ``(N,)``, ``labels`` ``(N,)`` int64.
    Text: ``polygons`` list of ``(K, 2)`` float arrays (x, y pixels), ``scores`` ``(N,)``.
    Segmentation: ``probs`` ``(C, H, W)`` float in [0, 1], ``mask`` ``(C, H, W)`` bool.
    ``extras`` holds optional head-specific outputs (e.g. attention maps).
    """

    boxes: Tensor | None = None
    scores: Tensor | None = None
    labels: Tensor | None = None
    polygons: list[np.ndarray] | None = None
    probs: Tensor | None = None
    mask: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Prediction:
        """A copy with every tensor on ``device``."""
        return Prediction(
            boxes=to_device(self.boxes, device),
            scores=to_device(self.scores, device),
            labels=to_device(self.labels, device),
            polygons=self.polygons,
            probs=to_device(self.probs, device),
            mask=to_device(self.mask, device),
            extras=to_device(self.extras, device),
        )
