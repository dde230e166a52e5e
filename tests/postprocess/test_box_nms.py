"""NMS variants (hand cases, torchvision, straightforward references) and BoxPostProcessor."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvops

from detlab.errors import ConfigError
from detlab.ops.nms import nms
from detlab.postprocess.box_nms import BoxPostProcessor
from detlab.registry import POSTPROCESSORS


def random_detections(n: int, seed: int, classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 40 + 2], 1)
    return boxes, torch.rand(n, generator=g), torch.randint(0, classes, (n,), generator=g)


# -- standard -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_standard_matches_torchvision(seed):
    boxes, scores, labels = random_detections(300, seed)
    keep, kept = nms(boxes, scores, labels, "standard", 0.5)
    assert torch.equal(keep, tvops.batched_nms(boxes, scores, labels, 0.5))
    torch.testing.assert_close(kept, scores[keep])
    keep, _ = nms(boxes, scores, labels, "standard", 0.5, class_agnostic=True)
    assert torch.equal(keep, tvops.nms(boxes, scores, 0.5))
    keep, _ = nms(boxes, scores, None, "standard", 0.5)
    assert torch.equal(keep, tvops.nms(boxes, scores, 0.5))


def test_standard_many_boxes_matches_torchvision():
    # > 1000 boxes on CPU: one pass over class-offset float64 boxes instead of a class loop
    boxes, scores, labels = random_detections(3000, 7, classes=20)
    keep, _ = nms(boxes, scores, labels, "standard", 0.5)
    want = tvops.batched_nms(boxes, scores, labels, 0.5)
    # 3000 float32 uniforms hold a tie or two, which the two may order differently
    assert set(keep.tolist()) == set(want.tolist())
    assert torch.equal(scores[keep], scores[want])


# -- Soft-NMS -------------------------------------------------------------------------------------
A, B, C, D = [0, 0, 10, 10], [0, 0, 10, 8], [20, 20, 30, 30], [0, 0, 10, 9]
IOU_AB, IOU_AD, IOU_BD = 0.8, 0.9, 80 / 90


def _run(method, boxes, scores, labels=None, **kw):
    keep, kept = nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores), labels,
                     method, **kw)
    return keep.tolist(), kept.tolist()


def test_soft_gaussian_hand_example():
    keep, kept = _run("soft_gaussian", [A, B, C], [0.9, 0.8, 0.5], sigma=0.5)
    assert keep == [0, 2, 1]
    assert kept == pytest.approx([0.9, 0.5, 0.8 * math.exp(-(IOU_AB**2) / 0.5)], rel=1e-6)


def test_soft_gaussian_decays_sequentially():
    keep, kept = _run("soft_gaussian", [A, B, C, D], [0.9, 0.8, 0.5, 0.85], sigma=0.5)
    b = 0.8 * math.exp(-(IOU_AB**2) / 0.5)  # decayed by A
    d = 0.85 * math.exp(-(IOU_AD**2) / 0.5) * math.exp(-(IOU_BD**2) / 0.5)  # by A, then B
    assert keep == [0, 2, 1, 3]
    assert kept == pytest.approx([0.9, 0.5, b, d], rel=1e-5)


@pytest.mark.parametrize(
    "iou_threshold, score_threshold, keep, kept",
    [
        (0.3, 0.001, [0, 2, 1], [0.9, 0.5, 0.8 * (1 - IOU_AB)]),  # IoU 0.8 > 0.3: decayed
        (0.85, 0.001, [0, 1, 2], [0.9, 0.8, 0.5]),  # IoU 0.8 <= 0.85: untouched
        (0.3, 0.2, [0, 2], [0.9, 0.5]),  # decayed to 0.16 < 0.2: dropped
    ],
)
def test_soft_linear_hand_example(iou_threshold, score_threshold, keep, kept):
    got_keep, got_kept = _run("soft_linear", [A, B, C], [0.9, 0.8, 0.5],
                              iou_threshold=iou_threshold, score_threshold=score_threshold)
    assert got_keep == keep
    assert got_kept == pytest.approx(kept, rel=1e-6)


def test_soft_nms_is_per_class():
    keep, kept = _run("soft_gaussian", [A, B], [0.9, 0.8], labels=torch.tensor([0, 1]))
    assert keep == [0, 1] and kept == pytest.approx([0.9, 0.8])
    keep, kept = _run("soft_gaussian", [A, B], [0.9, 0.8], labels=torch.tensor([0, 1]),
                      class_agnostic=True)
    assert kept[1] < 0.8


def reference_soft_nms(boxes, scores, sigma, iou_threshold, score_threshold, linear):
    """Bodla et al. 2017, Algorithm 1, written as plainly as possible."""
    iou_matrix, scores = tvops.box_iou(boxes, boxes).tolist(), scores.tolist()
    remaining = list(range(len(scores)))
    s = {i: scores[i] for i in remaining}
    out = []
    while remaining:
        m = max(remaining, key=lambda i: (s[i], -i))
        out.append((m, s[m]))
        remaining.remove(m)
        for i in list(remaining):
            u = iou_matrix[m][i]
            if linear:
                s[i] = s[i] * (1 - u) if u > iou_threshold else s[i]
            else:
                s[i] = s[i] * math.exp(-u * u / sigma)
            if s[i] < score_threshold:
                remaining.remove(i)
    return [m for m, _ in out], [v for _, v in out]


@pytest.mark.parametrize("method", ["soft_gaussian", "soft_linear"])
def test_soft_nms_matches_reference(method):
    boxes, scores, _ = random_detections(60, 3)
    keep, kept = nms(boxes, scores, None, method, iou_threshold=0.3, sigma=0.5,
                     score_threshold=0.05)
    ref_keep, ref_kept = reference_soft_nms(boxes, scores, 0.5, 0.3, 0.05,
                                            linear=method == "soft_linear")
    assert keep.tolist() == ref_keep
    assert kept.tolist() == pytest.approx(ref_kept, rel=1e-5)


# -- DIoU-NMS -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, threshold, keep",
    [
        # A, B: IoU 0.6, centre distance² 4, enclosing diagonal² 200 → DIoU 0.58
        ("standard", 0.59, [0]),
        ("diou", 0.59, [0, 1]),
        ("diou", 0.57, [0]),
    ],
)
def test_diou_nms_hand_example(method, threshold, keep):
    got, _ = _run(method, [[0, 0, 10, 10], [0, 0, 10, 6]], [0.9, 0.8], iou_threshold=threshold)
    assert got == keep


def test_diou_nms_matches_reference():
    boxes, scores, labels = random_detections(200, 4)
    diou = tvops.distance_box_iou(boxes, boxes).tolist()
    order, labels_list = scores.argsort(descending=True).tolist(), labels.tolist()
    suppressed, ref = set(), []
    for i in order:  # greedy, per class
        if i in suppressed:
            continue
        ref.append(i)
        suppressed |= {j for j in order if labels_list[j] == labels_list[i] and diou[i][j] > 0.4}
    keep, _ = nms(boxes, scores, labels, "diou", 0.4)
    assert keep.tolist() == ref


@pytest.mark.parametrize("method", ["standard", "soft_gaussian", "soft_linear", "diou"])
def test_max_keep_is_a_prefix(method):
    boxes, scores, labels = random_detections(120, 5)
    full, full_scores = nms(boxes, scores, labels, method, 0.5)
    first, first_scores = nms(boxes, scores, labels, method, 0.5, max_keep=7)
    assert torch.equal(first, full[:7])
    torch.testing.assert_close(first_scores, full_scores[:7])


def test_nms_rejects_unknown_method():
    with pytest.raises(ValueError, match="matrix"):
        nms(torch.zeros(1, 4), torch.ones(1), method="matrix")


# -- post-processor ---------------------------------------------------------------------------
def grid_boxes(n: int) -> torch.Tensor:
    """``n`` disjoint 10x10 boxes."""
    x = torch.arange(n, dtype=torch.float32) * 20
    return torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], 1)


def test_multi_label_and_threshold():
    boxes = grid_boxes(2)
    scores = torch.tensor([[0.9, 0.6, 0.1], [0.2, 0.05, 0.3]])
    out_boxes, out_scores, out_labels = BoxPostProcessor(score_threshold=0.25)(boxes, scores)
    assert out_scores.tolist() == pytest.approx([0.9, 0.6, 0.3])
    assert out_labels.tolist() == [0, 1, 2]
    torch.testing.assert_close(out_boxes, boxes[[0, 0, 1]])
    _, single_scores, single_labels = BoxPostProcessor(score_threshold=0.25, multi_label=False)(
        boxes, scores
    )
    assert single_scores.tolist() == pytest.approx([0.9, 0.3]) and single_labels.tolist() == [0, 2]


@pytest.mark.parametrize("pre_nms_topk, max_detections, expected", [
    (3, 300, [0.9, 0.8, 0.7]),
    (300, 4, [0.9, 0.8, 0.7, 0.6]),
    (5, 2, [0.9, 0.8]),
])
def test_topk_and_max_detections(pre_nms_topk, max_detections, expected):
    scores = torch.tensor([0.3, 0.9, 0.5, 0.8, 0.6, 0.7, 0.4, 0.2])[:, None]
    post = BoxPostProcessor(pre_nms_topk=pre_nms_topk, max_detections=max_detections)
    _, out_scores, _ = post(grid_boxes(8), scores)
    assert out_scores.tolist() == pytest.approx(expected)


def test_nms_is_per_class_unless_agnostic():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [1, 0, 10, 10]])
    scores = torch.tensor([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]])
    _, _, labels = BoxPostProcessor(iou_threshold=0.5)(boxes, scores)
    assert labels.tolist() == [0, 1]
    _, _, labels = BoxPostProcessor(iou_threshold=0.5, class_agnostic=True)(boxes, scores)
    assert labels.tolist() == [0]


def reference_postprocess(boxes, scores, thr, topk, iou, max_det):
    """Straightforward: every (box, class) over thr, top-k, per-class torchvision NMS, cut."""
    cand = [(s, i, c) for i in range(scores.shape[0]) for c in range(scores.shape[1])
            if (s := scores[i, c].item()) > thr]
    cand = sorted(cand, key=lambda t: -t[0])[:topk]
    kept = []
    for c in {c for _, _, c in cand}:
        rows = [(s, i) for s, i, cc in cand if cc == c]
        b = boxes[[i for _, i in rows]]
        s = torch.tensor([s for s, _ in rows])
        kept += [(rows[k][0], rows[k][1], c) for k in tvops.nms(b, s, iou).tolist()]
    return sorted(kept, key=lambda t: -t[0])[:max_det]


@pytest.mark.parametrize("method", ["standard", "diou", "soft_gaussian"])
def test_batched_equals_per_image_and_reference(method):
    g = torch.Generator().manual_seed(6)
    boxes = random_detections(4 * 50, 6)[0].reshape(4, 50, 4)
    scores = torch.rand(4, 50, 3, generator=g) ** 3
    scores[2] = 0.0  # an image with nothing over the threshold
    post = BoxPostProcessor(score_threshold=0.05, pre_nms_topk=60, max_detections=20,
                            iou_threshold=0.5, method=method)
    batched = post.batched(boxes, scores)
    as_list = post.batched(list(boxes), list(scores))
    for i in range(4):
        single = post(boxes[i], scores[i])
        for got in (batched[i], as_list[i]):
            for a, b in zip(got, single):
                assert torch.equal(a, b)
        if method == "standard":
            ref = reference_postprocess(boxes[i], scores[i], 0.05, 60, 0.5, 20)
            assert single[1].tolist() == pytest.approx([s for s, _, _ in ref])
            assert single[2].tolist() == [c for _, _, c in ref]
    assert batched[2][0].shape == (0, 4)
    assert len(batched[0][1]) == 20


def test_prefix_is_lengthened_when_short_of_max_detections():
    # 3000 copies of one box outrank 40 disjoint boxes: the first 1024-candidate prefix keeps a
    # single box, so the post-processor must look further to return 30 detections.
    dup = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(3000, 1)
    boxes = torch.cat([dup, grid_boxes(41)[1:] + 100])
    scores = torch.cat([0.5 + 0.4 * torch.rand(3000, generator=torch.Generator().manual_seed(8)),
                        torch.linspace(0.45, 0.1, 40)])[:, None]
    post = BoxPostProcessor(score_threshold=0.05, max_detections=30, iou_threshold=0.5)
    out_boxes, out_scores, _ = post(boxes, scores)
    ref = reference_postprocess(boxes, scores, 0.05, 30000, 0.5, 30)
    assert out_scores.tolist() == pytest.approx([s for s, _, _ in ref])
    torch.testing.assert_close(out_boxes, boxes[[i for _, i, _ in ref]])
    assert len(out_scores) == 30 and out_scores[0] == scores[:3000].max()


def test_empty_inputs():
    post = BoxPostProcessor()
    out = post(torch.zeros(0, 4), torch.zeros(0, 5))
    assert [t.shape for t in out] == [(0, 4), (0,), (0,)]
    assert out[2].dtype == torch.long


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"pre_nms_topk": 0}, "pre_nms_topk"),
        ({"max_detections": 2.0}, "max_detections"),
        ({"method": "soft"}, "method"),
        ({"sigma": 0}, "sigma"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BoxPostProcessor(**kwargs)


def test_registered():
    post = POSTPROCESSORS.build({"type": "BoxPostProcessor", "method": "diou"})
    assert isinstance(post, BoxPostProcessor) and post.method == "diou"


# -- settings a method ignores, WBF, exact prefixes for Soft-NMS --------------------------------
@pytest.mark.parametrize("method, ignored", [
    ("soft_gaussian", {"iou_threshold"}), ("soft_linear", {"sigma"}), ("standard", {"sigma"}),
    ("diou", {"sigma"}),
])
def test_ignored_settings_name_what_the_method_ignores(method, ignored):
    post = BoxPostProcessor(method=method)
    assert set(post.ignored_settings()) == ignored
    assert set(post.ignored_settings()) <= set(BoxPostProcessor.sweepable)
    if method == "soft_gaussian":  # and it really is ignored
        boxes, scores, _ = random_detections(80, 9)
        outs = [BoxPostProcessor(method=method, iou_threshold=t)(boxes, scores[:, None])
                for t in (0.2, 0.8)]
        assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_wbf_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="weighted_boxes_fusion"):
        BoxPostProcessor(method="wbf")


@pytest.mark.parametrize("method", ["soft_gaussian", "soft_linear", "diou"])
def test_prefix_is_exact_for_soft_and_diou(method):
    # 3000 near-copies of one box outrank 40 disjoint ones: Soft-NMS decays the copies below
    # the disjoint boxes, so the 1024-candidate prefix is not enough and must be lengthened.
    g = torch.Generator().manual_seed(3)
    dup = torch.tensor([[0.0, 0.0, 10.0, 10.0]]) + torch.rand(3000, 4, generator=g) * 0.5
    boxes = torch.cat([dup, grid_boxes(41)[1:] + 100])
    scores = torch.cat([0.5 + 0.4 * torch.rand(3000, generator=g),
                        torch.linspace(0.45, 0.1, 40)])[:, None]
    post = BoxPostProcessor(score_threshold=0.05, max_detections=30, iou_threshold=0.5,
                            method=method)
    out_boxes, out_scores, _ = post(boxes, scores)
    order = scores[:, 0].argsort(descending=True, stable=True)
    keep, kept = nms(boxes[order], scores[order, 0], None, method, 0.5,
                     score_threshold=0.05, max_keep=30)
    assert torch.equal(out_scores, kept) and torch.equal(out_boxes, boxes[order][keep])
    assert len(out_scores) == 30


# -- tie order and continued prefixes -------------------------------------------------------------
def _stable_candidates(scores, threshold, multi_label):
    """All candidates over ``threshold`` in a full stable descending sort (the oracle order)."""
    if multi_label:
        v, idx = scores.reshape(-1).sort(descending=True, stable=True)
        box, lab = idx // scores.shape[1], idx % scores.shape[1]
    else:
        best, labels = scores.max(dim=1)
        v, box = best.sort(descending=True, stable=True)
        lab = labels[box]
    ok = v > threshold
    return v[ok], box[ok], lab[ok]


@pytest.mark.parametrize("multi_label, dtype", [(True, torch.float32), (False, torch.float32),
                                                (True, torch.float64)])
def test_candidates_are_a_stable_sort_prefix(multi_label, dtype):
    # float32: one sort of an int64 (bits, index) key; other dtypes: two stable sorts
    g = torch.Generator().manual_seed(11)
    scores = (torch.rand(2, 700, 3, generator=g) * 9).floor() / 9 + 0.01  # 10 levels: ties
    scores = scores.to(dtype)
    post = BoxPostProcessor(score_threshold=0.001, multi_label=multi_label)
    for k in (5, 333, 700, 2100 if multi_label else 700):
        values, box, labels = post.candidates(scores, k)
        for r in range(2):
            v, b, lab = _stable_candidates(scores[r], 0.001, multi_label)
            assert torch.equal(values[r], v[:k]) and torch.equal(box[r], b[:k])
            assert torch.equal(labels[r], lab[:k])


def _clustered(seed, clusters=3, copies=2500, classes=2, levels=None):
    """``copies`` jittered copies of a few boxes outrank scattered small boxes, so a short
    prefix keeps few detections and NMS has to continue past it."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(clusters, 2, generator=g) * 400
    pick = torch.randint(0, clusters, (copies,), generator=g)
    xy = centres[pick] + torch.rand(copies, 2, generator=g) * 3
    dup = torch.cat([xy, xy + 40 + torch.rand(copies, 2, generator=g) * 3], 1)
    xy = torch.rand(2500, 2, generator=g) * 600
    scattered = torch.cat([xy, xy + 4 + torch.rand(2500, 2, generator=g) * 8], 1)
    boxes = torch.cat([dup, scattered])
    scores = torch.cat([0.5 + 0.5 * torch.rand(copies, classes, generator=g),
                        0.5 * torch.rand(2500, classes, generator=g)])
    if levels:
        scores = (scores * levels).ceil() / levels
    return boxes, scores


