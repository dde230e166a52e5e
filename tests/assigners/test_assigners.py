"""Task-aligned and ATSS assigners on hand-built cases, empty/padded ground truth, and batched
results against image-by-image runs."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tvops

from detlab.assigners.atss import ATSSAssigner
from detlab.assigners.base import AssignResult, pick_best_gt, segment_topk
from detlab.assigners.task_aligned import TaskAlignedAssigner
from detlab.errors import ConfigError, DataError
from detlab.registry import ASSIGNERS

# 4x4 grid of stride-4 anchor points at x, y ∈ {2, 6, 10, 14}; index = row * 4 + col
GRID = torch.tensor([[x, y] for y in (2.0, 6.0, 10.0, 14.0) for x in (2.0, 6.0, 10.0, 14.0)])


def cell_boxes(points: torch.Tensor, half: float = 2.0) -> torch.Tensor:
    return torch.cat([points - half, points + half], dim=1)


def gt(boxes, labels, valid=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(1, -1, 4)
    labels = torch.tensor(labels, dtype=torch.long).reshape(1, -1)
    valid = torch.ones_like(labels, dtype=torch.bool) if valid is None else torch.tensor([valid])
    return labels, boxes, valid


def positives(result: AssignResult, image: int = 0) -> dict[int, int]:
    fg = result.fg_mask[image].nonzero().flatten().tolist()
    return {a: int(result.gt_index[image, a]) for a in fg}


# -- sparse helpers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "segment, values, k, keep",
    [
        ([0, 0, 0, 1, 1], [0.1, 0.3, 0.2, 0.5, 0.4], 2, [0, 1, 1, 1, 1]),
        ([0, 0, 0, 1, 1], [0.1, 0.3, 0.2, 0.5, 0.4], 1, [0, 1, 0, 1, 0]),
        ([0, 0, 0, 2], [0.0, 0.0, 0.0, 0.7], 2, [1, 1, 0, 1]),  # ties: earlier entries first
        ([3, 1, 3, 1], [0.2, 0.9, 0.4, 0.1], 1, [0, 1, 1, 0]),  # unsorted segments
        ([], [], 3, []),
    ],
)
def test_segment_topk(segment, values, k, keep):
    got = segment_topk(torch.tensor(segment, dtype=torch.long), torch.tensor(values), k)
    assert got.tolist() == [bool(v) for v in keep]


def test_pick_best_gt_prefers_highest_quality_then_lowest_gt():
    # B=1, G=3, A=3; anchor 0 claimed by gts 2 (0.4) and 1 (0.6); anchor 2 by gts 2 and 0 (tie)
    pairs = (torch.zeros(4, dtype=torch.long), torch.tensor([2, 1, 2, 0]),
             torch.tensor([0, 0, 2, 2]))
    gt_index, fg, chosen = pick_best_gt((1, 3, 3), pairs, torch.tensor([0.4, 0.6, 0.5, 0.5]))
    assert gt_index.tolist() == [[1, 0, 0]] and fg.tolist() == [[True, False, True]]
    assert chosen.tolist() == [False, True, False, True]


# -- task-aligned ---------------------------------------------------------------------------------
def tal_case():
    """gt0 [0,0,8,8] (class 0) holds anchors 0,1,4,5; gt1 [4,0,12,8] (class 1) holds 1,2,5,6."""
    scores = torch.zeros(1, 16, 2)
    scores[0, [0, 1, 4, 5], 0] = torch.tensor([0.9, 0.8, 0.3, 0.1])
    scores[0, [1, 2, 5, 6], 1] = torch.tensor([0.9, 0.2, 0.7, 0.6])
    boxes = cell_boxes(GRID)[None].clone()  # IoU 0.25 with either gt for its inside anchors
    boxes[0, 1] = torch.tensor([2.0, 0.0, 7.0, 4.0])  # IoU 20/64 with gt0, 12/72 with gt1
    return scores, boxes, gt([[0, 0, 8, 8], [4, 0, 12, 8]], [0, 1])


def test_tal_hand_case():
    scores, boxes, (labels, gt_boxes, valid) = tal_case()
    result = TaskAlignedAssigner(topk=2)(scores, boxes, GRID, labels, gt_boxes, valid)
    # t = s · IoU⁶: gt0 ranks a1 (0.8·0.3125⁶) > a0 (0.9·0.25⁶) > a4 > a5;
    # gt1 ranks a5 (0.7·0.25⁶) > a6 (0.6·0.25⁶) > a2 > a1 (0.9·(1/6)⁶)
    assert positives(result) == {0: 0, 1: 0, 5: 1, 6: 1}
    assert result.target_labels[0].tolist() == [0, 0, 2, 2, 2, 1, 1] + [2] * 9
    torch.testing.assert_close(result.target_boxes[0, 6], torch.tensor([4.0, 0, 12, 8]))
    assert result.target_boxes[0, 3].abs().sum() == 0 and result.gt_index[0, 3] == -1
    t0, t1 = 0.9 * 0.25**6, 0.8 * 0.3125**6
    expected = torch.zeros(16, 2)
    expected[1, 0] = 0.3125  # best anchor of a gt gets that gt's best IoU
    expected[0, 0] = t0 / t1 * 0.3125
    expected[5, 1] = 0.25
    expected[6, 1] = 0.6 / 0.7 * 0.25
    torch.testing.assert_close(result.target_scores[0], expected)


def test_tal_overlapping_gts_keep_highest_iou():
    # gt0 [0,0,8,8] and gt1 [0,0,8,4] both hold anchors 0 and 1; their 4x4 predictions have
    # IoU 0.25 with gt0 and 0.5 with gt1, so they go to gt1; anchors 4, 5 stay with gt0.
    scores = torch.full((1, 16, 1), 0.5)
    labels, gt_boxes, valid = gt([[0, 0, 8, 8], [0, 0, 8, 4]], [0, 0])
    result = TaskAlignedAssigner(topk=4)(scores, cell_boxes(GRID)[None], GRID, labels, gt_boxes,
                                         valid)
    assert positives(result) == {0: 1, 1: 1, 4: 0, 5: 0}


def test_tal_tiny_box_with_zero_metric_keeps_its_anchor():
    # Early training: predictions do not overlap a tiny box → t = 0 everywhere; the one anchor
    # inside must still be positive (ranking all anchors would tie it with 15 outside ones).
    scores = torch.full((1, 16, 1), 0.5)
    boxes = cell_boxes(GRID, half=0.1)[None] + 1.0
    labels, gt_boxes, valid = gt([[9.5, 9.5, 10.5, 10.5]], [0])
    result = TaskAlignedAssigner(topk=3)(scores, boxes, GRID, labels, gt_boxes, valid)
    assert positives(result) == {10: 0}
    assert result.target_scores.sum() == 0  # IoU 0: a positive with a zero soft target


@pytest.mark.parametrize("assigner", [TaskAlignedAssigner(), ATSSAssigner(anchor_size=2.0)])
@pytest.mark.parametrize("case", ["no_columns", "all_padding"])
def test_no_ground_truth_gives_background(assigner, case):
    scores = torch.rand(2, 16, 3)
    if case == "no_columns":
        labels, gt_boxes = torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4)
    else:  # junk padding covering every anchor, with an out-of-range label
        labels = torch.full((2, 3), 99)
        gt_boxes = torch.tensor([0.0, 0, 16, 16]).repeat(2, 3, 1)
    valid = torch.zeros(labels.shape, dtype=torch.bool)
    result = assigner(scores, cell_boxes(GRID).repeat(2, 1, 1), GRID, labels, gt_boxes, valid,
                      num_anchors_per_level=[16], anchor_strides=torch.full((16,), 4.0))
    assert not result.fg_mask.any()
    assert (result.target_labels == 3).all() and (result.gt_index == -1).all()
    assert result.target_scores.shape == (2, 16, 3) and result.target_scores.sum() == 0
    assert result.target_boxes.shape == (2, 16, 4) and result.target_boxes.sum() == 0


def random_batch(seed: int, counts=(0, 3, 6), a_side: int = 10, classes: int = 4):
    """Images with different numbers of boxes, padded to the largest with junk rows."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(a_side), torch.arange(a_side), indexing="ij")
    points = (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * 8
    a, b, gmax = points.shape[0], len(counts), max(counts)
    scores = torch.rand(b, a, classes, generator=g)
    pred = torch.cat([points - torch.rand(b, a, 2, generator=g) * 12,
                      points + torch.rand(b, a, 2, generator=g) * 12], -1)
    xy = torch.rand(b, gmax, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + torch.rand(b, gmax, 2, generator=g) * 30 + 4], -1)
    labels = torch.randint(0, classes, (b, gmax), generator=g)
    valid = torch.arange(gmax)[None] < torch.tensor(counts)[:, None]
    boxes[~valid] = torch.tensor([0.0, 0.0, 80.0, 80.0])  # junk that would match everything
    labels[~valid] = -1
    return scores, pred, points, labels, boxes, valid, counts


