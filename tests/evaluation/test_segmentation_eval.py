"""SegmentationEvaluator: hand-computed Dice/IoU, PR-AUC against torchmetrics, threshold search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_average_precision

import detlab.evaluation.segmentation as seg_module
from detlab.errors import ConfigError, DataError
from detlab.evaluation.segmentation import (
    METRIC_NAMES,
    SegmentationEvaluator,
    ground_truth_mask,
)
from detlab.registry import EVALUATORS
from detlab.structures import Batch, Prediction


def _batch(masks: list[torch.Tensor], ids: list, **meta_extra) -> Batch:
    """Batch whose input size equals the original size (no resize)."""
    h = max(m.shape[-2] for m in masks)
    w = max(m.shape[-1] for m in masks)
    meta = [
        {"image_id": i, "orig_size": tuple(m.shape[-2:]), "input_size": tuple(m.shape[-2:]),
         **meta_extra}
        for i, m in zip(ids, masks)
    ]
    return Batch(images=torch.zeros(len(masks), 1, h, w),
                 targets=[{"mask": m.float()} for m in masks], meta=meta)


def _evaluate(probs_list, masks, ev=None, ids=None) -> dict[str, float]:
    ev = ev or SegmentationEvaluator()
    ids = ids if ids is not None else list(range(len(masks)))
    ev.update([Prediction(probs=p) for p in probs_list], _batch(masks, ids))
    return ev.compute()


T = torch.tensor

# (name, probs (1,H,W), gt (1,H,W), dice, iou) at threshold 0.5, computed by hand.
DICE_CASES = [
    # TP=1 (0.9), FP=1 (0.7), FN=1 (0.2): dice 2/4, iou 1/3
    ("mixed", T([[[0.9, 0.2, 0.7], [0.1, 0.1, 0.1]]]), T([[[1, 1, 0], [0, 0, 0]]]), 0.5, 1 / 3),
    ("perfect", T([[[0.9, 0.1], [0.6, 0.0]]]), T([[[1, 0], [1, 0]]]), 1.0, 1.0),
    # nothing present, nothing predicted -> 1 by convention
    ("both_empty", T([[[0.1, 0.2], [0.3, 0.4]]]), T([[[0, 0], [0, 0]]]), 1.0, 1.0),
    ("false_alarm", T([[[0.9, 0.2], [0.3, 0.4]]]), T([[[0, 0], [0, 0]]]), 0.0, 0.0),
    ("all_missed", T([[[0.1, 0.2], [0.3, 0.4]]]), T([[[1, 0], [0, 0]]]), 0.0, 0.0),
    # prob == threshold counts as positive: TP=1, FP=1 -> dice 2/3, iou 1/2
    ("at_threshold", T([[[0.5, 0.5], [0.0, 0.0]]]), T([[[1, 0], [0, 0]]]), 2 / 3, 0.5),
]


@pytest.mark.parametrize("name,probs,gt,dice,iou", DICE_CASES, ids=[c[0] for c in DICE_CASES])
def test_dice_iou_hand_computed(name, probs, gt, dice, iou):
    m = _evaluate([probs], [gt])
    assert m["dice"] == pytest.approx(dice)
    assert m["iou"] == pytest.approx(iou)


def test_dice_is_micro_over_images():
    # image 0: TP=1; image 1: FN=3 -> pooled dice 2/(2+3); the per-image mean would be 0.5
    p0, g0 = T([[[0.9, 0.1]]]), T([[[1, 0]]])
    p1, g1 = T([[[0.1, 0.1, 0.1]]]), T([[[1, 1, 1]]])
    m = _evaluate([p0, p1], [g0, g1])
    assert m["dice"] == pytest.approx(0.4)
    assert m["iou"] == pytest.approx(0.25)
    assert m["prevalence"] == pytest.approx(4 / 5)


def _on_distinct_bins(ev: SegmentationEvaluator, n: int, gen: torch.Generator) -> torch.Tensor:
    """n probabilities, each in the middle of its own histogram bin (binning is then exact)."""
    edges = ev.bin_edges
    bins = torch.randperm(len(edges) - 1, generator=gen)[:n].numpy()
    mid = ((edges[bins] + edges[bins + 1]) / 2).astype(np.float32)
    assert np.all((mid >= edges[bins]) & (mid < edges[bins + 1]))
    return torch.from_numpy(mid)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pr_auc_exact_when_probs_on_distinct_bins(seed):
    gen = torch.Generator().manual_seed(seed)
    ev = SegmentationEvaluator(num_bins=256)
    probs = _on_distinct_bins(ev, 200, gen).view(1, 10, 20)
    gt = torch.rand(1, 10, 20, generator=gen) < 0.3
    ref = binary_average_precision(probs.flatten(), gt.flatten().long()).item()
    assert _evaluate([probs], [gt], ev)["pr_auc"] == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("seed,prevalence", [(0, 0.05), (1, 0.2), (2, 0.01)])
def test_pr_auc_close_to_torchmetrics_on_random_probs(seed, prevalence):
    # Two images, continuous scores correlated with the labels: binning ties scores within a
    # bin, which moves AP by < ~1e-3 at the default 2048 bins.
    gen = torch.Generator().manual_seed(seed)
    gts = [torch.rand(1, 48, 48, generator=gen) < prevalence for _ in range(2)]
    probs = [torch.sigmoid(torch.randn(1, 48, 48, generator=gen) * 2 - 3 + 3 * g) for g in gts]
    ref = binary_average_precision(
        torch.cat([p.flatten() for p in probs]), torch.cat([g.flatten() for g in gts]).long()
    ).item()
    assert _evaluate(probs, gts)["pr_auc"] == pytest.approx(ref, abs=1.5e-3)


def test_constant_predictor_pr_auc_equals_prevalence():
    gen = torch.Generator().manual_seed(3)
    gt = torch.rand(1, 40, 50, generator=gen) < 0.07
    m = _evaluate([torch.full((1, 40, 50), 0.3)], [gt])
    assert m["prevalence"] == pytest.approx(gt.float().mean().item())
    assert m["pr_auc"] == pytest.approx(m["prevalence"], abs=1e-12)


def test_best_threshold_on_known_case():
    # positives: 3 px at 0.6; negatives: 5 px at 0.2 and 1 px at 0.7.
    # t <= 0.2: TP 3, FP 6 -> F1 6/12; 0.2 < t <= 0.6: TP 3, FP 1 -> F1 6/7; t > 0.6: F1 0.
    probs = T([[[0.6, 0.6, 0.6, 0.2, 0.2, 0.2, 0.2, 0.2, 0.7]]])
    gt = T([[[1, 1, 1, 0, 0, 0, 0, 0, 0]]])
    m = _evaluate([probs], [gt])
    assert m["best_f1"] == pytest.approx(6 / 7)
    # ties go to the highest threshold of the plateau: the edge just below 0.6
    assert 0.59 < m["best_threshold"] <= 0.6


def test_threshold_search_reaches_1e4():
    # A badly calibrated but perfectly ranking model: 3e-4 on lesions, 1e-5 elsewhere.
    gt = torch.zeros(1, 32, 32, dtype=torch.bool)
    gt[0, 10:12, 4:20] = True
    probs = torch.where(gt, 3e-4, 1e-5).float()
    m = _evaluate([probs], [gt])
    assert m["best_f1"] == pytest.approx(1.0)
    assert 1e-4 <= m["best_threshold"] < 1e-3
    assert m["dice"] == 0.0  # nothing reaches 0.5
    assert m["max_prob"] == pytest.approx(3e-4)
    assert m["frac_above_min_threshold"] == pytest.approx(m["prevalence"])
    assert m["pr_auc"] == pytest.approx(1.0)
    # the same model searched only down to 1e-3 finds nothing
    m = _evaluate([probs], [gt], SegmentationEvaluator(min_threshold=1e-3))
    assert m["best_f1"] == 0.0 and m["frac_above_min_threshold"] == 0.0


def test_mask_mapped_from_padded_input_size_to_orig_size():
    gen = torch.Generator().manual_seed(4)
    orig = torch.rand(1, 5, 7, generator=gen) < 0.4
    # resized x2 (nearest), then padded by collate to 32 x 32
    big = orig.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2).float()
    padded = torch.zeros(1, 32, 32)
    padded[:, :10, :14] = big
    meta = {"image_id": "a", "orig_size": (5, 7), "input_size": (10, 14)}
    assert torch.equal(ground_truth_mask({"mask": padded}, meta), orig)
    # letterbox-style padding before the content
    shifted = torch.zeros(1, 32, 32)
    shifted[:, 3:13, 2:16] = big
    meta_pad = {**meta, "pad": (3, 2)}
    assert torch.equal(ground_truth_mask({"mask": shifted}, meta_pad), orig)
    # orig_mask wins over mask; (H, W) masks get a class axis
    assert torch.equal(ground_truth_mask({"orig_mask": orig[0].float(), "mask": None}, meta), orig)
    ev = SegmentationEvaluator()
    batch = Batch(images=torch.zeros(1, 1, 32, 32), targets=[{"mask": padded}], meta=[meta])
    ev.update([Prediction(probs=orig.float() * 0.9)], batch)
    assert ev.compute()["dice"] == pytest.approx(1.0)


def test_shape_mismatch_and_bad_probs_raise_data_error():
    ev = SegmentationEvaluator()
    with pytest.raises(DataError, match="does not match"):
        _evaluate([torch.zeros(1, 4, 4)], [torch.zeros(1, 4, 5)], ev)
    for bad in (torch.full((1, 2, 2), 1.5), torch.full((1, 2, 2), float("nan"))):
        with pytest.raises(DataError, match=r"\[0, 1\]"):
            _evaluate([bad], [torch.zeros(1, 2, 2)], SegmentationEvaluator())


def test_non_finite_ground_truth_mask_raises_data_error():
    # Before: NaN > 0.5 is False, so a NaN mask pixel was silently background.
    gt = torch.zeros(1, 2, 2)
    gt[0, 1, 1] = float("nan")
    with pytest.raises(DataError, match=r"ground-truth 'mask' of image 0 has 1 NaN/inf"):
        _evaluate([torch.zeros(1, 2, 2)], [gt])


def test_dedup_by_image_id_and_across_ranks(monkeypatch):
    gen = torch.Generator().manual_seed(5)
    gts = [torch.rand(1, 8, 8, generator=gen) < 0.3 for _ in range(3)]
    probs = [torch.rand(1, 8, 8, generator=gen) for _ in range(3)]
    once = _evaluate(probs, gts)
    ev = SegmentationEvaluator()
    ev.update([Prediction(probs=p) for p in probs], _batch(gts, [0, 1, 2]))
    ev.update([Prediction(probs=probs[0])], _batch(gts[:1], [0]))  # padded repeat
    np.testing.assert_equal(ev.compute(), once)  # NaN-aware: undefined rates are NaN
    # two "ranks" where the distributed sampler repeated image 2 on both
    monkeypatch.setattr(seg_module, "gather_objects", lambda items: items + items[2:])
    ev.reset()
    ev.update([Prediction(probs=p) for p in probs], _batch(gts, [0, 1, 2]))
    np.testing.assert_equal(ev.compute(), once)  # NaN-aware: undefined rates are NaN


def test_histogram_counts_every_pixel():
    gen = torch.Generator().manual_seed(6)
    ev = SegmentationEvaluator()
    sizes = [(2, 6, 9), (2, 11, 4)]  # two classes, two image sizes
    probs = [torch.rand(*s, generator=gen) ** 4 for s in sizes]
    gts = [torch.rand(*s, generator=gen) < 0.1 for s in sizes]
    ev.update([Prediction(probs=probs[0])], _batch(gts[:1], ["x"]))
    ev.update([Prediction(probs=probs[1])], _batch(gts[1:], ["y"]))
    edges, counts = ev.histogram()
    assert counts.dtype == np.int64 and len(edges) == len(counts) + 1
    assert edges[0] == 0.0 and edges[-1] == 1.0 and np.all(np.diff(edges) > 0)
    assert counts.sum() == sum(int(np.prod(s)) for s in sizes)
    all_p = torch.cat([p.flatten() for p in probs]).numpy()
    ref, _ = np.histogram(all_p, bins=edges)  # same [lo, hi) bins, last one closed
    np.testing.assert_array_equal(counts, ref)
    text = ev.format_histogram(width=20)
    assert f"over {counts.sum()} pixels" in text
    assert len(text.splitlines()) == 12  # header + 11 probability ranges


def test_multiclass_keys_and_means():
    gen = torch.Generator().manual_seed(7)
    gt = torch.rand(2, 16, 16, generator=gen) < torch.tensor([0.1, 0.3]).view(2, 1, 1)
    probs = torch.sigmoid(torch.randn(2, 16, 16, generator=gen) + 2 * gt.float())
    m = _evaluate([probs], [gt])
    for c in range(2):
        ref = binary_average_precision(probs[c].flatten(), gt[c].flatten().long()).item()
        assert m[f"pr_auc/{c}"] == pytest.approx(ref, abs=3e-3)
        pred = probs[c] >= 0.5
        tp = (pred & gt[c]).sum().item()
        assert m[f"dice/{c}"] == pytest.approx(2 * tp / (pred.sum().item() + gt[c].sum().item()))
    assert m["dice"] == pytest.approx((m["dice/0"] + m["dice/1"]) / 2)
    assert m["pr_auc"] == pytest.approx((m["pr_auc/0"] + m["pr_auc/1"]) / 2)


def test_no_positives_and_empty_evaluator():
    m = _evaluate([torch.full((1, 4, 4), 0.2)], [torch.zeros(1, 4, 4)])
    assert m["pr_auc"] == 0.0 and m["best_f1"] == 0.0 and m["prevalence"] == 0.0
    assert m["dice"] == 1.0 and m["best_threshold"] == 0.5
    ev = SegmentationEvaluator()
    assert ev.compute() == {name: 0.0 for name in METRIC_NAMES}
    assert ev.histogram()[1].sum() == 0
    assert "no images" in ev.format_histogram()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(primary="auc"), "primary"),
        (dict(threshold=1.0), "threshold"),
        (dict(min_threshold=0.7), "min_threshold"),
        (dict(num_bins=4), "num_bins"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SegmentationEvaluator(**kwargs)


def test_registered_and_buildable():
    ev = EVALUATORS.build(dict(type="SegmentationEvaluator", primary="dice", threshold=0.3))
    assert isinstance(ev, SegmentationEvaluator) and ev.primary == "dice"