@pytest.mark.parametrize("method, agnostic, multi_label, levels", [
    ("standard", False, True, None), ("standard", False, True, 40),
    ("standard", True, True, 40), ("standard", False, False, 25), ("diou", False, True, 40)])
def test_continued_prefix_equals_one_pass_over_all_candidates(method, agnostic, multi_label,
                                                               levels, monkeypatch):
    calls = []
    original = BoxPostProcessor._continue_hard
    monkeypatch.setattr(BoxPostProcessor, "_continue_hard",
                        lambda self, *a: calls.append(1) or original(self, *a))
    post = BoxPostProcessor(score_threshold=0.01, max_detections=300, iou_threshold=0.6,
                            method=method, class_agnostic=agnostic, multi_label=multi_label)
    for seed in (0, 1):
        boxes, scores = _clustered(seed, levels=levels)
        got = post(boxes, scores)
        v, b, lab = _stable_candidates(scores, 0.01, multi_label)
        keep, kept = nms(boxes[b], v, lab, method, 0.6, class_agnostic=agnostic, max_keep=300)
        assert len(keep) == 300
        assert torch.equal(got[0], boxes[b][keep]) and torch.equal(got[1], kept)
        assert torch.equal(got[2], lab[keep])
    assert len(calls) == 2  # both images went past the first prefix


