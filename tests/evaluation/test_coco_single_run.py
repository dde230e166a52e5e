"""CocoEvaluator's shortcuts (one COCOeval run for absolute and relative buckets when the images
share a size; detections past ``max_dets`` per class dropped before the COCO dicts) give the
numbers of the plain evaluation: every area kind in its own pycocotools run over every
detection, as the evaluator computed them before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coco_cases import feed, random_images

import detlab.evaluation.coco as coco_mod
from detlab.evaluation.coco import HELMET_RELATIVE_AREAS, CocoEvaluator
from detlab.evaluation.coco_api import (
    COCO_AREA_RANGES,
    build_coco_dicts,
    evaluate_bbox,
    mean_valid,
    relative_as_absolute,
    top_detections,
)
from detlab.structures import Batch, Prediction


def two_runs(records, num_classes, relative, max_dets, backend="pycocotools"):
    """The evaluation without shortcuts: {metric: COCO value (-1 undefined)}."""
    gt, dt = build_coco_dicts(records, num_classes, area="absolute")
    prec, rec = evaluate_bbox(gt, dt, COCO_AREA_RANGES, max_dets, backend)
    out = {"AP": mean_valid(prec[:, :, :, 0, -1]), "AP50": mean_valid(prec[0, :, :, 0, -1]),
           "AP75": mean_valid(prec[5, :, :, 0, -1])}
    for a, name in enumerate(("small", "medium", "large"), start=1):
        out[f"AP_{name}"] = mean_valid(prec[:, :, :, a, -1])
        out[f"AR_{name}"] = mean_valid(rec[:, :, a, -1])
    for m, md in enumerate(max_dets):
        out[f"AR{md}"] = mean_valid(rec[:, :, 0, m])
    for k in range(num_classes):
        out[f"AP/class_{k}"] = mean_valid(prec[:, :, k, 0, -1])
    gt, dt = build_coco_dicts(records, num_classes, area="relative")
    prec, _ = evaluate_bbox(gt, dt, relative, max_dets, backend)
    for a, name in enumerate(relative):
        out[f"AP_rel_{name}"] = mean_valid(prec[:, :, :, a, -1])
    return out


def assert_same(metrics, expected):
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        want = float("nan") if value <= -1 else value
        assert metrics[key] == pytest.approx(want, abs=1e-12, nan_ok=True), key


def counting(monkeypatch):
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(args[2])
        return evaluate_bbox(*args, **kwargs)

    monkeypatch.setattr(coco_mod, "evaluate_bbox", wrapped)
    return calls


def boundary_images():
    """Image 50 x 51 (area 2550): a box of area 2.55 is at 0.001 of it, in the relative tiny
    *and* small buckets (inclusive bounds), while 2.55 < 0.001 * 2550 = 2.5500000000000003, so
    the scaled range [lo * A, hi * A] would leave it out of small."""
    gt = torch.tensor([[0.0, 0.0, 2.55, 1.0], [10.0, 10.0, 20.0, 22.75]], dtype=torch.float64)
    dt = torch.tensor([[0.0, 0.0, 2.55, 1.0], [10.5, 10.0, 20.0, 22.0], [30.0, 30.0, 40.0, 41.0]],
                      dtype=torch.float64)
    pred = Prediction(boxes=dt, scores=torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64),
                      labels=torch.tensor([0, 0, 0]))
    target = {"boxes": gt, "labels": torch.tensor([0, 0]), "ignore": torch.tensor([False, False])}
    meta = {"image_id": 0, "orig_size": (50, 51), "scale": (1.0, 1.0)}
    return [pred], Batch(images=torch.zeros(1, 3, 4, 4), targets=[target], meta=[meta])


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_relative_bucket_bounds_are_exact_in_the_single_run(backend, monkeypatch):
    if backend == "faster_coco_eval":
        pytest.importorskip("faster_coco_eval")
    ev = CocoEvaluator(backend=backend)
    ev.update(*boundary_images())
    calls = counting(monkeypatch)
    metrics = ev.compute()
    assert len(calls) == 1 and len(calls[0]) == 8  # one run: 4 absolute + 4 relative ranges
    assert_same(metrics, two_runs(ev._records, 1, HELMET_RELATIVE_AREAS, [1, 10, 100], backend))
    assert metrics["AP_rel_small"] == pytest.approx(1.0)  # the 2.55 px² box, found
    scaled = {k: (lo * 2550, hi * 2550) for k, (lo, hi) in HELMET_RELATIVE_AREAS.items()}
    assert relative_as_absolute(ev._records, HELMET_RELATIVE_AREAS)["small"][0] == 2.55
    assert scaled["small"][0] > 2.55  # what a plain scaling would have got wrong


@pytest.mark.parametrize("seed", [3, 4])
def test_single_run_equals_two_runs_on_one_image_size(seed, monkeypatch):
    ev = CocoEvaluator()
    feed(ev, random_images(seed, n=8, size=(300, 400)))
    calls = counting(monkeypatch)
    metrics = ev.compute()
    assert len(calls) == 1
    assert_same(metrics, two_runs(ev._records, 3, HELMET_RELATIVE_AREAS, [1, 10, 100]))
    assert any(metrics[f"AP_rel_{k}"] > 0 for k in HELMET_RELATIVE_AREAS)


def test_mixed_image_sizes_take_two_runs_with_the_same_numbers(monkeypatch):
    ev = CocoEvaluator()
    feed(ev, random_images(5, n=8))  # sizes differ
    calls = counting(monkeypatch)
    metrics = ev.compute()
    assert len(calls) == 2
    assert_same(metrics, two_runs(ev._records, 3, HELMET_RELATIVE_AREAS, [1, 10, 100]))


def crowded_images(seed: int, n: int = 4):
    """Many detections per image and class, with tied scores, so ``max_dets`` cuts ties."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        gt = rng.uniform(0, 150, (6, 2))
        gt = np.concatenate([gt, gt + rng.uniform(8, 60, (6, 2))], 1)
        dt = np.repeat(gt, 5, axis=0) + rng.normal(0, 3, (30, 4))
        scores = rng.choice([0.2, 0.5, 0.9], 30)  # many ties
        pred = Prediction(boxes=torch.tensor(dt), scores=torch.tensor(scores),
                          labels=torch.tensor(rng.integers(0, 2, 30)))
        target = {"boxes": torch.tensor(gt), "labels": torch.tensor(rng.integers(0, 2, 6)),
                  "ignore": torch.zeros(6, dtype=torch.bool)}
        meta = {"image_id": i, "orig_size": (200, 220), "scale": (1.0, 1.0)}
        out.append(([pred], Batch(images=torch.zeros(1, 3, 4, 4), targets=[target], meta=[meta])))
    return out


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_dropping_detections_past_max_dets_keeps_the_numbers(backend):
    if backend == "faster_coco_eval":
        pytest.importorskip("faster_coco_eval")
    ev = CocoEvaluator(max_dets=7, num_classes=2, backend=backend)
    for pred, batch in crowded_images(6):
        ev.update(pred, batch)
    metrics = ev.compute()
    full = ev._records
    assert all(len(r["dt_scores"]) == 30 for r in full)  # curve data keeps every detection
    assert_same(metrics, two_runs(full, 2, HELMET_RELATIVE_AREAS, [1, 7], backend))


