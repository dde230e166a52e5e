"""Slice-, case- and lesion-level rates, hand-computed, directly and through the evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detlab.errors import ConfigError
from detlab.evaluation.lesions import detection_rates, lesion_stats
from detlab.evaluation.segmentation import SegmentationEvaluator
from detlab.structures import Batch, Prediction


def _grid(points, size=8):
    a = np.zeros((1, size, size), dtype=bool)
    for y, x in points:
        a[0, y, x] = True
    return a


# Four 8x8 slices of two cases (A, B). Ground truth / prediction at the threshold:
#   A:0  lesions {(1,1)} and {(5,5),(5,6)}; predicted (1,1),(1,2): hits the first only
#   A:1  no lesion; predicted speck (7,7)                    -> false-positive slice
#   B:0  one diagonal lesion {(2,2),(3,3)} (one component with 8-connectivity); nothing
#        predicted                                           -> missed slice, missed lesion
#   B:1  nothing, nothing                                    -> true-negative slice
SLICES = [
    ("A", _grid([(1, 1), (5, 5), (5, 6)]), _grid([(1, 1), (1, 2)])),
    ("A", _grid([]), _grid([(7, 7)])),
    ("B", _grid([(2, 2), (3, 3)]), _grid([])),
    ("B", _grid([]), _grid([])),
]


def _records(min_pixels=1):
    return [{**lesion_stats(pred, gt, min_pixels), "case_id": case} for case, gt, pred in SLICES]


def test_lesion_stats_per_slice():
    stats = [lesion_stats(pred, gt) for _, gt, pred in SLICES]
    assert [int(s["lesions"][0]) for s in stats] == [2, 0, 1, 0]  # diagonal pair: one lesion
    assert [int(s["lesions_hit"][0]) for s in stats] == [1, 0, 0, 0]
    assert [bool(s["pred_any"][0]) for s in stats] == [True, True, False, False]
    assert [bool(s["gt_any"][0]) for s in stats] == [True, False, True, False]


def test_rates_hand_computed():
    r = detection_rates(_records())
    # slices: positives A:0 (flagged), B:0 (missed) -> 1/2; negatives A:1 (flagged), B:1 -> 1/2
    assert r["slice_sensitivity"] == [0.5] and r["slice_specificity"] == [0.5]
    # cases: A positive & flagged, B positive & not flagged -> 1/2; no negative case -> NaN
    assert r["case_sensitivity"] == [0.5] and math.isnan(r["case_specificity"][0])
    assert r["lesion_recall"] == [pytest.approx(1 / 3)]  # 1 of 3 lesions touched


def test_min_lesion_pixels_drops_specks():
    r = detection_rates(_records(min_pixels=2))
    # the 1-pixel speck on A:1 no longer flags it; A:0's 2-pixel component still hits (1,1)
    assert r["slice_sensitivity"] == [0.5] and r["slice_specificity"] == [1.0]
    r3 = detection_rates(_records(min_pixels=3))
    assert r3["slice_sensitivity"] == [0.0] and r3["lesion_recall"] == [0.0]


def test_evaluator_reports_rates_by_case():
    ev = SegmentationEvaluator(threshold=0.5)
    probs = [torch.from_numpy(pred.astype(np.float32) * 0.9) for _, _, pred in SLICES]
    masks = [torch.from_numpy(gt.astype(np.float32)) for _, gt, _ in SLICES]
    meta = [{"image_id": f"{case}:{i}", "case_id": case, "orig_size": (8, 8)}
            for i, (case, _, _) in enumerate(SLICES)]
    ev.update([Prediction(probs=p) for p in probs],
              Batch(images=torch.zeros(4, 1, 8, 8), targets=[{"mask": m} for m in masks],
                    meta=meta))
    m = ev.compute()
    assert m["slice_sensitivity"] == 0.5 and m["slice_specificity"] == 0.5
    assert m["case_sensitivity"] == 0.5 and math.isnan(m["case_specificity"])
    assert m["lesion_recall"] == pytest.approx(1 / 3)
    # without case ids every image is its own case: case rates equal slice rates
    for mm in meta:
        del mm["case_id"]
    ev.reset()
    ev.update([Prediction(probs=p) for p in probs],
              Batch(images=torch.zeros(4, 1, 8, 8), targets=[{"mask": m} for m in masks],
                    meta=meta))
    m = ev.compute()
    assert m["case_sensitivity"] == m["slice_sensitivity"] == 0.5
    assert m["case_specificity"] == 0.5


def test_min_lesion_pixels_validated():
    with pytest.raises(ConfigError, match="min_lesion_pixels"):
        SegmentationEvaluator(min_lesion_pixels=0)
