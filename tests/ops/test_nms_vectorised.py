"""Vectorised Soft-/DIoU-NMS: identical to the former per-box loop, equal to ensemble-boxes.

``legacy_*`` below are the loop implementations detlab shipped before (1b54f77), kept verbatim
as the oracle for "same results, faster".
"""

from __future__ import annotations

import pytest
import torch

from detlab.ops.boxes import aligned_iou
from detlab.ops.nms import MATRIX_LIMIT, nms, overlap_matrix, pairwise_overlap, soft_nms
from detlab.postprocess.box_nms import BoxPostProcessor


def legacy_diou_nms(boxes, scores, iou_threshold, max_keep=None):
    order = scores.argsort(descending=True, stable=True)
    keep = []
    limit = order.numel() if max_keep is None else max_keep
    while order.numel() and len(keep) < limit:
        best, rest = order[0], order[1:]
        keep.append(best)
        overlap = aligned_iou(boxes[best][None], boxes[rest], "diou")
        order = rest[overlap <= iou_threshold]
    return torch.stack(keep) if keep else torch.empty(0, dtype=torch.long)


def legacy_soft_nms(boxes, scores, iou_threshold, sigma, method, score_threshold, max_keep=None):
    remaining = torch.arange(boxes.shape[0])
    current = scores.clone()
    keep, kept_scores = [], []
    limit = boxes.shape[0] if max_keep is None else max_keep
    alive = current >= score_threshold
    remaining, current = remaining[alive], current[alive]
    while remaining.numel() and len(keep) < limit:
        top = current.argmax()
        keep.append(remaining[top])
        kept_scores.append(current[top])
        others = torch.ones_like(remaining, dtype=torch.bool)
        others[top] = False
        remaining, current = remaining[others], current[others]
        iou = aligned_iou(boxes[keep[-1]][None], boxes[remaining]).to(current.dtype)
        if method == "gaussian":
            current = current * torch.exp(-(iou * iou) / sigma)
        else:
            current = torch.where(iou > iou_threshold, current * (1 - iou), current)
        alive = current >= score_threshold
        remaining, current = remaining[alive], current[alive]
    if not keep:
        return torch.empty(0, dtype=torch.long), scores[:0]
    return torch.stack(keep), torch.stack(kept_scores)


def random_detections(n, seed, classes=3, span=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * span
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 40 + 2], 1)
    return boxes, torch.rand(n, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_pairwise_overlap_is_aligned_iou_bit_for_bit():
    boxes, _, _ = random_detections(200, 0)
    boxes[3] = boxes[4]  # a duplicate
    boxes[5, 2:] = boxes[5, :2]  # a zero-area box
    for kind in ("iou", "diou"):
        want = aligned_iou(boxes[:, None], boxes[None], kind)
        assert torch.equal(pairwise_overlap(boxes[:, None], boxes[None], kind), want)
        assert torch.equal(overlap_matrix(boxes, kind), want)
        assert torch.equal(overlap_matrix(boxes.half(), kind), aligned_iou(
            boxes.half()[:, None], boxes.half()[None], kind))


# (n, span): dense clusters and sparse scenes; 2500 > MATRIX_LIMIT runs the row-per-pick path.
CASES = [(1, 100.0), (60, 100.0), (400, 100.0), (400, 600.0), (MATRIX_LIMIT + 452, 600.0)]


@pytest.mark.parametrize("n, span", CASES)
@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("max_keep", [None, 9])
def test_soft_nms_identical_to_the_loop(n, span, method, max_keep):
    if n > MATRIX_LIMIT and max_keep is None:
        pytest.skip("the legacy loop over 2500 boxes takes seconds")
    boxes, scores, _ = random_detections(n, n + int(span), span=span)
    want = legacy_soft_nms(boxes, scores, 0.3, 0.5, method, 0.01, max_keep)
    got = soft_nms(boxes, scores, 0.3, 0.5, method, 0.01, max_keep)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("n, span", CASES)
@pytest.mark.parametrize("max_keep", [None, 9])
def test_diou_nms_identical_to_the_loop(n, span, max_keep):
    boxes, scores, labels = random_detections(n, n + 1, span=span)
    keep, kept = nms(boxes, scores, None, "diou", 0.4, max_keep=max_keep)
    assert torch.equal(keep, legacy_diou_nms(boxes, scores, 0.4, max_keep))
    assert torch.equal(kept, scores[keep])


@pytest.mark.parametrize("n", [500, MATRIX_LIMIT + 300])  # matrix / row-per-pick paths
@pytest.mark.parametrize("method", ["soft_gaussian", "soft_linear", "diou"])
def test_per_class_equals_each_class_alone(method, n):
    # Per-class runs mask by label (no class-offset boxes), so they equal each class run alone
    # bit for bit; the former class-offset float32 boxes were off by up to ~2e-6.
    boxes, scores, labels = random_detections(n, 11, classes=4, span=300.0)
    keep, kept = nms(boxes, scores, labels, method, 0.4, score_threshold=0.01)
    want = {}
    for c in range(4):
        idx = (labels == c).nonzero().flatten()
        k, v = nms(boxes[idx], scores[idx], None, method, 0.4, score_threshold=0.01)
        want.update(zip(idx[k].tolist(), v.tolist()))
    assert dict(zip(keep.tolist(), kept.tolist())) == want
    assert bool((kept[1:] <= kept[:-1]).all())


def test_ties_go_to_the_lower_index():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.5, 0.5, 0.5])
    for method in ("soft_gaussian", "soft_linear", "diou"):
        keep, _ = nms(boxes, scores, None, method, 0.5, score_threshold=0.0)
        assert keep.tolist()[:2] == [0, 2], method