@pytest.mark.parametrize("assigner", [TaskAlignedAssigner(topk=10),
                                      TaskAlignedAssigner(topk=5, iou_kind="ciou"),
                                      ATSSAssigner(topk=3, anchor_size=3.0)])
def test_batched_equals_image_by_image(assigner):
    scores, pred, points, labels, boxes, valid, counts = random_batch(0)
    extra = {"num_anchors_per_level": [60, 40], "anchor_strides": torch.full((100,), 8.0)}
    batched = assigner(scores, pred, points, labels, boxes, valid, **extra)
    assert batched.fg_mask[1:].sum() > 0
    for i, n in enumerate(counts):
        single = assigner(scores[i : i + 1], pred[i : i + 1], points, labels[i : i + 1, :n],
                          boxes[i : i + 1, :n], valid[i : i + 1, :n], **extra)
        for field in ("target_labels", "fg_mask", "gt_index", "target_boxes", "target_scores"):
            torch.testing.assert_close(getattr(batched, field)[i], getattr(single, field)[0],
                                       msg=f"image {i}, {field}")


def reference_tal(scores, pred, points, labels, boxes, valid, topk, alpha=1.0, beta=6.0):
    """TOOD assignment written plainly: image by image, ground truth by ground truth."""
    b, a, c = scores.shape
    fg = torch.zeros(b, a, dtype=torch.bool)
    gt_index = torch.full((b, a), -1)
    target_scores = torch.zeros(b, a, c)
    for i in range(b):
        claims = {}  # anchor -> list of (iou, gt, metric)
        for j in range(boxes.shape[1]):
            if not valid[i, j]:
                continue
            x1, y1, x2, y2 = boxes[i, j].tolist()
            inside = [k for k in range(a)
                      if x1 < points[k, 0] < x2 and y1 < points[k, 1] < y2]
            rows = []
            for k in inside:
                iou = tvops.box_iou(pred[i, k][None], boxes[i, j][None]).item()
                rows.append((scores[i, k, labels[i, j]].item() ** alpha * iou**beta, k, iou))
            for metric, k, iou in sorted(rows, reverse=True)[:topk]:
                claims.setdefault(k, []).append((iou, j, metric))
        best = {k: max(v) for k, v in claims.items()}  # highest IoU wins
        for j in range(boxes.shape[1]):
            mine = [(m, k, iou) for k, (iou, jj, m) in best.items() if jj == j]
            if not mine:
                continue
            max_m, max_iou = max(m for m, _, _ in mine), max(u for _, _, u in mine)
            for m, k, _ in mine:
                fg[i, k], gt_index[i, k] = True, j
                target_scores[i, k, labels[i, j]] = m * max_iou / (max_m + 1e-9)
    return fg, gt_index, target_scores


