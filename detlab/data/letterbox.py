"""Letterbox: resize keeping the aspect ratio, then pad, with an exact map back to the original.

Coordinates are continuous pixel-edge coordinates (a box ``[0, 0, W, H]`` covers the whole
image), the convention of ``cv2.resize`` and ``F.interpolate(align_corners=False)``. Resizing an
image of ``(h, w)`` to ``(new_h, new_w)`` maps ``x -> x * new_w / w`` exactly, so the per-axis
scale is ``(new_h / h, new_w / w)`` after rounding the new size, not the nominal factor. With
``pad = (top, left)`` the forward map is ``input = orig * scale + pad`` and
:func:`detlab.ops.coords.unletterbox_boxes` (re-exported here) inverts it.

The datasets call :func:`resize_keep_ratio` and :func:`pad_to_stride` themselves (with the
recipe's augmentations in between) and record ``scale``/``pad`` in ``meta``; there is no
``LetterBox`` entry in ``TRANSFORMS`` because an albumentations transform cannot hand those
numbers back to the sample's meta.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from ..errors import ConfigError
from ..ops.coords import unletterbox_boxes  # re-export: the inverse lives in ops.coords

__all__ = ["letterbox", "resize_keep_ratio", "pad_to_stride", "unletterbox_boxes", "fit_size"]

Size = int | tuple[int, int] | None


def fit_size(
    height: int, width: int, size: Size, scale_up: bool = True
) -> tuple[int, int]:
    """The ``(new_h, new_w)`` that fits ``(height, width)`` inside ``size`` keeping the ratio.

    ``size`` is an int (the long side fits in ``size x size``), ``(h, w)`` or ``None`` (keep the
    size). With ``scale_up=False`` an image smaller than ``size`` keeps its size.
    """
    if size is None:
        return height, width
    target_h, target_w = _pair(size)
    ratio = min(target_h / height, target_w / width)
    if not scale_up:
        ratio = min(ratio, 1.0)
    return max(1, int(round(height * ratio))), max(1, int(round(width * ratio)))


def resize_keep_ratio(
    image: np.ndarray, boxes: np.ndarray | None, size: Size, scale_up: bool = True
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float]]:
    """Resize ``image`` (H, W[, C]) to fit ``size`` (see :func:`fit_size`).

    Returns ``(image, boxes, (sy, sx))`` with ``boxes`` (N, 4) xyxy px scaled by the exact
    per-axis factors. Downscaling uses ``INTER_AREA`` (no aliasing of tiny objects), upscaling
    ``INTER_LINEAR``; both keep the pixel-edge mapping above.
    """
    h, w = image.shape[:2]
    new_h, new_w = fit_size(h, w, size, scale_up)
    sy, sx = new_h / h, new_w / w
    if (new_h, new_w) != (h, w):
        interp = cv2.INTER_AREA if new_h * new_w < h * w else cv2.INTER_LINEAR
        resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
        if image.ndim == 3 and resized.ndim == 2:  # cv2 drops a trailing channel axis of 1
            resized = resized[..., None]
        image = resized
    if boxes is not None:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * np.array(
            [sx, sy, sx, sy], np.float32
        )
    return image, boxes, (sy, sx)


def pad_to_stride(
    image: np.ndarray,
    boxes: np.ndarray | None,
    stride: int | None = 32,
    pad_value: float = 114,
    size: Size = None,
    center: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """Pad ``image`` evenly on both sides (``center=False``: bottom/right only); boxes shift by
    ``(left, top)``.

    With ``stride`` each side grows to the next multiple of ``stride`` (rectangular letterbox,
    least padding); with ``stride=None`` the image is padded to exactly ``size``. Returns
    ``(image, boxes, (top, left))``.
    """
    h, w = image.shape[:2]
    if stride is not None:
        if stride < 1:
            raise ConfigError(f"stride={stride!r}: expected a positive int or None")
        out_h, out_w = math.ceil(h / stride) * stride, math.ceil(w / stride) * stride
    elif size is not None:
        out_h, out_w = (max(a, b) for a, b in zip(_pair(size), (h, w)))
    else:
        out_h, out_w = h, w
    top, left = ((out_h - h) // 2, (out_w - w) // 2) if center else (0, 0)
    if (out_h, out_w) != (h, w):
        channels = image.shape[2] if image.ndim == 3 else 1
        padded = cv2.copyMakeBorder(
            image, top, out_h - h - top, left, out_w - w - left, cv2.BORDER_CONSTANT,
            value=[pad_value] * min(channels, 4),
        )
        if image.ndim == 3 and padded.ndim == 2:  # cv2 drops a trailing channel axis of 1
            padded = padded[..., None]
        image = padded
    if boxes is not None:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) + np.array(
            [left, top, left, top], np.float32
        )
    return image, boxes, (top, left)


def letterbox(
    image: np.ndarray,
    boxes: np.ndarray | None,
    size: Size,
    stride: int | None = 32,
    pad_value: float = 114,
    scale_up: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float], tuple[int, int]]:
    """Resize ``image`` (H, W[, C]) to fit ``size`` keeping the aspect ratio, then pad.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array (any dtype cv2 resizes).
        boxes: ``(N, 4)`` xyxy pixels in ``image``, or ``None``.
        size: int (fit in ``size x size``), ``(h, w)``, or ``None`` (no resize, pad only).
        stride: pad to the next multiple of ``stride`` (least padding); ``None`` pads to
            exactly ``size``.
        pad_value: fill value of the padding (114 = YOLO gray).
        scale_up: if ``False``, images smaller than ``size`` are not enlarged.

    Returns:
        ``(image, boxes, scale, pad)`` with ``scale = (sy, sx)``, ``pad = (top, left)`` and
        ``boxes_out = boxes * scale + pad`` (x uses sx/left, y uses sy/top).
    """
    image, boxes, scale = resize_keep_ratio(image, boxes, size, scale_up)
    image, boxes, pad = pad_to_stride(image, boxes, stride, pad_value, size)
    return image, boxes, scale, pad


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, bool):
        raise ConfigError(f"size={size!r}: expected an int or (h, w)")
    if isinstance(size, int):
        pair = (size, size)
    else:
        try:
            pair = tuple(int(v) for v in size)
        except (TypeError, ValueError):
            raise ConfigError(f"size={size!r}: expected an int or (h, w)") from None
    if len(pair) != 2 or min(pair) < 1:
        raise ConfigError(f"size={size!r}: expected a positive int or (h, w)")
    return pair[0], pair[1]
