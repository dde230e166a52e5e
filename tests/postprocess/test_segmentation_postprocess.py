"""One segmentation threshold (issue 12): ``model.head.postprocessor.threshold`` decides the
head's masks and the evaluator's Dice/IoU; an evaluator threshold that disagrees is an error.

On 1b54f77 the head's ``threshold`` only changed ``Prediction.mask`` while the evaluator
thresholded ``probs`` at its own ``evaluator.threshold``: the head's knob moved no metric."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detlab.errors import ConfigError
from detlab.evaluation.segmentation import SegmentationEvaluator
from detlab.models.heads import AttentionUNetHead
from detlab.postprocess.segmentation import SegmentationPostProcessor
from detlab.registry import POSTPROCESSORS
from detlab.structures import Batch

# One 1x4 image, one class: probabilities 0.2, 0.4, 0.6, 0.8 (logits below), truth 0 1 1 0.
PROBS = torch.tensor([0.2, 0.4, 0.6, 0.8])
TRUTH = torch.tensor([[[0.0, 1.0, 1.0, 0.0]]])


def _run(threshold: float, evaluator: SegmentationEvaluator | None = None):
    head = AttentionUNetHead([4, 4], [1, 2], num_classes=1, loss=nn.Identity(),
                             decoder_channels=[4], postprocessor=dict(
                                 type="SegmentationPostProcessor", threshold=threshold))
    logits = torch.log(PROBS / (1 - PROBS)).reshape(1, 1, 1, 4)
    meta = [dict(image_id=0, orig_size=(1, 4), input_size=(1, 4), scale=(1.0, 1.0))]
    batch = Batch(images=torch.zeros(1, 1, 1, 4), targets=[{"mask": TRUTH}], meta=meta)
    preds = head.postprocess({"logits": logits, "attention": []}, batch)
    evaluator = evaluator or SegmentationEvaluator(num_bins=64)
    evaluator.update(preds, batch)
    return preds[0], evaluator.compute(), evaluator


@pytest.mark.parametrize("threshold, mask, dice", [
    # >= 0.3: pixels 2..4 -> TP 2, FP 1, FN 0 -> Dice 4 / 5
    (0.3, [False, True, True, True], 0.8),
    # >= 0.5: pixels 3, 4 -> TP 1, FP 1, FN 1 -> Dice 2 / 4
    (0.5, [False, False, True, True], 0.5),
    # >= 0.7: pixel 4 -> TP 0, FP 1, FN 2 -> Dice 0
    (0.7, [False, False, False, True], 0.0),
])
def test_head_threshold_decides_masks_and_dice(threshold, mask, dice) -> None:
    pred, metrics, evaluator = _run(threshold)
    assert pred.mask[0, 0].tolist() == mask
    assert pred.extras["threshold"] == threshold and evaluator.threshold == threshold
    assert metrics["dice"] == pytest.approx(dice)
    assert metrics["pr_auc"] == pytest.approx(_run(0.5)[1]["pr_auc"])  # threshold-free


def test_evaluator_threshold_that_disagrees_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"evaluator\.threshold=0\.3 differs .*0\.5.*"
                                          r"model\.head\.postprocessor\.threshold"):
        _run(0.5, SegmentationEvaluator(threshold=0.3, num_bins=64))
    _, metrics, _ = _run(0.5, SegmentationEvaluator(threshold=0.5, num_bins=64))  # agrees
    assert metrics["dice"] == pytest.approx(0.5)


def test_reset_forgets_the_taken_threshold_and_hand_made_predictions_use_0_5() -> None:
    _, _, evaluator = _run(0.3)
    evaluator.reset()
    assert evaluator.threshold == 0.5
    _, metrics, _ = _run(0.7, evaluator)
    assert metrics["dice"] == 0.0 and evaluator.threshold == 0.7


def test_post_processor_is_registered_sweepable_and_checked() -> None:
    post = POSTPROCESSORS.build(dict(type="SegmentationPostProcessor", threshold=0.25))
    assert isinstance(post, SegmentationPostProcessor) and post.sweepable == ("threshold",)
    probs = torch.tensor([[[0.25, 0.1]], [[0.75, 0.9]]])
    assert post(probs).tolist() == [[[True, False]], [[True, True]]]  # >= threshold
    assert post(probs, activation="softmax").tolist() == [[[False, False]], [[True, True]]]
    for bad in (0.0, 1.0, True, "0.5"):
        with pytest.raises(ConfigError, match="SegmentationPostProcessor: threshold"):
            SegmentationPostProcessor(bad)


def test_head_threshold_property_follows_the_test_stage() -> None:
    head = AttentionUNetHead([4, 4], [1, 2], num_classes=1, loss=nn.Identity(),
                             decoder_channels=[4], postprocessor=dict(
                                 type="SegmentationPostProcessor", threshold=0.4,
                                 test=dict(threshold=0.6)))
    assert head.threshold == 0.6  # read by sliced and volume prediction
    assert head.postprocessor.for_stage("val").threshold == 0.4
