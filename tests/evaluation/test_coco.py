"""CocoEvaluator numbers: hand-computed APs, pycocotools run directly as an oracle,
relative-area buckets, image-id schemes, mapping ground truth back from input coordinates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from coco_cases import (
    FAR, GT, P101, STAT_KEYS, evaluate, feed, image, mean_valid, oracle, random_images,
)

import detlab.evaluation.coco as coco_mod
from detlab.errors import DataError
from detlab.evaluation.coco import CocoEvaluator
from detlab.structures import Batch, Prediction

NAN = float("nan")


def coco_value(x: float) -> float:
    """pycocotools' number as CocoEvaluator reports it: -1 (undefined) is NaN."""
    return NAN if float(x) == -1 else float(x)


# -- hand-computed cases ---------------------------------------------------------------------
HAND_CASES = {
    # 2 gts, one found with IoU 0.62 (matched at IoU thresholds .50 .55 .60 only): precision 1
    # up to recall 0.5 → 51 of 101 recall points.
    "one_of_two_iou_0.62": (
        [image(gt=[GT, FAR], dt=[[0, 0, 10, 6.2]])],
        {"AP50": P101, "AP75": 0.0, "AP": 0.3 * P101, "AR100": 0.15, "AR1": 0.15},
    ),
    # FP ranked above the only TP: precision 0.5 at recall 1, flat after interpolation.
    "fp_above_tp": (
        [image(gt=[GT], dt=[FAR, GT], scores=[0.9, 0.8])],
        {"AP": 0.5, "AP50": 0.5, "AR100": 1.0},
    ),
    "tp_above_fp": (
        [image(gt=[GT], dt=[FAR, GT], scores=[0.8, 0.9])],
        {"AP": 1.0, "AR100": 1.0},
    ),
    # An ignore gt neither needs a detection nor turns a detection on it into a FP.
    "ignored_gt_missed": (
        [image(gt=[GT, FAR], ignore=[False, True], dt=[GT])], {"AP": 1.0, "AR100": 1.0}
    ),
    "detection_on_ignored_gt": (
        [image(gt=[GT, FAR], ignore=[False, True], dt=[FAR, GT], scores=[0.9, 0.5])],
        {"AP": 1.0},
    ),
    "not_ignored_gt_missed": ([image(gt=[GT, FAR], dt=[GT])], {"AP": P101, "AR100": 0.5}),
    # Class 1 has no ground truth: its AP is undefined (COCO's -1), not 0, and not averaged.
    "wrong_class": ([image(gt=[GT], dt=[GT], dt_labels=[1])], {"AP": 0.0, "AP/class_1": NAN}),
    # Empty image next to a perfect one: valid, changes nothing.
    "image_without_gt": ([image(gt=[GT], dt=[GT]), image()], {"AP": 1.0}),
    "fp_on_image_without_gt": (
        [image(gt=[GT], dt=[GT], scores=[0.5]), image(dt=[GT], scores=[0.9])], {"AP": 0.5}
    ),
}


@pytest.mark.parametrize("name", list(HAND_CASES))
def test_hand_computed_ap(name):
    images, expected = HAND_CASES[name]
    # wrong_class predicts a class the ground truth lacks: it needs the class count
    metrics = evaluate(images, **({"num_classes": 2} if name == "wrong_class" else {}))
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key


def test_perfect_predictions_give_one():
    images = random_images(0, n=5)
    for im in images:
        im["dt"], im["dt_labels"] = im["gt"].clone(), im["labels"].clone()
        im["scores"] = torch.linspace(0.9, 0.5, len(im["gt"]))
    metrics = evaluate(images, class_names=["a", "b", "c"])
    for key in ["AP", "AP50", "AP75", "AR100", "AP/a", "AP/b", "AP/c"]:
        assert metrics[key] == pytest.approx(1.0, abs=1e-12), key


def test_max_dets_drops_lower_scored_detections():
    images = [image(gt=[GT, FAR], dt=[GT, FAR], scores=[0.9, 0.8])]
    metrics = evaluate(images, max_dets=1)
    assert [k for k in metrics if k.startswith("AR") and k[2:].isdigit()] == ["AR1"]
    assert metrics["AP"] == pytest.approx(P101) and metrics["AR1"] == pytest.approx(0.5)


def test_per_class_ap_names_and_values():
    gt = [GT, FAR, [20, 20, 30, 30]]
    images = [image(gt=gt, labels=[0, 1, 1], dt=[GT, FAR], dt_labels=[0, 1])]
    named = evaluate(images, class_names=["helmet", "head"])
    assert named["AP/helmet"] == pytest.approx(1.0) and named["AP/head"] == pytest.approx(P101)
    assert named["AP"] == pytest.approx((1.0 + P101) / 2)
    default = evaluate(images)
    assert default["AP/class_0"] == named["AP/helmet"] and default["AP/class_1"] == named["AP/head"]