def test_top_detections_keeps_the_best_per_class_in_input_order():
    rec = {"image_id": 0, "height": 10, "width": 10,
           "gt_boxes": np.zeros((0, 4)), "gt_labels": np.zeros(0, np.int64),
           "gt_ignore": np.zeros(0, bool),
           "dt_boxes": np.arange(28, dtype=np.float64).reshape(7, 4),
           "dt_scores": np.array([0.5, 0.9, 0.5, 0.1, 0.5, 0.7, 0.5]),
           "dt_labels": np.array([0, 0, 0, 1, 0, 1, 1])}
    (out,) = top_detections([rec], 2)
    # class 0: 0.9 (index 1), then the first 0.5 (index 0); class 1: 0.7 (5), 0.5 (6)
    np.testing.assert_array_equal(out["dt_scores"], [0.5, 0.9, 0.7, 0.5])
    np.testing.assert_array_equal(out["dt_labels"], [0, 0, 1, 1])
    np.testing.assert_array_equal(out["dt_boxes"], rec["dt_boxes"][[0, 1, 5, 6]])
    assert top_detections([rec], 4)[0] is rec  # nothing to drop: the record itself


@pytest.mark.parametrize("seed", [1, 7])
def test_faster_coco_eval_without_coco_indexes_gives_the_same_arrays(seed):
    pytest.importorskip("faster_coco_eval")
    from detlab.evaluation.coco_api import _faster_cocoeval, _run, load_backend

    ev = CocoEvaluator()
    images = random_images(seed, n=8)  # ignore (crowd) gts, images without detections
    images[2]["dt"], images[2]["scores"] = images[2]["dt"][:0], images[2]["scores"][:0]
    images[2]["dt_labels"] = images[2]["dt_labels"][:0]
    feed(ev, images)
    gt, dt = build_coco_dicts(ev._records, 3, area="absolute")
    assert any(g["iscrowd"] for g in gt["annotations"])
    coco_cls, eval_cls = load_backend("faster_coco_eval")
    runs = []
    for lean in (True, False):
        cocoeval = _faster_cocoeval(coco_cls, eval_cls, gt, dt, lean=lean)
        assert (type(cocoeval) is eval_cls) is not lean  # the lean class, or the library's
        _run(cocoeval, COCO_AREA_RANGES, [1, 10, 100])
        runs.append(cocoeval.eval)
    for key in ("precision", "recall", "scores"):
        np.testing.assert_array_equal(runs[0][key], runs[1][key])
    slow, _ = evaluate_bbox(gt, dt, COCO_AREA_RANGES, [1, 10, 100], "pycocotools")
    np.testing.assert_allclose(runs[0]["precision"], slow, rtol=0, atol=1e-12)