def test_candidates_order_zero_and_negative_zero_as_equal():
    # -0.0 == 0.0, but its float bits are negative: the int64-key sort must not be used
    scores = torch.tensor([[[0.0], [-0.0], [0.5], [0.0], [-0.0], [0.5]]]).reshape(1, 6, 1)
    post = BoxPostProcessor(score_threshold=0.0)
    for k in (3, 5, 6):
        _, box, _ = post.candidates(scores, k)
        order = scores.reshape(-1).sort(descending=True, stable=True).indices
        assert box[0].tolist() == order[:k].tolist()


def _spread(seed, n=3000, classes=2):
    """Scattered boxes that barely overlap: 300 detections are kept after ~300 candidates."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 2000
    return torch.cat([xy, xy + 5], 1), torch.rand(n, classes, generator=g)


def _oracle(boxes, scores, threshold=0.01, iou=0.6, max_det=300):
    """One NMS pass over all candidates, and the prefix it needed (up to its max_det-th)."""
    v, b, lab = _stable_candidates(scores, threshold, True)
    keep, kept = nms(boxes[b], v, lab, "standard", iou, max_keep=max_det)
    needed = int(keep[max_det - 1]) + 1 if len(keep) >= max_det else len(v)
    return (boxes[b][keep], kept, lab[keep]), needed


def test_planned_prefix_learns_what_images_need_and_never_changes_detections(monkeypatch):
    calls = []
    original = BoxPostProcessor._continue_hard
    monkeypatch.setattr(BoxPostProcessor, "_continue_hard",
                        lambda self, *a: calls.append(1) or original(self, *a))
    post = BoxPostProcessor(score_threshold=0.01, max_detections=300, iou_threshold=0.6)
    limit = 5000 * 2
    assert post.planned_prefix(limit) == post.first_prefix(limit) == 1200  # nothing seen yet
    # 6 images that need few candidates, then 2 that need many: the plan learnt from the
    # first ones is short for the last ones, which continue past it
    images = [_spread(s, n=5000) for s in range(6)] + [_clustered(s) for s in (7, 8)]
    needed_seen, plans = [], []
    for batch in (images[:4], images[4:6], images[6:]):
        plans.append(post.planned_prefix(limit))
        boxes = torch.stack([b for b, _ in batch])
        scores = torch.stack([s for _, s in batch])
        got = post.batched(boxes, scores)
        for (b, s), out in zip(batch, got):
            expected, needed = _oracle(b, s)
            needed_seen.append(needed)
            assert all(torch.equal(x, y) for x, y in zip(out, expected))
    assert list(post._needed) == needed_seen
    assert max(needed_seen[:6]) < 400 and min(needed_seen[6:]) > 1200  # first_prefix
    # the first batch starts at first_prefix, later ones at the median of what came before
    assert plans == [1200, max(300, sorted(needed_seen[:4])[2]),
                     max(300, sorted(needed_seen[:6])[3])]
    assert post.planned_prefix(limit) == max(300, sorted(needed_seen)[4])
    # continued: exactly the images that needed more than their batch's plan
    short = [n > plans[1] for n in needed_seen[4:6]] + [n > plans[2] for n in needed_seen[6:]]
    assert short[2:] == [True, True] and len(calls) == sum(short)


# -- evaluated_per_class: stop at what an evaluator reads -------------------------------------
def _copies(seed, distinct=400, copies=10, classes=2):
    """``copies`` jittered copies of ``distinct`` separate boxes, each copy scoring a little
    under the one before: about one candidate in ``copies`` is kept, so 100 detections of a
    class need far fewer candidates than 300 of all."""
    g = torch.Generator().manual_seed(seed)
    side = math.ceil(distinct ** 0.5)
    grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1)
    xy = (grid.reshape(-1, 2)[:distinct] * 50).float().repeat_interleave(copies, 0)
    xy = xy + torch.rand(xy.shape, generator=g)
    boxes = torch.cat([xy, xy + 30], 1)
    base = 0.1 + 0.8 * torch.rand(distinct, classes, generator=g)
    step = 1e-3 * torch.arange(copies).repeat(distinct)[:, None]
    return boxes, base.repeat_interleave(copies, 0) - step


def _per_class_prefixes(detections, cap):
    """Each class's first ``min(cap, n_c)`` detections (boxes, scores), as COCOeval reads."""
    boxes, scores, labels = detections
    return {int(c): (boxes[labels == c][:cap], scores[labels == c][:cap])
            for c in labels.unique()}


