"""Weighted Boxes Fusion: hand-computed cases and ensemble-boxes (v1.0.9) as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detlab.ops.wbf import CONF_TYPES, weighted_boxes_fusion

W, H = 640.0, 480.0
SCALE = np.array([W, H, W, H])


def test_two_models_one_object_by_hand():
    # model 0: [0,0,10,10] @0.9 ; model 1: [2,0,12,10] @0.6 (IoU 8/12 > 0.55) and a far box
    boxes = [[[0, 0, 10, 10]], [[2, 0, 12, 10], [100, 100, 110, 110]]]
    scores = [[0.9], [0.6, 0.3]]
    labels = [[0], [0, 0]]
    out_boxes, out_scores, out_labels = weighted_boxes_fusion(boxes, scores, labels)
    x1 = (0.9 * 0 + 0.6 * 2) / 1.5
    assert out_boxes[0].tolist() == pytest.approx([x1, 0, x1 + 10, 10])
    assert out_scores.tolist() == pytest.approx([(0.9 + 0.6) / 2 * 2 / 2, 0.3 * 1 / 2])
    assert out_labels.tolist() == [0, 0]
    # weights 3, 1: weighted scores 2.7 and 0.6; 'max' divides by the largest weight
    _, s, _ = weighted_boxes_fusion(boxes, scores, labels, weights=[3, 1], conf_type="max")
    assert s.tolist() == pytest.approx([2.7 / 3, 0.3 / 3])
    # absent_model_aware_avg: the far box's cluster misses model 0 (weight 3)
    _, s, _ = weighted_boxes_fusion(boxes, scores, labels, weights=[3, 1],
                                    conf_type="absent_model_aware_avg")
    assert s.tolist() == pytest.approx([(2.7 + 0.6) / 4, 0.3 / (1 + 3)])


def random_models(rng, models, n, labels):
    out = ([], [], [])
    for _ in range(models):
        k = int(rng.integers(0, n + 1))
        xy = rng.random((k, 2)) * [W - 100, H - 100]
        out[0].append(np.concatenate([xy, xy + rng.random((k, 2)) * 90 + 5], 1))
        out[1].append(rng.random(k))
        out[2].append(rng.integers(0, labels, k))
    return out


@pytest.mark.parametrize("conf_type", CONF_TYPES)
@pytest.mark.parametrize("labels, n", [(4, 30), (1, 120)])  # label-parallel / one-label paths
def test_matches_ensemble_boxes(conf_type, labels, n):
    ensemble_boxes = pytest.importorskip("ensemble_boxes")
    rng = np.random.default_rng(labels * 100 + len(conf_type))
    for trial in range(6):
        boxes, scores, labs = random_models(rng, int(rng.integers(1, 4)), n, labels)
        weights = list(rng.random(len(boxes)) + 0.5) if trial % 2 else None
        for overflow in (False, True):
            kw = dict(weights=weights, iou_thr=0.3 + 0.1 * (trial % 3), skip_box_thr=0.05,
                      conf_type=conf_type, allows_overflow=overflow)
            want = ensemble_boxes.weighted_boxes_fusion([b / SCALE for b in boxes], scores,
                                                        labs, **kw)
            got = weighted_boxes_fusion(boxes, scores, labs, **kw)
            assert got[0].shape[0] == len(want[0])
            np.testing.assert_allclose(got[0].numpy() / SCALE, want[0], atol=1e-5)
            np.testing.assert_allclose(got[1].numpy(), want[1], atol=1e-5)
            assert (got[2].numpy() == want[2].astype(int)).all()


def test_empty_skipped_and_errors():
    boxes, scores, labels = weighted_boxes_fusion([np.zeros((0, 4))], [[]], [[]])
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.dtype == torch.long
    boxes, _, _ = weighted_boxes_fusion([[[0, 0, 5, 5]]], [[0.1]], [[0]], skip_box_thr=0.2)
    assert boxes.shape == (0, 4)
    with pytest.raises(ValueError, match="box 0 .* not xyxy"):
        weighted_boxes_fusion([[[5, 0, 0, 5]]], [[0.5]], [[0]])
    with pytest.raises(ValueError, match="conf_type"):
        weighted_boxes_fusion([[[0, 0, 5, 5]]], [[0.5]], [[0]], conf_type="mean")
    with pytest.raises(ValueError, match="weights"):
        weighted_boxes_fusion([[[0, 0, 5, 5]]], [[0.5]], [[0]], weights=[1, 2])