def test_empty_and_all_below_threshold():
    for n in (0, 5):
        boxes, scores, _ = random_detections(n, 2)
        keep, kept = soft_nms(boxes, scores * 0, score_threshold=0.1)
        assert keep.numel() == 0 and kept.numel() == 0 and keep.dtype == torch.long


# -- ensemble-boxes --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["soft_gaussian", "soft_linear"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_nms_matches_ensemble_boxes(method, seed):
    """ensemble-boxes' ``cpu_soft_nms_float`` (the loop behind its ``soft_nms``) on the same
    boxes normalised by the image size (IoU does not change under per-axis scaling).

    Conventions that differ: ensemble-boxes wants coordinates in [0, 1] (it clips to them and
    drops zero-area boxes), works in float64, keeps boxes whose final score is ``> thresh``
    (detlab: ``>= score_threshold``), and its ``soft_nms`` returns the kept boxes' *original*
    scores per label; the decayed scores it computes are left in the array it is given."""
    nms_mod = pytest.importorskip("ensemble_boxes.ensemble_boxes_nms")
    boxes, scores, labels = random_detections(300, seed, classes=3, span=560.0)
    boxes = boxes.double()
    code = 2 if method == "soft_gaussian" else 1
    keep, kept = nms(boxes, scores.double(), labels, method, 0.3, sigma=0.5,
                     score_threshold=0.05)
    ours = dict(zip(keep.tolist(), kept.tolist()))
    theirs = {}
    for c in range(3):
        idx = (labels == c).nonzero().flatten().numpy()
        decayed = scores.double().numpy()[idx].copy()
        picked = nms_mod.cpu_soft_nms_float((boxes[idx] / 640).numpy(), decayed, Nt=0.3,
                                            sigma=0.5, thresh=0.05, method=code)
        # ``decayed`` now holds the final scores in pick order; ``picked`` indexes ``idx``
        order = [i for i in range(len(idx)) if decayed[i] > 0.05]
        theirs.update({int(idx[p]): float(decayed[o]) for p, o in zip(picked, order)})
    assert sorted(ours) == sorted(theirs)
    for i, v in ours.items():
        assert v == pytest.approx(theirs[i], rel=1e-9, abs=1e-12), i
    # and the public soft_nms (original scores back) keeps the same boxes
    eb_boxes, _, _ = nms_mod.soft_nms([(boxes / 640).numpy()], [scores.double().numpy()],
                                      [labels.numpy()], method=code, iou_thr=0.3, sigma=0.5,
                                      thresh=0.05)
    assert len(eb_boxes) == len(ours)