def test_tal_matches_plain_reference():
    scores, pred, points, labels, boxes, valid, _ = random_batch(2, counts=(4, 0, 7))
    result = TaskAlignedAssigner(topk=6)(scores, pred, points, labels, boxes, valid)
    fg, gt_index, target_scores = reference_tal(scores, pred, points, labels, boxes, valid, 6)
    assert fg.sum() > 10
    assert torch.equal(result.fg_mask, fg)
    assert torch.equal(result.gt_index, gt_index)
    torch.testing.assert_close(result.target_scores, target_scores)


def test_tal_target_scores_peak_at_each_gts_best_iou():
    from detlab.ops.boxes import aligned_iou

    scores, pred, points, labels, boxes, valid, _ = random_batch(1)
    result = TaskAlignedAssigner(topk=10)(scores, pred, points, labels, boxes, valid)
    b, a = result.fg_mask.nonzero(as_tuple=True)
    iou = aligned_iou(pred[b, a], result.target_boxes[b, a])
    peak = result.target_scores[b, a].amax(-1)
    for key in set(zip(b.tolist(), result.gt_index[b, a].tolist())):
        sel = (b == key[0]) & (result.gt_index[b, a] == key[1])
        assert peak[sel].max().item() == pytest.approx(iou[sel].max().item(), rel=1e-5)
    # one-hot at the assigned label
    assert (result.target_scores[b, a].argmax(-1) == result.target_labels[b, a]).all()


def test_tal_rejects_labels_out_of_range():
    scores, boxes, (labels, gt_boxes, valid) = tal_case()
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        TaskAlignedAssigner()(scores, boxes, GRID, labels + 1, gt_boxes, valid)


# -- ATSS -----------------------------------------------------------------------------------------
LEVEL1 = torch.tensor([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0]])
POINTS = torch.cat([GRID, LEVEL1])
STRIDES = torch.cat([torch.full((16,), 4.0), torch.full((4,), 8.0)])


