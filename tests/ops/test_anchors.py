"""detlab.ops.anchors: recipe checks, torchvision's anchor layout as oracle, hand-computed IoUs."""

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import box_iou

from detlab.errors import ConfigError
from detlab.ops.anchors import (
    anchor_config,
    anchor_shapes,
    best_grid_iou,
    best_shape_iou,
    cell_anchors,
    coverage,
    grid_anchors,
    kmeans_iou,
    wh_iou,
)


@pytest.mark.parametrize(
    "sizes, ratios, strides, expected_sizes, per_location",
    [
        ((4, 8, 12, 24, 48), (0.5, 1.0, 1.5, 2.0), [4, 8, 16, 32, 64],
         ((4.0,), (8.0,), (12.0,), (24.0,), (48.0,)), 4),
        (((32,), (64,)), (0.5, 1.0, 2.0), [8, 16], ((32.0,), (64.0,)), 3),
        (((16, 24), (32, 48)), [[1.0], [2.0]], [8, 16], ((16.0, 24.0), (32.0, 48.0)), 2),
    ],
)
def test_anchor_config_normalizes(sizes, ratios, strides, expected_sizes, per_location):
    got_sizes, got_ratios = anchor_config(sizes, ratios, strides)
    assert got_sizes == expected_sizes
    assert len(got_ratios) == len(strides)
    assert {len(s) * len(r) for s, r in zip(got_sizes, got_ratios)} == {per_location}


@pytest.mark.parametrize(
    "sizes, ratios, strides, match",
    [
        ((4, 8, 12, 24, 48), (1.0,), [4, 8, 16, 32],
         r"5 size group\(s\) but the model gives 4 feature level\(s\)"),
        (((8, 16), (32,)), (1.0,), [8, 16], r"same number of anchors per location.*\[2, 1\]"),
        ((8, -16), (1.0,), [8, 16], "positive number"),
        ((8, 16), (1.0, 0.0), [8, 16], "aspect_ratios"),
        ((8, 16), [[1.0], [1.0], [1.0]], [8, 16], "one such list per level"),
        ([], (1.0,), None, "non-empty"),
    ],
)
def test_anchor_config_errors(sizes, ratios, strides, match):
    with pytest.raises(ConfigError, match=match):
        anchor_config(sizes, ratios, strides, "Head")


def test_cell_anchors_are_torchvision_before_rounding():
    sizes, ratios = (4.0, 12.0), (0.5, 1.0, 2.0)
    ours = cell_anchors(sizes, ratios)
    tv = AnchorGenerator((sizes,), (ratios,)).generate_anchors(list(sizes), list(ratios))
    assert torch.equal(ours.round(), tv)  # torchvision rounds the half-sizes
    # ratio = h / w and area = size^2: size 4 at ratio 2 is 2.83 x 5.66, not 2 x 6
    w, h = ours[:, 2] - ours[:, 0], ours[:, 3] - ours[:, 1]
    assert torch.allclose(h / w, torch.tensor([0.5, 0.5, 1, 1, 2, 2]))
    assert torch.allclose(w * h, torch.tensor([16.0, 144.0] * 3))
    assert ours[4].tolist() == pytest.approx([-2 / math.sqrt(2), -2 * math.sqrt(2),
                                             2 / math.sqrt(2), 2 * math.sqrt(2)], rel=1e-6)


def test_grid_anchors_follow_torchvision_order_at_cell_centres():
    sizes, ratios = ((8.0,), (16.0, 32.0)), ((1.0, 2.0), (1.0,))
    cells = [cell_anchors(s, r) for s, r in zip(sizes, ratios)]
    ours = grid_anchors([(3, 5), (2, 3)], [4, 8], cells)
    gen = AnchorGenerator(sizes, ratios)
    gen.cell_anchors = cells  # unrounded, to compare the layout only
    tv = gen.grid_anchors([[3, 5], [2, 3]], [[torch.tensor(4), torch.tensor(4)],
                                              [torch.tensor(8), torch.tensor(8)]])
    shift = torch.cat([torch.full((3 * 5 * 2, 4), 2.0), torch.full((2 * 3 * 2, 4), 4.0)])
    assert torch.allclose(ours, torch.cat(tv) + shift)  # torchvision centres on cell corners


def test_wh_iou_and_shape_coverage_by_hand():
    # (2, 4) vs (4, 2): intersection 2 x 2 = 4, union 8 + 8 - 4 = 12
    assert wh_iou(np.array([[2.0, 4.0]]), np.array([[4.0, 2.0], [2.0, 4.0], [1.0, 1.0]])) == \
        pytest.approx(np.array([[4 / 12, 1.0, 1 / 8]]))
    wh = np.array([[10.0, 10.0], [10.0, 20.0], [40.0, 10.0]])
    anchors = np.array([[10.0, 10.0], [10.0, 20.0]])
    # 40x10 vs 10x10: 100 / (400 + 100 - 100) = 0.25 beats vs 10x20: 100 / (400 + 200 - 100)
    best = best_shape_iou(wh, anchors)
    assert best == pytest.approx([1.0, 1.0, 0.25])
    assert coverage(best) == pytest.approx(
        {"mean_best_iou": 2.25 / 3, "frac_iou>=0.5": 2 / 3, "frac_iou>=0.7": 2 / 3})


def test_best_grid_iou_matches_brute_force_over_the_grid():
    rng = np.random.default_rng(0)
    ctr = rng.uniform(20, 100, (200, 2))
    wh = rng.uniform(4, 40, (200, 2))
    boxes = np.concatenate([ctr - wh / 2, ctr + wh / 2], axis=1)
    sizes, ratios, strides = ((8.0, 12.0), (16.0, 24.0)), ((1.0, 2.0),) * 2, [4, 8]
    got = best_grid_iou(boxes, strides, sizes, ratios)
    cells = [cell_anchors(s, r) for s, r in zip(sizes, ratios)]
    grid = grid_anchors([(40, 40), (20, 20)], strides, cells).double()
    expected = box_iou(torch.from_numpy(boxes), grid).max(dim=1).values.numpy()
    assert got == pytest.approx(expected, abs=1e-6)  # grid built from float32 cells
    # a box exactly on a cell-centred anchor scores 1
    one = np.array([[2.0 - 4.0, 2.0 - 4.0, 2.0 + 4.0, 2.0 + 4.0]]) + 8.0
    assert best_grid_iou(one, [4], [(8.0,)], [(1.0,)]) == pytest.approx([1.0])


def test_kmeans_iou_recovers_separated_clusters():
    rng = np.random.default_rng(1)
    true = np.array([[6.0, 12.0], [12.0, 24.0], [30.0, 40.0]])
    wh = np.concatenate([t * rng.uniform(0.95, 1.05, (100, 2)) for t in true])
    centres = kmeans_iou(wh, 3, seed=0)
    assert centres == pytest.approx(true, rel=0.03)
    assert kmeans_iou(wh, 3, seed=0) == pytest.approx(centres)  # deterministic
    assert anchor_shapes([(10.0,)], [(4.0,)]) == pytest.approx(np.array([[5.0, 20.0]]))
