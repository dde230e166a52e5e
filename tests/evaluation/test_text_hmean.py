"""Tests for detlab.evaluation.text_hmean: ICDAR-2015-style hmean on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detlab.errors import ConfigError, DataError
from detlab.evaluation.text_hmean import TextHmeanEvaluator, match_text_polygons
from detlab.registry import EVALUATORS
from detlab.structures import Batch, Prediction


def box(x: float, y: float, w: float = 10.0, h: float = 10.0) -> np.ndarray:
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64)


def _evaluate(preds, gts, ignore=None, image_id=0, **kwargs) -> dict[str, float]:
    ev = TextHmeanEvaluator(**kwargs)
    ev.update([_pred(preds)], _batch([gts], [ignore], [image_id]))
    return ev.compute()


def _pred(polys) -> Prediction:
    return Prediction(polygons=list(polys), scores=torch.ones(len(polys)))


def _batch(gts_per_image, ignore_per_image, ids, meta_extra=None) -> Batch:
    targets, meta = [], []
    for gts, ignore, image_id in zip(gts_per_image, ignore_per_image, ids):
        t = {"polygons": list(gts)}
        if ignore is not None:
            t["ignore"] = torch.tensor(ignore, dtype=torch.bool)
        targets.append(t)
        meta.append({"image_id": image_id, **(meta_extra or {})})
    return Batch(images=torch.zeros(len(ids), 3, 8, 8), targets=targets, meta=meta)


A, B, C = box(0, 0), box(50, 0), box(100, 0)


@pytest.mark.parametrize(
    ("preds", "gts", "ignore", "expected"),
    [
        ([A, B], [A, B], None, (1.0, 1.0, 1.0)),  # perfect
        ([A], [A, B], None, (1.0, 0.5, 2 / 3)),  # one miss
        ([A, C], [A], None, (0.5, 1.0, 2 / 3)),  # one false positive
        ([], [A], None, (0.0, 0.0, 0.0)),  # nothing predicted
        ([A], [], None, (0.0, 0.0, 0.0)),  # nothing to find
        ([A, B], [A, B], [False, True], (1.0, 1.0, 1.0)),  # prediction on ### is dropped
        ([A, box(54, 0)], [A, B], [False, True], (1.0, 1.0, 1.0)),  # 60 % inside ###: dropped
        ([A, box(55, 0)], [A, B], [False, True], (0.5, 1.0, 2 / 3)),  # 50 %: not > 0.5, a FP
        ([A, box(56, 0)], [A, B], [False, True], (0.5, 1.0, 2 / 3)),  # 40 % inside ###: a FP
        ([A], [A, B], [False, True], (1.0, 1.0, 1.0)),  # ### is not needed for recall
        ([box(3.3, 0)], [A], None, (1.0, 1.0, 1.0)),  # IoU 67 / 133 = 0.504
        ([box(3.4, 0)], [A], None, (0.0, 0.0, 0.0)),  # IoU 66 / 134 = 0.493
        ([A, A], [A], None, (0.5, 1.0, 2 / 3)),  # one-to-one: a duplicate is a FP
    ],
)
def test_hand_cases(preds, gts, ignore, expected) -> None:
    out = _evaluate(preds, gts, ignore)
    assert (out["precision"], out["recall"], out["hmean"]) == pytest.approx(expected)


def test_greedy_matching_by_descending_iou() -> None:
    # Vertical shift s between two 10 x 10 boxes gives IoU (10 - s) / (10 + s).
    # gt0-pred0: s=3 (0.54), gt0-pred1: s=1 (0.82), gt1-pred0: s=2 (0.67), gt1-pred1: s=6 (0.25).
    # Index order (the ICDAR script) pairs gt0-pred0 and leaves gt1 unmatched; greedy by IoU
    # pairs gt0-pred1 (0.82) then gt1-pred0 (0.67).
    gts = [box(0, 3), box(0, -2)]
    preds = [box(0, 0), box(0, 4)]
    assert match_text_polygons(preds, gts, np.zeros(2, bool)) == (2, 2, 2)


def test_gt_mapped_back_with_scale_and_pad() -> None:
    ev = TextHmeanEvaluator()
    # Original word at (20, 10) 10 x 10; input = orig * (sy=2, sx=0.5) + (top=4, left=6).
    word_in = box(20 * 0.5 + 6, 10 * 2 + 4, 10 * 0.5, 10 * 2)
    meta = {"scale": (2.0, 0.5), "pad": (4, 6)}
    ev.update([_pred([box(20, 10)])], _batch([[word_in]], [None], [0], meta))
    assert ev.compute()["hmean"] == pytest.approx(1.0)


def test_orig_polygons_are_preferred() -> None:
    batch = _batch([[box(500, 500)]], [None], [0])
    batch.targets[0]["orig_polygons"] = [A]
    ev = TextHmeanEvaluator()
    ev.update([_pred([A])], batch)
    assert ev.compute()["hmean"] == pytest.approx(1.0)


def test_accumulates_over_batches_and_dedups_image_ids() -> None:
    ev = TextHmeanEvaluator()
    ev.update([_pred([A]), _pred([])], _batch([[A], [A]], [None, None], [0, 1]))
    ev.update([_pred([C])], _batch([[A]], [None], [0]))  # repeated image 0 (DDP padding): dropped
    out = ev.compute()
    assert (out["precision"], out["recall"]) == pytest.approx((1.0, 0.5))
    ev.reset()
    assert ev.compute()["hmean"] == 0.0


def test_invalid_and_degenerate_polygons() -> None:
    bowtie = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], dtype=np.float64)
    line = np.array([[0, 0], [10, 0], [20, 0]], dtype=np.float64)
    # The bow-tie prediction is made valid (two triangles, IoU 0.5 with A); the zero-area gt is
    # treated as don't care and the zero-area prediction is a false positive.
    assert match_text_polygons([bowtie, line], [A, line], np.zeros(2, bool)) == (1, 2, 1)


@pytest.mark.parametrize(
    ("preds", "gts", "match"),
    [
        ([A, box(np.nan, 0)], [A], r"image 0: prediction 1 has a non-finite coordinate"),
        ([box(np.inf, 0)], [A], r"image 0: prediction 0 has a non-finite coordinate"),
        ([A], [A, box(0, np.nan)], r"image 0: ground-truth polygon 1 has a non-finite"),
        ([A, np.array([[0.0, 0.0], [5.0, 5.0]])], [A], r"prediction 1 has 2 points"),
        ([np.zeros((4, 3))], [A], r"prediction 0 must be \(K, 2\) points, got shape \(4, 3\)"),
        ([np.zeros(5)], [A], r"prediction 0 must be \(K, 2\) points, got shape \(5,\)"),
        ([A], [A, np.zeros(7)], r"ground-truth polygon 1 must be \(K, 2\) points"),
    ],
)
def test_unscorable_polygons_are_refused(preds, gts, match) -> None:
    # Before: a NaN prediction became an empty polygon, silently a false positive.
    with pytest.raises(DataError, match=match):
        _evaluate(preds, gts)


def test_ignore_length_mismatch_raises() -> None:
    with pytest.raises(DataError, match="ignore"):
        _evaluate([A], [A, B], [False])


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [(dict(iou_threshold=0.0), "iou_threshold"), (dict(ignore_overlap=1.0), "ignore_overlap")],
)
def test_bad_arguments_raise_config_error(kwargs: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        TextHmeanEvaluator(**kwargs)


def test_registered() -> None:
    ev = EVALUATORS.build(dict(type="TextHmeanEvaluator"))
    assert isinstance(ev, TextHmeanEvaluator) and ev.primary == "hmean"
