"""FROC: a hand-computed case, MONAI as oracle, lesion candidates and the evaluator's metrics."""

import numpy as np
import pytest
import torch

from detlab.evaluation.froc import FROC_FP_RATES, froc_curve, froc_sensitivities
from detlab.evaluation.lesions import lesion_candidates
from detlab.structures import Batch, Prediction


def test_froc_hand_made_case():
    # 4 lesions, 3 hit (scores .9 .6 .3), 4 false positives, 2 scans
    thr, fps, sens = froc_curve([0.9, 0.6, 0.3], [0.8, 0.5, 0.4, 0.2], 4, 2)
    assert thr.tolist() == [np.inf, 0.9, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2]
    assert fps.tolist() == [0, 0, 0.5, 0.5, 1.0, 1.5, 1.5, 2.0]
    assert sens.tolist() == [0, 0.25, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75]
    m = froc_sensitivities(fps, sens)
    assert [m[f"froc_sens@{r:g}"] for r in FROC_FP_RATES] == [0.25, 0.25, 0.5, 0.5, 0.75,
                                                               0.75, 0.75]
    assert m["froc_score"] == pytest.approx(3.75 / 7)
    # between operating points: linear, (1.0, .5) -> (1.5, .5) -> ... 0.75 FP/scan
    assert froc_sensitivities(fps, sens, (0.75, 1.75))["froc_sens@1.75"] == pytest.approx(0.75)


def test_froc_matches_monai():
    from monai.metrics import compute_froc_curve_data, compute_froc_score

    rng = np.random.default_rng(0)
    tp = rng.uniform(0.2, 1.0, 50)
    fp = rng.uniform(0.0, 0.9, 300)
    lesions, scans = 60, 12  # 25 FP per scan at the lowest threshold: past the last rate (8)
    m_fps, m_sens = compute_froc_curve_data(fp, tp, lesions, scans)
    _, fps, sens = froc_curve(tp, fp, lesions, scans)
    ours = froc_sensitivities(fps, sens)
    assert ours["froc_score"] == pytest.approx(
        compute_froc_score(m_fps, m_sens, FROC_FP_RATES), abs=1e-12)
    monai_each = np.interp(FROC_FP_RATES, m_fps[::-1], m_sens[::-1])
    assert [ours[f"froc_sens@{r:g}"] for r in FROC_FP_RATES] == pytest.approx(monai_each,
                                                                            abs=1e-12)
    # every MONAI operating point is one of ours (MONAI leaves out the lowest score only)
    ours_pts = set(zip(np.round(fps, 12), np.round(sens, 12)))
    assert set(zip(np.round(m_fps, 12), np.round(m_sens, 12))) <= ours_pts


def test_lesion_candidates_scores():
    probs = np.zeros((12, 12))
    gt = np.zeros((12, 12), bool)
    gt[1:3, 1:3] = True           # lesion A: touched, peak .7 inside it
    probs[1:4, 1:4] = 0.3
    probs[2, 2] = 0.7
    gt[8:10, 8:10] = True         # lesion B: missed
    probs[6, 1] = 0.6             # a false positive blob, one pixel
    probs[6, 3:5] = 0.2           # another one, peak .2
    tp, fp = lesion_candidates(probs, gt)
    assert tp.tolist() == [0.7]
    assert sorted(fp.tolist()) == [0.2, 0.6]
    # with min_lesion_pixels=2 the one-pixel blob is no candidate
    assert lesion_candidates(probs, gt, min_lesion_pixels=2)[1].tolist() == [0.2]


def test_segmentation_evaluator_logs_froc():
    from detlab.evaluation.segmentation import SegmentationEvaluator

    ev = SegmentationEvaluator()
    probs = torch.zeros(1, 12, 12)
    mask = torch.zeros(1, 12, 12)
    mask[0, 1:3, 1:3] = 1
    probs[0, 2, 2] = 0.9           # lesion hit at 0.9
    probs[0, 8, 8] = 0.4           # one FP at 0.4
    for i in range(2):              # two scans with the same slice
        batch = Batch(images=torch.zeros(1, 1, 12, 12), targets=[{"orig_mask": mask}],
                      meta=[{"image_id": i, "orig_size": (12, 12)}])
        ev.update([Prediction(probs=probs)], batch)
    m = ev.compute()
    # curve: (0, 0) -> (0, 1) at .9 -> (1, 1) at .4: sensitivity 1 from 0 FP on
    assert m["froc_sens@0.125"] == 1.0 and m["froc_score"] == 1.0
    thr, fps, sens = ev.froc_curves()[0]
    assert fps.tolist() == [0.0, 0.0, 1.0] and sens.tolist() == [0.0, 1.0, 1.0]
