"""Network-input coordinates → original image pixels: the one inverse of the input geometry.

Every head and evaluator maps boxes, polygons and dense maps back with these functions, from
the :class:`~detlab.structures.Batch` ``meta`` of the image (``scale`` (sy, sx), ``pad``
(top, left), ``input_size`` (h, w) of the un-padded content, ``orig_size`` (h, w)), with the
forward map ``input = orig * scale + pad`` (:mod:`detlab.data.geometry`).

Coordinates are continuous pixel edges: pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``
and a box ``[0, 0, w, h]`` covers a whole ``h x w`` image. Clipping therefore uses
``[0, w] x [0, h]`` for boxes and polygons alike (the one clipping convention of detlab).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "unletterbox_boxes",
    "content_region",
    "clip_boxes",
    "boxes_to_original",
    "polygons_to_original",
    "crop_to_content",
    "maps_to_original",
]


def unletterbox_boxes(boxes: Any, scale: Sequence[float], pad: Sequence[float]) -> Any:
    """Map ``(N, 4)`` xyxy boxes from network input back to original pixels, unclipped.

    ``orig = (input - pad) / scale`` with ``scale = (sy, sx)`` and ``pad = (top, left)``.
    Works on numpy arrays and torch tensors alike (same type, dtype and device back).
    """
    sy, sx = (float(v) for v in scale)
    top, left = (float(v) for v in pad)
    offset = [left, top, left, top]
    factor = [sx, sy, sx, sy]
    if isinstance(boxes, Tensor):
        return (boxes - boxes.new_tensor(offset)) / boxes.new_tensor(factor)
    arr = np.asarray(boxes)
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
    return ((arr - np.array(offset, dtype)) / np.array(factor, dtype)).astype(dtype)


def content_region(
    meta: Mapping[str, Any], image_size: Sequence[int]
) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the image content inside the network input.

    From ``meta`` ``pad`` (top, left; default 0) and ``input_size`` (h, w of the content; by
    default what is left of ``image_size`` (the padded batch size) after ``pad``), limited to
    ``image_size``. Fractional values (multi-scale batches) are rounded.
    """
    full_h, full_w = (int(v) for v in image_size)
    top, left = (int(round(float(v))) for v in meta.get("pad", (0, 0)))
    top, left = min(max(top, 0), full_h - 1), min(max(left, 0), full_w - 1)
    if meta.get("input_size") is not None:
        h, w = (int(round(float(v))) for v in meta["input_size"])
    else:
        h, w = full_h - top, full_w - left
    h, w = min(h, full_h - top), min(w, full_w - left)
    return top, left, max(1, h), max(1, w)


def clip_boxes(boxes: Any, size: Sequence[float]) -> Any:
    """Clip ``(N, 4)`` xyxy ``boxes`` (tensor or array) to ``[0, w] x [0, h]``
    (``size = (h, w)``)."""
    h, w = (float(v) for v in size)
    if isinstance(boxes, Tensor):
        return torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                            boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], dim=1)
    out = np.array(boxes, copy=True).reshape(-1, 4)
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out


def _orig_size(meta: Mapping[str, Any]) -> tuple[int, int] | None:
    size = meta.get("orig_size")
    return None if size is None else (int(size[0]), int(size[1]))


def boxes_to_original(boxes: Any, meta: Mapping[str, Any]) -> Any:
    """xyxy input-pixel ``boxes`` ``(N, 4)`` → original pixels, clipped to ``orig_size``
    (``[0, w] x [0, h]``; unclipped when ``meta`` has no ``orig_size``)."""
    boxes = unletterbox_boxes(boxes, meta.get("scale", (1.0, 1.0)), meta.get("pad", (0, 0)))
    size = _orig_size(meta)
    return boxes if size is None else clip_boxes(boxes, size)


def polygons_to_original(
    polygons: Sequence[Any], meta: Mapping[str, Any], pad: Sequence[float] | None = None,
    dtype: Any = np.float32,
) -> list[np.ndarray]:
    """Input-pixel polygons (each ``(K, 2)`` x, y) → original pixels (``dtype``), clipped to
    ``[0, w] x [0, h]`` of ``orig_size`` when known. ``pad`` overrides ``meta["pad"]`` (a
    caller whose coordinates start at the content corner passes ``(0, 0)``)."""
    sy, sx = (float(v) for v in meta.get("scale", (1.0, 1.0)))
    top, left = (float(v) for v in (meta.get("pad", (0, 0)) if pad is None else pad))
    size = _orig_size(meta)
    out = []
    for poly in polygons:
        q = np.asarray(poly, dtype=np.float64).reshape(-1, 2).copy()
        q[:, 0] = (q[:, 0] - left) / sx
        q[:, 1] = (q[:, 1] - top) / sy
        if size is not None:
            np.clip(q[:, 0], 0, size[1], out=q[:, 0])
            np.clip(q[:, 1], 0, size[0], out=q[:, 1])
        out.append(q.astype(dtype))
    return out


def crop_to_content(maps: Tensor, meta: Mapping[str, Any]) -> Tensor:
    """``maps`` ``(..., H, W)`` at network-input size cropped to the content region."""
    top, left, h, w = content_region(meta, maps.shape[-2:])
    return maps[..., top : top + h, left : left + w]


def maps_to_original(
    maps: Tensor, meta: Mapping[str, Any], mode: str = "bilinear"
) -> Tensor:
    """Dense maps ``(C, H, W)`` at network-input size → ``(C, h, w)`` at ``orig_size``.

    Crops to the content region (:func:`content_region`), then resizes with ``mode``
    (``"bilinear"``, ``align_corners=False``, for probabilities; ``"nearest-exact"`` for label
    masks, returned as float). Without ``orig_size`` the crop is returned as is.
    """
    region = crop_to_content(maps, meta)
    size = _orig_size(meta)
    if size is None or tuple(region.shape[-2:]) == size:
        return region
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(region[None].float(), size=size, mode=mode, **kwargs)[0]
