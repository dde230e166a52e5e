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


@pytest.mark.parametrize("classes, levels", [(2, None), (3, 6), (80, 4)])
def test_rows_at_once_equal_each_image_alone(classes, levels):
    from detlab.ops.nms import per_class_standard_rows

    rows, k = 5, 1400
    boxes, scores, labels = zip(*(detections(k, classes, 10 * r + classes, levels)
                                  for r in range(rows)))
    scores, order = torch.stack(scores).sort(dim=1, descending=True)  # as topk gives them
    boxes = torch.stack(boxes).gather(1, order[..., None].expand(-1, -1, 4))
    labels = torch.stack(labels).gather(1, order)
    counts = [1400, 1100, 1250, 1399, 1001]
    got = per_class_standard_rows(boxes, scores, labels, counts, [0, 2, 3, 4], 0.6)
    assert sorted(got) == [0, 2, 3, 4]
    for r, keep in got.items():
        m = counts[r]
        want = one_pass(boxes[r, :m], scores[r, :m], labels[r, :m], 0.6)
        assert torch.equal(keep, want), r


@pytest.mark.parametrize("thr, multi_label", [(0.5, True), (0.8, True), (0.7, False)])
def test_box_postprocessor_batch_equals_one_image_at_a_time(thr, multi_label):
    from detlab.postprocess.box_nms import BoxPostProcessor

    g = torch.Generator().manual_seed(3)
    n, c = 900, 2  # 1800 (box, class) candidates per image at a 0.001 threshold
    xy = torch.rand(4, n, 2, generator=g) * 150
    boxes = torch.cat([xy, xy + torch.rand(4, n, 2, generator=g) * 40 + 1], 2)
    scores = (torch.rand(4, n, c, generator=g) * 50).floor() / 50 + 0.002  # ties
    post = BoxPostProcessor(iou_threshold=thr, multi_label=multi_label, max_detections=300)
    batch = post.batched(boxes, scores)
    for i in range(4):
        single = post.batched(boxes[i:i + 1], scores[i:i + 1])[0]
        for got, want in zip(batch[i], single):
            assert torch.equal(got, want)
        # and what nms() of the candidates gives, as before the batched path
        values, index, labels = post.candidates(scores[i:i + 1], n * c if multi_label else n)
        m = int((values >= 0).sum())
        cand = boxes[i, index[0, :m]]
        keep, kept = nms(cand, values[0, :m], labels[0, :m], "standard", thr, max_keep=300)
        assert torch.equal(batch[i][0], cand[keep]) and torch.equal(batch[i][1], kept)
