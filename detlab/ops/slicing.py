"""Tile geometry of sliced (SAHI-style) inference: the tile grid over a frame and the shift of
tile coordinates to frame coordinates.

Tiles are ``(x1, y1, x2, y2)`` integer pixel windows of the ORIGINAL frame (pixel-edge
coordinates, :mod:`detlab.ops.coords`). Along each axis the tiles start every
``step = size - int(overlap * size)`` pixels; a tile that would run past the border is moved
back so it ends flush with it (the grid of SAHI's ``get_slice_bboxes``), and a frame smaller
than the tile is one tile holding the whole frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["axis_starts", "tile_grid", "shift_boxes", "blend_weights"]


def axis_starts(length: int, size: int, overlap: float) -> list[int]:
    """Start pixels of the tiles along one axis of ``length`` px (tile ``size`` px, ``overlap``
    ratio in [0, 1)): ``0, step, 2 step, …`` and a last one at ``length - size`` (flush)."""
    if length <= size:
        return [0]
    step = size - int(overlap * size)
    starts, start = [], 0
    while True:
        if start + size >= length:
            starts.append(length - size)
            return starts
        starts.append(start)
        start += step


def tile_grid(height: int, width: int, tile_height: int, tile_width: int,
              overlap_height: float, overlap_width: float) -> np.ndarray:
    """``(T, 4)`` int64 tiles ``(x1, y1, x2, y2)`` covering a ``height x width`` frame, row by
    row (top to bottom, left to right); each is ``min(tile, frame)`` px per axis."""
    ys = axis_starts(height, tile_height, overlap_height)
    xs = axis_starts(width, tile_width, overlap_width)
    th, tw = min(tile_height, height), min(tile_width, width)
    return np.array([(x, y, x + tw, y + th) for y in ys for x in xs], dtype=np.int64)


def shift_boxes(boxes: Tensor, offset: Any) -> Tensor:
    """``(N, 4)`` xyxy boxes in tile pixels → frame pixels (``offset`` = the tile's (x1, y1))."""
    x, y = (float(v) for v in offset[:2])
    return boxes + boxes.new_tensor([x, y, x, y])


def blend_weights(height: int, width: int, mode: str = "gaussian",
                  sigma_scale: float = 0.125) -> Tensor:
    """``(height, width)`` float32 weights of one tile's map when overlapping tiles are blended
    (``sum(w * p) / sum(w)``): ``"constant"`` (plain mean), ``"linear"`` (a tent falling
    towards the tile border) or ``"gaussian"`` (centre-weighted, ``sigma = sigma_scale * size``,
    MONAI's ``sliding_window_inference`` default). Every weight is > 0, so a pixel that only one
    tile covers keeps that tile's value exactly."""
    if mode == "constant":
        return torch.ones(height, width)

    def axis(n: int) -> Tensor:
        centre = torch.arange(n, dtype=torch.float64) + 0.5 - n / 2.0  # pixel centres
        if mode == "linear":
            return (n / 2.0 - centre.abs()) / (n / 2.0)
        sigma = max(sigma_scale * n, 1e-3)
        return torch.exp(-0.5 * (centre / sigma) ** 2)

    w = axis(height)[:, None] * axis(width)[None, :]
    return (w / w.max()).clamp(min=1e-3).float()