@pytest.mark.parametrize("classes, multi_label, method, agnostic", [
    (1, True, "standard", False), (2, True, "standard", False), (2, False, "standard", False),
    (2, True, "standard", True), (2, True, "diou", False)])
def test_evaluated_per_class_keeps_what_the_evaluator_reads(classes, multi_label, method,
                                                           agnostic):
    full = BoxPostProcessor(score_threshold=0.01, max_detections=300, iou_threshold=0.6,
                            method=method, class_agnostic=agnostic, multi_label=multi_label)
    capped = BoxPostProcessor(score_threshold=0.01, max_detections=300, iou_threshold=0.6,
                              method=method, class_agnostic=agnostic, multi_label=multi_label)
    capped.evaluated_per_class = 100
    shorter = 0
    for seed in range(6):  # later images start from the planned prefix
        boxes, scores = _copies(seed, distinct=600, classes=classes)
        want, got = full(boxes, scores), capped(boxes, scores)
        n = len(got[0])
        # a prefix of the full output, with each class's first 100 (or all it has)
        assert all(torch.equal(g, w[:n]) for g, w in zip(got, want))
        w, g = _per_class_prefixes(want, 100), _per_class_prefixes(got, 100)
        assert w.keys() == g.keys()
        assert all(torch.equal(w[c][0], g[c][0]) and torch.equal(w[c][1], g[c][1]) for c in w)
        shorter += n < len(want[0])
        # what it recorded as needed: up to the later of each class's 100th detection
        v, b, lab = _stable_candidates(scores, 0.01, multi_label)
        keep, _ = nms(boxes[b], v, lab, method, 0.6, class_agnostic=agnostic, max_keep=300)
        ends = [int(keep[lab[keep] == c][99]) + 1 for c in range(classes)]
        assert capped._needed[-1] == min(max(ends), int(keep[299]) + 1)
    assert shorter == 6  # every image stopped before 300 detections
    assert sorted(capped._needed) < sorted(full._needed)