def test_atss_hand_case():
    # gt [1,1,8,9], centre (4.5, 5). Two closest per level: (6,6), (2,6) on level 0 and (4,4),
    # (4,12) on level 1. Anchor boxes (side 2 strides) IoU: 42/78, 35/85, 56/256, 35/277;
    # mean + std ≈ 0.510 → only anchor (6,6) = index 5 passes (and its centre is inside).
    labels, gt_boxes, valid = gt([[1, 1, 8, 9]], [1])
    scores = torch.zeros(1, 20, 2)
    result = ATSSAssigner(topk=2, anchor_size=2.0)(
        scores, None, POINTS, labels, gt_boxes, valid, num_anchors_per_level=[16, 4],
        anchor_strides=STRIDES,
    )
    ious = torch.tensor([42 / 78, 35 / 85, 56 / 256, 35 / 277])
    assert ious[0] >= ious.mean() + ious.std() > ious[1]
    assert positives(result) == {5: 0}
    assert result.target_scores[0, 5].tolist() == [0.0, 1.0]
    # with predicted boxes the soft target is their IoU with the ground truth
    pred = cell_boxes(POINTS)[None]  # anchor 5: [4,4,8,8] inside the gt → 16/56
    soft = ATSSAssigner(topk=2, anchor_size=2.0)(
        scores, pred, POINTS, labels, gt_boxes, valid, num_anchors_per_level=[16, 4],
        anchor_strides=STRIDES,
    )
    assert soft.target_scores[0, 5, 1].item() == pytest.approx(16 / 56)


def reference_atss(points, strides, levels, boxes, valid, topk, size):
    """ATSS written plainly: image by image, ground truth by ground truth, level by level."""
    anchors = torch.cat([points - strides[:, None] * size / 2,
                         points + strides[:, None] * size / 2], 1)
    b, a = boxes.shape[0], points.shape[0]
    gt_index = torch.full((b, a), -1)
    for i in range(b):
        claims = {}
        for j in range(boxes.shape[1]):
            if not valid[i, j]:
                continue
            center = (boxes[i, j, :2] + boxes[i, j, 2:]) / 2
            cand, start = [], 0
            for n in levels:
                d = ((points[start:start + n] - center) ** 2).sum(1)
                cand += (d.argsort()[:topk] + start).tolist()
                start += n
            ious = tvops.box_iou(anchors[cand], boxes[i, j][None])[:, 0]
            threshold = ious.mean() + ious.std()
            x1, y1, x2, y2 = boxes[i, j].tolist()
            for k, iou in zip(cand, ious.tolist()):
                if iou >= threshold and x1 < points[k, 0] < x2 and y1 < points[k, 1] < y2:
                    claims.setdefault(k, []).append((iou, j))
        for k, v in claims.items():
            gt_index[i, k] = max(v)[1]
    return gt_index


def test_atss_matches_plain_reference():
    scores, pred, points, labels, boxes, valid, _ = random_batch(3, counts=(5, 2, 0))
    strides = torch.cat([torch.full((60,), 8.0), torch.full((40,), 16.0)])
    result = ATSSAssigner(topk=4, anchor_size=2.0)(
        scores, None, points, labels, boxes, valid, num_anchors_per_level=[60, 40],
        anchor_strides=strides,
    )
    want = reference_atss(points, strides, [60, 40], boxes, valid, 4, 2.0)
    assert (want >= 0).sum() > 5
    assert torch.equal(result.gt_index, want)


def test_atss_needs_level_sizes_and_strides():
    labels, gt_boxes, valid = gt([[1, 1, 8, 9]], [0])
    with pytest.raises(ValueError, match="num_anchors_per_level"):
        ATSSAssigner()(torch.zeros(1, 20, 1), None, POINTS, labels, gt_boxes, valid,
                       num_anchors_per_level=[16, 3], anchor_strides=STRIDES)
    with pytest.raises(ValueError, match="anchor_strides"):
        ATSSAssigner()(torch.zeros(1, 20, 1), None, POINTS, labels, gt_boxes, valid,
                       num_anchors_per_level=[16, 4])


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (TaskAlignedAssigner, {"topk": 0}, "topk"),
        (TaskAlignedAssigner, {"beta": -1}, "beta"),
        (TaskAlignedAssigner, {"iou_kind": "giou"}, "iou_kind"),
        (ATSSAssigner, {"topk": 2.5}, "topk"),
        (ATSSAssigner, {"anchor_size": 0}, "anchor_size"),
    ],
)
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def test_registered():
    assert isinstance(ASSIGNERS.build({"type": "TaskAlignedAssigner", "topk": 10}),
                      TaskAlignedAssigner)
    assert isinstance(ASSIGNERS.build({"type": "ATSSAssigner"}), ATSSAssigner)
