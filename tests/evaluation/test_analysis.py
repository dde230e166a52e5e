"""detlab.evaluation.analysis on hand-made cases: greedy matching, px errors, size buckets, AP
per IoU threshold against pycocotools run directly, and the GT-noise ceiling with known
answers (no jitter -> 1, jitter far beyond the box -> ~0, a 1 px edge shift -> 0.9)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detlab.evaluation.analysis import (
    IOU_THRESHOLDS,
    ap_per_threshold,
    box_iou,
    bucket_masks,
    ceiling_records,
    error_summary,
    jitter_boxes,
    match_greedy,
    match_records,
    noise_ceiling,
)


def record(gt, dt=(), scores=(), gt_labels=None, dt_labels=None, ignore=None, image_id=1,
           size=(100, 100)):
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    dt = np.asarray(dt, np.float64).reshape(-1, 4)
    return {"image_id": image_id, "height": size[0], "width": size[1], "gt_boxes": gt,
            "gt_labels": np.zeros(len(gt), np.int64) if gt_labels is None
            else np.asarray(gt_labels, np.int64),
            "gt_ignore": np.zeros(len(gt), bool) if ignore is None else np.asarray(ignore),
            "dt_boxes": dt, "dt_scores": np.asarray(scores, np.float64),
            "dt_labels": np.zeros(len(dt), np.int64) if dt_labels is None
            else np.asarray(dt_labels, np.int64)}


def test_greedy_matching_by_score_best_iou_same_class_not_ignored():
    gt = [[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60], [80, 80, 90, 90]]
    dt = [[1, 0, 11, 10],     # score .9: IoU 9/11 with both gt 0 and gt 1 -> first one (argmax)
          [2, 0, 12, 10],     # score .8: gt 1 (IoU 1)
          [0, 0, 10, 10],     # score .7: gt 0 is taken, gt 1 too -> unmatched
          [50, 50, 60, 60],   # score .95 but class 1: no match
          [80, 80, 90, 90],   # gt 3 is ignored: no match
          [50, 50, 56, 60]]   # score .5: IoU 0.6 with gt 2 -> matched at 0.5, not at 0.7
    labels_dt = [0, 0, 0, 1, 0, 0]
    g, d, v = match_greedy(np.array(gt), np.zeros(4), np.array(dt),
                           np.array([.9, .8, .7, .95, .6, .5]), np.array(labels_dt), 0.5,
                           np.array([False, False, False, True]))
    assert g.tolist() == [0, 1, 2] and d.tolist() == [0, 1, 5]
    np.testing.assert_allclose(v, [90 / 110, 1.0, 0.6])
    g, d, _ = match_greedy(np.array(gt), np.zeros(4), np.array(dt),
                           np.array([.9, .8, .7, .95, .6, .5]), np.array(labels_dt), 0.7)
    assert 5 not in d.tolist() and 4 in d.tolist()  # not ignored now: gt 3 is matched


def test_offsets_and_size_errors_in_pixels():
    rec = record([[10, 10, 20, 30]], [[12, 11, 22, 33]], [0.9])
    pairs = match_records([rec])
    e = pairs.errors()
    assert e["dx"][0] == 2 and e["dy"][0] == 2 and e["dw"][0] == 0 and e["dh"][0] == 2
    assert e["offset"][0] == pytest.approx(np.hypot(2, 2))
    s = error_summary(pairs)
    assert s["all"]["n"] == 1 and s["all"]["abs_dh_median"] == 2.0
    assert s["all"]["iou_median"] == pytest.approx(box_iou(rec["dt_boxes"], rec["gt_boxes"])[0, 0])
    assert s["medium"]["n"] == 0 and np.isnan(s["medium"]["offset_median"])


def test_bucket_masks_absolute_and_relative():
    boxes = np.array([[0, 0, 31, 31], [0, 0, 32, 32], [0, 0, 96, 96], [0, 0, 30, 30]])
    m = bucket_masks(boxes, 1000.0 * 1000.0)  # 961, 1024, 9216, 900 px² of 1e6
    assert m["small"].tolist() == [True, False, False, True]
    assert m["medium"].tolist() == [False, True, False, False]
    assert m["large"].tolist() == [False, False, True, False]
    assert m["rel_tiny"].tolist() == [True, False, False, True]      # < 0.1 %
    assert m["rel_small"].tolist() == [False, True, False, False]    # 0.1-0.5 %
    assert m["rel_medium"].tolist() == [False, False, True, False]   # 0.92 %


def _pycocotools(records, iou_thrs=None):
    """COCOeval run directly on COCO dicts built here, stats (12,)."""
    images, gts, dts = [], [], []
    for i, r in enumerate(records, 1):
        images.append({"id": i, "height": r["height"], "width": r["width"]})
        for b, lab in zip(r["gt_boxes"], r["gt_labels"]):
            w, h = b[2] - b[0], b[3] - b[1]
            gts.append({"id": len(gts) + 1, "image_id": i, "category_id": int(lab) + 1,
                        "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
        for b, s, lab in zip(r["dt_boxes"], r["dt_scores"], r["dt_labels"]):
            dts.append({"image_id": i, "category_id": int(lab) + 1, "score": float(s),
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": gts,
                      "categories": [{"id": 1}, {"id": 2}]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dts), "bbox")
        if iou_thrs is not None:
            ev.params.iouThrs = np.array(iou_thrs)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def _random_records(seed=0, n=6):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        xy = rng.uniform(0, 150, (5, 2))
        wh = rng.uniform(8, 60, (5, 2))
        gt = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, 2, 5)
        dt = jitter_boxes(gt, 2.0, rng)[:4]  # 4 of 5 found, 2 false positives
        fp = rng.uniform(0, 150, (2, 2))
        dt = np.concatenate([dt, np.concatenate([fp, fp + 20], 1)])
        out.append(record(gt, dt, rng.uniform(0, 1, len(dt)), labels,
                          np.r_[labels[:4], rng.integers(0, 2, 2)], image_id=i,
                          size=(240, 240)))
    return out


def test_ap_per_threshold_matches_pycocotools():
    recs = _random_records()
    ap = ap_per_threshold(recs, 2)
    stats = _pycocotools(recs)
    assert np.mean(ap["all"]) == pytest.approx(stats[0], abs=1e-9)  # AP 0.50:0.95
    assert ap["all"][0] == pytest.approx(stats[1], abs=1e-9)         # AP50
    assert ap["all"][5] == pytest.approx(stats[2], abs=1e-9)         # AP75
    for k, name in ((3, "small"), (4, "medium"), (5, "large")):
        assert np.mean(ap[name]) == pytest.approx(stats[k], abs=1e-9) or stats[k] == -1
    assert 0 < ap["all"][7] < ap["all"][0]  # a case where the threshold matters
    # one threshold on its own: COCOeval with iouThrs=[0.85] only
    assert ap["all"][7] == pytest.approx(_pycocotools(recs, [0.85])[0], abs=1e-9)


def test_ceiling_without_jitter_is_one():
    recs = _random_records()
    c = noise_ceiling(recs, 2, noise_px=0.0, seeds=2)
    m, s = c.maps["all"]
    assert m == pytest.approx(1.0) and s == 0.0
    assert all(np.allclose(v[v > -1], 1.0) for v in c.mean.values())


def test_ceiling_with_jitter_far_beyond_the_boxes_is_near_zero():
    gts = [record([[100 + 30 * k, 100, 108 + 30 * k, 108] for k in range(5)], size=(1000, 1000),
                  image_id=i) for i in range(4)]
    c = noise_ceiling(gts, 1, noise_px=200.0, seeds=3)
    assert c.maps["all"][0] < 0.02 and c.maps["rel_tiny"][0] < 0.02
    assert np.mean(c.oracle["all"]) < 0.05


def test_one_pixel_edge_shift_on_10px_boxes_gives_0_9():
    # IoU 100/110 = 0.909: a hit at 0.50 .. 0.90, a miss at 0.95 -> AP 9/10, for any ranking
    gt = [[10 * k, 0, 10 * k + 10, 10] for k in range(0, 60, 2)]
    dt = [[x1, y1, x2 + 1, y2] for x1, y1, x2, y2 in gt]
    rng = np.random.default_rng(0)
    recs = [record(gt, dt, rng.uniform(0, 1, len(dt)), size=(100, 1200))]
    ap = ap_per_threshold(recs, 1)
    np.testing.assert_allclose(ap["all"], [1.0] * 9 + [0.0])
    assert np.mean(ap["all"]) == pytest.approx(0.9)


def test_ceiling_records_jitter_is_bounded_and_oracle_is_the_hit_share():
    # 20 images x 10 separate 20x40 boxes (fewer than COCO's 100 detections per image)
    gt = np.array([[5.0 + 50 * k, 20, 25 + 50 * k, 60] for k in range(10)])
    recs = [record(gt, size=(100, 500), image_id=i) for i in range(20)]
    jit = ceiling_records(recs, 3.0, np.random.default_rng(1))
    assert max(np.abs(j["dt_boxes"] - gt).max() for j in jit) <= 3.0
    same = ceiling_records(recs, 3.0, np.random.default_rng(1), "oracle")
    for a, b in zip(same, jit):  # same seed, same jitter
        np.testing.assert_array_equal(a["dt_boxes"], b["dt_boxes"])
    iou = np.concatenate([np.diagonal(box_iou(j["dt_boxes"], gt)) for j in same])
    c = noise_ceiling(recs, 1, 3.0, seeds=1, first_seed=1)
    share = np.array([(iou >= t).mean() for t in IOU_THRESHOLDS])
    # hits ranked first: precision 1 up to recall = share, COCO's 101 recall points
    np.testing.assert_allclose(c.oracle["all"], share, atol=1 / 101 + 1e-9)
    assert np.all(c.mean["all"] <= c.oracle["all"] + 1e-9)  # uninformed ranking is below
