"""Noise from repeated annotations: the estimator recovers the k it was generated with."""

import math

import numpy as np
import pytest

from detlab.errors import DataError
from detlab.evaluation.analysis import jitter_boxes
from detlab.evaluation.annotation_noise import estimate_noise_px, match_annotations


def _truth(rng, n):
    xy = rng.uniform(50, 900, (n, 2))
    wh = rng.uniform(19, 60, (n, 2))
    return np.concatenate([xy, xy + wh], 1)


@pytest.mark.parametrize("k", [1.0, 3.0])
def test_recovers_uniform_noise_of_two_annotators(k):
    rng = np.random.default_rng(0)
    truths = [_truth(rng, 40) for _ in range(25)]
    a = [jitter_boxes(t, k, rng, (1080, 1920)) for t in truths]
    b = [jitter_boxes(t, k, rng, (1080, 1920)) for t in truths]
    labels = [np.zeros(len(t), np.int64) for t in truths]
    est = estimate_noise_px(a, labels, b, labels)
    assert est.pairs == 1000 and est.only_a == est.only_b == 0
    assert est.noise_px == pytest.approx(k, rel=0.05)


def test_hand_case_and_unmatched_counts():
    # one edge differs by 3 px in one box: mean d² over 4 edges = 9/4, k = sqrt(1.5·9/4)
    a = [np.array([[0, 0, 10, 10], [100, 100, 120, 120.]])]
    b = [np.array([[0, 0, 13, 10], [500, 500, 510, 510.]])]
    est = estimate_noise_px(a, [np.array([0, 0])], b, [np.array([0, 0])])
    assert est.pairs == 1 and est.only_a == 1 and est.only_b == 1
    assert est.noise_px == pytest.approx(math.sqrt(1.5 * 9 / 4))
    assert est.edge_rms == pytest.approx((0, 0, 3, 0))


def test_matching_is_per_class_and_one_to_one():
    a = np.array([[0, 0, 10, 10.], [1, 1, 11, 11]])
    b = np.array([[0, 0, 10, 10.]])
    ra, rb = match_annotations(a, np.array([1, 0]), b, np.array([0]))
    assert ra.tolist() == [1] and rb.tolist() == [0]


def test_image_count_mismatch_is_a_data_error():
    with pytest.raises(DataError, match="same images"):
        estimate_noise_px([np.zeros((0, 4))], [np.zeros(0)], [], [])
