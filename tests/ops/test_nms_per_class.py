"""Per-class standard NMS of many CPU boxes (one torchvision pass per class) returns exactly
what one torchvision pass over the float64 class-offset boxes returns: same boxes, same order,
ties included."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import nms as tv_nms

from detlab.ops.nms import _per_class_standard, nms, offset_by_class


def one_pass(boxes, scores, labels, thr):
    return tv_nms(offset_by_class(boxes.double(), labels), scores.double(), thr)


def detections(n, classes, seed, levels=None):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 50 + 1], 1)
    scores = torch.rand(n, generator=g)
    if levels:  # few distinct scores: many ties, inside and across classes
        scores = (scores * levels).floor() / levels
    labels = torch.randint(0, classes, (n,), generator=g)
    return boxes, scores, labels


@pytest.mark.parametrize("n, classes, levels", [(1500, 2, None), (1500, 2, 20), (2500, 80, 7),
                                                (1200, 1, 5), (3000, 5, 3)])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.8])
def test_per_class_equals_one_offset_pass(n, classes, levels, thr):
    boxes, scores, labels = detections(n, classes, n + classes, levels)
    want = one_pass(boxes, scores, labels, thr)
    assert torch.equal(_per_class_standard(boxes, scores, labels, thr), want)
    keep, kept = nms(boxes, scores, labels, "standard", thr, max_keep=300)
    assert torch.equal(keep, want[:300]) and torch.equal(kept, scores[want[:300]])


def test_labels_need_not_start_at_zero_nor_be_contiguous():
    boxes, scores, labels = detections(1100, 3, 1, 10)
    labels = labels * 7 - 3  # -3, 4, 11
    assert torch.equal(_per_class_standard(boxes, scores, labels, 0.5),
                       one_pass(boxes, scores, labels, 0.5))
