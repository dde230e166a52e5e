"""Tile geometry of sliced inference: hand-computed grids, flush last tiles, small frames,
tile → frame box mapping and blend weights."""

import numpy as np
import pytest
import torch

from detlab.ops.coords import boxes_to_original
from detlab.ops.slicing import axis_starts, blend_weights, shift_boxes, tile_grid


def test_full_hd_grid_640_tiles_overlap_02():
    # step = 640 - int(0.2 * 640) = 512: x 0, 512, 1024, then 1536 + 640 > 1920 -> 1280 (flush);
    # y 0, then 512 + 640 > 1080 -> 440 (flush). 4 x 2 tiles, row by row.
    grid = tile_grid(1080, 1920, 640, 640, 0.2, 0.2)
    xs, ys = [0, 512, 1024, 1280], [0, 440]
    expected = [(x, y, x + 640, y + 640) for y in ys for x in xs]
    assert grid.tolist() == [list(t) for t in expected]
    assert grid[:, 2].max() == 1920 and grid[:, 3].max() == 1080  # last tiles flush


def test_grid_covers_every_pixel_once_or_more():
    grid = tile_grid(1080, 1920, 640, 640, 0.2, 0.2)
    cover = np.zeros((1080, 1920), int)
    for x1, y1, x2, y2 in grid:
        cover[y1:y2, x1:x2] += 1
    assert cover.min() == 1
    assert cover[0, 600] == 2 and cover[600, 600] == 4  # overlaps: 128 px bands


def test_exact_fit_and_zero_overlap():
    assert axis_starts(1280, 640, 0.0) == [0, 640]
    assert axis_starts(1152, 640, 0.2) == [0, 512]  # 512 + 640 ends exactly at the border
    assert axis_starts(1300, 640, 0.5) == [0, 320, 640, 660]


def test_frame_smaller_than_tile_is_one_whole_tile():
    assert tile_grid(300, 500, 640, 640, 0.2, 0.2).tolist() == [[0, 0, 500, 300]]
    # one axis smaller: tiles keep the frame's height
    assert tile_grid(300, 1000, 640, 640, 0.25, 0.25).tolist() == [
        [0, 0, 640, 300], [360, 0, 1000, 300]]


def test_tile_box_to_frame():
    # A tile at x1=1280, y1=440 letterboxed 640 -> 320 (scale 0.5, pad top 0): a box at input
    # (10, 20, 30, 60) is tile px (20, 40, 60, 120), frame px (1300, 480, 1340, 560).
    meta = {"scale": (0.5, 0.5), "pad": (0, 0), "orig_size": (640, 640)}
    tile_px = boxes_to_original(torch.tensor([[10.0, 20.0, 30.0, 60.0]]), meta)
    frame = shift_boxes(tile_px, (1280, 440))
    assert frame.tolist() == [[1300.0, 480.0, 1340.0, 560.0]]


@pytest.mark.parametrize("mode", ["gaussian", "linear", "constant"])
def test_blend_weights_positive_and_centre_heavy(mode):
    w = blend_weights(64, 96, mode)
    assert w.shape == (64, 96) and float(w.min()) > 0
    if mode != "constant":
        assert float(w[32, 48]) == pytest.approx(float(w.max()))
        assert float(w[0, 0]) < 0.2 * float(w.max())