# -- pycocotools as oracle ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2])
def test_matches_pycocotools_run_directly(seed, tmp_path):
    images = random_images(seed, n=8)
    ev = CocoEvaluator(class_names=["a", "b", "c"])
    feed(ev, images)
    metrics = ev.compute()
    ref, ref_text = oracle(images, 3, tmp_path)
    assert [metrics[k] for k in STAT_KEYS] == pytest.approx(
        [coco_value(s) for s in ref.stats], abs=0, nan_ok=True)
    for k, name in enumerate("abc"):
        expected = coco_value(mean_valid(ref.eval["precision"][:, :, k, 0, -1]))
        assert metrics[f"AP/{name}"] == pytest.approx(expected, abs=0, nan_ok=True)
    assert ev.summary() == ref_text


def test_relative_buckets_match_pycocotools_with_scaled_absolute_ranges(tmp_path):
    # With one image size, a relative bucket [lo, hi] is the absolute range [lo, hi] * h * w.
    h, w = 400, 500
    images = random_images(3, n=8, size=(h, w))
    metrics = evaluate(images)
    rel = coco_mod.HELMET_RELATIVE_AREAS
    absolute = [[lo * h * w, hi * h * w] for lo, hi in rel.values()]
    ref, _ = oracle(images, 3, tmp_path, area_rng=absolute)
    for a, name in enumerate(rel):
        expected = coco_value(mean_valid(ref.eval["precision"][:, :, :, a, -1]))
        assert metrics[f"AP_rel_{name}"] == pytest.approx(expected, abs=0, nan_ok=True), name
    assert any(metrics[f"AP_rel_{n}"] > 0 for n in rel)


# -- relative-area buckets ------------------------------------------------------------------
@pytest.mark.parametrize(
    "side, size, bucket",
    [
        (10, (1000, 1000), "tiny"),  # 0.01 % of the image
        (40, (1000, 1000), "small"),  # 0.16 %
        (100, (1000, 1000), "medium"),  # 1 %
        (300, (1000, 1000), "large"),  # 9 %
        (10, (100, 100), "medium"),  # 1 %: relative medium although COCO-absolute small
    ],
)
def test_relative_bucket_of_a_box(side, size, bucket):
    box = [5.0, 5.0, 5.0 + side, 5.0 + side]
    metrics = evaluate([image(size=size, gt=[box], dt=[box])])
    for name in coco_mod.HELMET_RELATIVE_AREAS:  # the other buckets have no ground truth
        expected = 1.0 if name == bucket else NAN
        assert metrics[f"AP_rel_{name}"] == pytest.approx(expected, nan_ok=True), name


def test_relative_bucket_ignores_unmatched_detections_of_other_sizes():
    # Like COCO's AP_small: a large false positive does not hurt the tiny bucket.
    tiny, big_fp = [0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 500.0, 500.0]
    metrics = evaluate([image(size=(1000, 1000), gt=[tiny], dt=[big_fp, tiny], scores=[0.9, 0.5])])
    assert metrics["AP_rel_tiny"] == pytest.approx(1.0) and metrics["AP"] == pytest.approx(0.5)


def test_relative_areas_configurable_and_disabled():
    images = [image(size=(1000, 1000), gt=[GT], dt=[GT])]
    assert evaluate(images, relative_areas={"any": (0.0, 1.0)})["AP_rel_any"] == pytest.approx(1.0)
    assert not any(k.startswith("AP_rel") for k in evaluate(images, relative_areas=None))


# -- ids, coordinates, empty epochs ---------------------------------------------------------
def test_image_id_schemes_give_identical_numbers():
    images = random_images(4, n=7)
    results = []
    for ids in (list(range(7)), list(range(1, 8)), [f"img_{i:03d}.jpg" for i in range(7)]):
        ev = CocoEvaluator()
        feed(ev, images, ids=ids)
        results.append(ev.compute())
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("scale, pad", [((0.5, 0.25), (16.0, 8.0)), ((2.0, 2.0), None)])
def test_gt_mapped_back_from_input_coordinates(scale, pad):
    images = random_images(5)
    ev = CocoEvaluator()
    feed(ev, images, scale=scale, pad=pad)  # exact (power-of-two) scales: identical numbers
    assert ev.compute() == evaluate(images)