def test_evaluated_per_class_waits_for_a_class_that_has_few_detections():
    # class 1 has only 5 candidates: it never gets 100, so NMS runs on to 300 (the full output)
    boxes, scores = _copies(0, classes=2)
    scores[:, 1] = 0.0
    scores[:5, 1] = 0.95
    full = BoxPostProcessor(score_threshold=0.01, max_detections=300, iou_threshold=0.6)
    capped = BoxPostProcessor(score_threshold=0.01, max_detections=300, iou_threshold=0.6)
    capped.evaluated_per_class = 100
    want, got = full(boxes, scores), capped(boxes, scores)
    assert len(want[0]) == 300 and all(torch.equal(g, w) for g, w in zip(got, want))


def test_evaluated_per_class_gives_the_coco_numbers_of_the_full_output():
    from detlab.evaluation.coco import CocoEvaluator
    from detlab.structures import Batch, Prediction

    full = BoxPostProcessor(score_threshold=0.01, max_detections=300, iou_threshold=0.5)
    capped = BoxPostProcessor(score_threshold=0.01, max_detections=300, iou_threshold=0.5)
    evaluators = [CocoEvaluator(num_classes=2, relative_areas=None) for _ in range(2)]
    capped.evaluated_per_class = evaluators[1].detections_read_per_class()
    assert capped.evaluated_per_class == 100
    lengths = []
    for seed in range(4):
        boxes, scores = _copies(seed, classes=2)
        g = torch.Generator().manual_seed(seed)
        gt = boxes[torch.randint(0, 4000, (40,), generator=g)] + 1.5
        meta = [{"image_id": seed, "orig_size": (700, 700), "scale": (1.0, 1.0)}]
        batch = Batch(images=torch.zeros(1, 3, 8, 8), meta=meta,
                      targets=[{"boxes": gt, "labels": torch.tensor([0, 1] * 20)}])
        for post, ev in zip((full, capped), evaluators):
            b, s, lab = post(boxes, scores)
            ev.update([Prediction(boxes=b, scores=s, labels=lab)], batch)
            lengths.append(len(b))
    want, got = evaluators[0].compute(), evaluators[1].compute()
    assert want.keys() == got.keys() and want["AP"] > 0
    assert all(got[k] == want[k] or (got[k] != got[k] and want[k] != want[k]) for k in want)
    assert max(lengths[1::2]) < 300 == min(lengths[0::2])
