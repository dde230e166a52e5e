"""Box conversions and the IoU family against hand values and torchvision."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvops

from detlab.ops.boxes import (
    IOU_KINDS,
    aligned_iou,
    box_area,
    box_convert,
    cxcywh_to_xywh,
    cxcywh_to_xyxy,
    pairwise_iou,
    xywh_to_cxcywh,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)


def random_boxes(n: int, seed: int, scale: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 2 + 0.5
    return torch.cat([xy, xy + wh], dim=1)


# -- conversions --------------------------------------------------------------------------------
XYXY = torch.tensor([[1.0, 2.0, 5.0, 8.0], [0.0, 0.0, 0.0, 3.0]])
XYWH = torch.tensor([[1.0, 2.0, 4.0, 6.0], [0.0, 0.0, 0.0, 3.0]])
CXCYWH = torch.tensor([[3.0, 5.0, 4.0, 6.0], [0.0, 1.5, 0.0, 3.0]])


@pytest.mark.parametrize(
    "fn, src, expected",
    [
        (xyxy_to_xywh, XYXY, XYWH),
        (xywh_to_xyxy, XYWH, XYXY),
        (xyxy_to_cxcywh, XYXY, CXCYWH),
        (cxcywh_to_xyxy, CXCYWH, XYXY),
        (xywh_to_cxcywh, XYWH, CXCYWH),
        (cxcywh_to_xywh, CXCYWH, XYWH),
    ],
)
def test_conversions_hand_values(fn, src, expected):
    torch.testing.assert_close(fn(src), expected)


def test_conversion_batched_shapes_and_round_trip():
    boxes = random_boxes(12, 0).reshape(3, 4, 4)
    for fmt in ("xywh", "cxcywh"):
        there = box_convert(boxes, "xyxy", fmt)
        assert there.shape == (3, 4, 4)
        torch.testing.assert_close(box_convert(there, fmt, "xyxy"), boxes)


def test_conversion_rejects_unknown_format():
    with pytest.raises(ValueError, match="xyxz"):
        box_convert(XYXY, "xyxz", "xyxy")


def test_box_area():
    torch.testing.assert_close(box_area(XYXY), torch.tensor([24.0, 0.0]))


# -- hand values --------------------------------------------------------------------------------
def _ciou(iou: float, diou: float, w1, h1, w2, h2) -> float:
    v = 4 / math.pi**2 * (math.atan(w2 / h2) - math.atan(w1 / h1)) ** 2
    return diou - v / (1 - iou + v) * v


HAND = [
    # (box a, box b, {kind: expected})
    (
        [0, 0, 2, 2], [1, 1, 3, 3],
        # inter 1, union 7, enclosing 3x3 = 9 (diag² 18), centre distance² 2
        {"iou": 1 / 7, "giou": 1 / 7 - 2 / 9, "diou": 1 / 7 - 2 / 18, "ciou": 1 / 7 - 2 / 18},
    ),
    (
        [0, 0, 4, 2], [0, 0, 2, 4],
        # inter 4, union 12, enclosing 4x4 = 16 (diag² 32), centres (2,1) and (1,2)
        {"iou": 1 / 3, "giou": 1 / 3 - 4 / 16, "diou": 1 / 3 - 2 / 32,
         "ciou": _ciou(1 / 3, 1 / 3 - 2 / 32, 4, 2, 2, 4)},
    ),
    (
        [0, 0, 1, 1], [10, 10, 11, 11],  # far apart: enclosing 11x11, centre distance² 200
        {"iou": 0.0, "giou": -(121 - 2) / 121, "diou": -200 / 242, "ciou": -200 / 242},
    ),
    (
        [3, 3, 7, 9], [3, 3, 7, 9],  # identical
        {"iou": 1.0, "giou": 1.0, "diou": 1.0, "ciou": 1.0},
    ),
    (
        [2, 2, 2, 2], [2, 2, 2, 2],  # identical points: defined as 0, not NaN
        {"iou": 0.0, "giou": 0.0, "diou": 0.0, "ciou": 0.0},
    ),
]


@pytest.mark.parametrize("a, b, expected", HAND)
@pytest.mark.parametrize("kind", IOU_KINDS)
def test_aligned_iou_hand_values(a, b, expected, kind):
    a, b = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    got = aligned_iou(a, b, kind)
    assert got.item() == pytest.approx(expected[kind], abs=1e-6)


# -- against torchvision --------------------------------------------------------------------------
TV_PAIRWISE = {
    "iou": tvops.box_iou,
    "giou": tvops.generalized_box_iou,
    "diou": tvops.distance_box_iou,
    "ciou": tvops.complete_box_iou,
}


@pytest.mark.parametrize("kind", IOU_KINDS)
def test_pairwise_matches_torchvision(kind):
    a, b = random_boxes(30, 1), random_boxes(20, 2)
    torch.testing.assert_close(pairwise_iou(a, b, kind), TV_PAIRWISE[kind](a, b))


@pytest.mark.parametrize("kind", IOU_KINDS)
def test_aligned_equals_diagonal_of_pairwise(kind):
    a, b = random_boxes(64, 3), random_boxes(64, 4)
    torch.testing.assert_close(aligned_iou(a, b, kind), TV_PAIRWISE[kind](a, b).diagonal(),
                               atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", IOU_KINDS)
def test_aligned_broadcasts_to_pairwise(kind):
    a, b = random_boxes(7, 5), random_boxes(9, 6)
    got = aligned_iou(a[:, None, :], b[None, :, :], kind)
    torch.testing.assert_close(got, TV_PAIRWISE[kind](a, b), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_aligned_upcasts_half_precision(dtype):
    a, b = random_boxes(16, 7).to(dtype), random_boxes(16, 8).to(dtype)
    got = aligned_iou(a, b, "ciou")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, aligned_iou(a.float(), b.float(), "ciou"))


def test_aligned_rejects_bad_kind_and_shape():
    with pytest.raises(ValueError, match="kind"):
        aligned_iou(XYXY, XYXY, "xiou")
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        aligned_iou(XYXY[:, :3], XYXY[:, :3])