def test_orig_boxes_preferred_and_inexact_scale_maps_back():
    im = image(size=(300, 200), gt=[[10.0, 20.0, 110.0, 70.0]], dt=[[10.0, 20.0, 110.0, 70.0]])
    ev = CocoEvaluator()
    target = {"boxes": im["gt"] * 0.37 + 3.0, "labels": im["labels"]}
    meta = {"image_id": "a", "orig_size": torch.tensor([300, 200]), "scale": 0.37,
            "pad": (3.0, 3.0)}
    pred = Prediction(im["dt"], im["scores"], im["dt_labels"])
    ev.update([pred], Batch(torch.zeros(1, 3, 4, 4), [target], [meta]))
    np.testing.assert_allclose(ev._records[0]["gt_boxes"], im["gt"].numpy(), rtol=1e-6)
    # orig_boxes wins over wrong input-coordinate boxes
    ev2 = CocoEvaluator()
    target2 = {"boxes": torch.zeros(1, 4), "orig_boxes": im["gt"], "labels": im["labels"]}
    ev2.update([pred], Batch(torch.zeros(1, 3, 4, 4), [target2], [meta]))
    assert ev2.compute()["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "images",
    [[image()], [image(gt=[GT, FAR])], [image(gt=[GT], labels=[2])],
     [image(gt=[[0, 0, 200, 200]], dt=[[0, 0, 200, 200]])]],
    ids=["no_gt_no_dt", "gts_no_dt", "gt_of_class_2_no_dt", "only_large"],
)
def test_undefined_metrics_are_nan_where_pycocotools_gives_minus_one(images, tmp_path):
    ev = CocoEvaluator(class_names=["a", "b", "c"])
    feed(ev, images)
    metrics = ev.compute()
    ref, ref_text = oracle(images, 3, tmp_path)
    assert [metrics[k] for k in STAT_KEYS] == pytest.approx(
        [coco_value(s) for s in ref.stats], abs=0, nan_ok=True)
    assert any(s == -1 for s in ref.stats)  # every case has an empty bucket
    for k, name in enumerate("abc"):
        expected = coco_value(mean_valid(ref.eval["precision"][:, :, k, 0, -1]))
        assert metrics[f"AP/{name}"] == pytest.approx(expected, abs=0, nan_ok=True)
    assert ev.summary() == ref_text  # the printed summary keeps COCO's -1.000


def test_no_images_gives_undefined_everywhere():
    ev = CocoEvaluator(class_names=["a", "b", "c"])
    metrics = ev.compute()
    assert set(metrics) >= set(STAT_KEYS) | {"AP/a", "AP/b", "AP/c", "AP_rel_tiny"}
    assert all(math.isnan(v) for v in metrics.values())
    assert len(ev.summary().splitlines()) == 12


def test_undefined_bucket_is_not_averaged_in():
    # One small box found, nothing medium/large: AP equals AP_small, not a mean with zeros.
    metrics = evaluate([image(gt=[GT], dt=[GT])], class_names=["a"])
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP_small"] == pytest.approx(1.0)
    assert math.isnan(metrics["AP_medium"]) and math.isnan(metrics["AP_large"])
    from detlab.engine.callbacks import format_metrics

    assert "AP_medium=n/a" in format_metrics(metrics, "AP")


# -- what cannot be scored is refused ---------------------------------------------------------
@pytest.mark.parametrize(
    "case, match",
    [
        (dict(dt=[GT, FAR], scores=[0.9, NAN]), r"image 0: prediction 1 has a non-finite score"),
        (dict(dt=[GT, FAR], scores=[math.inf, 0.5]), r"image 0: prediction 0 has a non-finite score"),
        (dict(dt=[GT, [0, 0, NAN, 5]]), r"image 0: prediction 1 has a non-finite box"),
        (dict(dt=[[0, 0, math.inf, 5]]), r"image 0: prediction 0 has a non-finite box"),
        (dict(gt=[GT, [NAN, 0, 5, 5]]), r"image 0: ground-truth box 1 has a non-finite box"),
    ],
)
def test_non_finite_predictions_are_refused(case, match):
    ev = CocoEvaluator()
    with pytest.raises(DataError, match=match):
        feed(ev, [image(**{"gt": [GT], **case})])


def test_prediction_label_outside_classes_is_refused():
    # No class_names: the classes are the ground truth's labels (0 and 1 here).
    images = [image(gt=[GT, FAR], labels=[0, 1], dt=[GT, FAR], dt_labels=[0, 1]),
              image(gt=[GT], dt=[GT, FAR], dt_labels=[0, 7])]
    with pytest.raises(DataError, match=r"image 1: prediction 1 has label 7, outside \[0, 2\)"):
        evaluate(images)
    with pytest.raises(DataError, match=r"image 1: prediction 1 has label 7, outside \[0, 3\)"):
        evaluate(images, num_classes=3)
    with pytest.raises(DataError, match=r"image 1: prediction 1 has label 7, outside \[0, 2\)"):
        evaluate(images, class_names=["a", "b"])
    ok = evaluate(images, num_classes=8)  # a class without ground truth in this split
    assert math.isnan(ok["AP/class_7"]) and ok["AP/class_1"] == pytest.approx(1.0)
