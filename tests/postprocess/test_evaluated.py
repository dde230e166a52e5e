"""evaluated_only: a metrics-only run caps a head's box post-processor at what the evaluators
read, and restores it afterwards."""

from __future__ import annotations

import types

import pytest

from detlab.errors import ConfigError
from detlab.evaluation.coco import CocoEvaluator
from detlab.postprocess.box_nms import BoxPostProcessor
from detlab.postprocess.evaluated import evaluated_only, stage_postprocessor
from detlab.postprocess.staged import StagedPostprocessor


def _head(post):
    return types.SimpleNamespace(postprocessor=post)


class _ReadsAll:  # an evaluator that does not say what it reads
    pass


def test_the_largest_cap_of_the_evaluators_and_restored_after():
    post = BoxPostProcessor()
    evaluators = [CocoEvaluator(max_dets=20), CocoEvaluator(max_dets=100)]
    with evaluated_only(_head(post), evaluators) as cap:
        assert cap == 100 and post.evaluated_per_class == 100
    assert post.evaluated_per_class is None and "evaluated_per_class" not in vars(post)
    post.evaluated_per_class = 7
    with pytest.raises(RuntimeError), evaluated_only(_head(post), evaluators[:1]):
        assert post.evaluated_per_class == 20
        raise RuntimeError
    assert post.evaluated_per_class == 7


def test_nothing_changes_for_an_evaluator_that_reads_everything_or_another_postprocessor():
    post = BoxPostProcessor()
    for evaluators in ([CocoEvaluator(), _ReadsAll()], []):
        with evaluated_only(_head(post), evaluators) as cap:
            assert cap is None and post.evaluated_per_class is None
    with evaluated_only(_head(object()), [CocoEvaluator()]) as cap:
        assert cap is None


def test_the_test_stage_of_a_staged_slot():
    slot = StagedPostprocessor({"type": "BoxPostProcessor", "iou_threshold": 0.6, "test": {"iou_threshold": 0.5}},
                               key="model.head.postprocessor",
                               default={"type": "BoxPostProcessor"}, owner="test")
    assert stage_postprocessor(_head(slot)).iou_threshold == 0.5
    with evaluated_only(_head(slot), [CocoEvaluator()]):
        assert slot.for_stage("test").evaluated_per_class == 100
        assert slot.for_stage("val").evaluated_per_class is None


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "100"])
def test_an_evaluator_that_says_a_bad_number_is_a_config_error(bad):
    class Odd:
        def detections_read_per_class(self):
            return bad

    post = BoxPostProcessor()
    with pytest.raises(ConfigError, match=r"Odd.detections_read_per_class\(\) must return"), \
            evaluated_only(_head(post), [Odd()]):
        pass
    assert post.evaluated_per_class is None
