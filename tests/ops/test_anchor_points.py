"""Anchor points (cell centres in input pixels) and the ltrb distance coding."""

from __future__ import annotations

import pytest
import torch

from detlab.ops.anchor_points import boxes_to_distances, distances_to_boxes, grid_points


@pytest.mark.parametrize(
    "sizes, strides, index, point, stride",
    [
        ([(2, 3)], [8], 0, (4.0, 4.0), 8.0),
        ([(2, 3)], [8], 2, (20.0, 4.0), 8.0),  # row-major: x runs first
        ([(2, 3)], [8], 3, (4.0, 12.0), 8.0),
        ([(2, 3), (1, 2)], [8, 16], 6, (8.0, 8.0), 16.0),  # first point of level 2
        ([(2, 3), (1, 2)], [8, 16], 7, (24.0, 8.0), 16.0),
        ([(16, 24), (8, 12)], [4, 8], 16 * 24 - 1, (94.0, 62.0), 4.0),  # last P2 cell
    ],
)
def test_grid_points(sizes, strides, index, point, stride):
    points, point_strides = grid_points(sizes, strides)
    assert points.shape == (sum(h * w for h, w in sizes), 2)
    assert tuple(points[index].tolist()) == point
    assert point_strides[index].item() == stride


def test_grid_points_offset_and_empty():
    points, _ = grid_points([(1, 1)], [32], offset=0.0)
    assert points.tolist() == [[0.0, 0.0]]
    points, strides = grid_points([], [])
    assert points.shape == (0, 2) and strides.shape == (0,)
    with pytest.raises(ValueError, match="strides"):
        grid_points([(1, 1)], [8, 16])


def test_distance_coding_round_trip():
    points = torch.tensor([[10.0, 20.0], [0.0, 0.0]])
    boxes = torch.tensor([[4.0, 5.0, 30.0, 21.0], [1.0, 1.0, 2.0, 2.0]])
    ltrb = boxes_to_distances(points, boxes)
    assert ltrb.tolist() == [[6.0, 15.0, 20.0, 1.0], [-1.0, -1.0, 2.0, 2.0]]
    torch.testing.assert_close(distances_to_boxes(points, ltrb), boxes)
