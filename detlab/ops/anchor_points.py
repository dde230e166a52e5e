"""Anchor points of anchor-free dense heads and the distance (ltrb) box coding they use.

An anchor point is the centre of a feature-map cell in input pixels: cell ``(i, j)`` of a level
with stride ``s`` sits at ``((j + offset) * s, (i + offset) * s)``, ``offset = 0.5`` (FCOS,
arXiv:1904.01355; YOLOv8). A box is coded by its distances from the point to its left, top, right
and bottom sides (``ltrb``), all >= 0 when the point is inside the box.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["grid_points", "distances_to_boxes", "boxes_to_distances"]


def grid_points(
    sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    offset: float = 0.5,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Cell centres of every level, level by level, each level row-major (y, then x).

    Args:
        sizes: ``(h, w)`` of each level's feature map.
        strides: pixels per cell of each level.
        offset: position of the point inside its cell, in cells (0.5 = centre).

    Returns:
        ``points`` ``(A, 2)`` (x, y) input pixels and ``point_strides`` ``(A,)``, with
        ``A = sum(h * w)``.
    """
    if len(sizes) != len(strides):
        raise ValueError(f"{len(sizes)} level sizes but {len(strides)} strides")
    points, point_strides = [], []
    for (h, w), s in zip(sizes, strides):
        ys = (torch.arange(h, device=device, dtype=dtype) + offset) * s
        xs = (torch.arange(w, device=device, dtype=dtype) + offset) * s
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2))
        point_strides.append(torch.full((h * w,), float(s), device=device, dtype=dtype))
    if not points:
        return torch.zeros(0, 2, device=device, dtype=dtype), torch.zeros(0, device=device,
                                                                          dtype=dtype)
    return torch.cat(points), torch.cat(point_strides)


def distances_to_boxes(points: Tensor, distances: Tensor) -> Tensor:
    """``points`` ``(..., 2)`` (x, y) and ``distances`` ``(..., 4)`` ltrb → xyxy ``(..., 4)``."""
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)


def boxes_to_distances(points: Tensor, boxes: Tensor) -> Tensor:
    """``points`` ``(..., 2)`` and xyxy ``boxes`` ``(..., 4)`` → ltrb distances ``(..., 4)``
    (negative where the point lies outside the box)."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)
