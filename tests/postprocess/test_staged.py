"""The post-processing slot: common settings, per-stage overrides, sweepable names."""

import pytest

from detlab.errors import ConfigError
from detlab.postprocess.box_nms import BoxPostProcessor
from detlab.postprocess.staged import StagedPostprocessor, sweepable_settings

DEFAULT = dict(type="BoxPostProcessor", score_threshold=0.001, max_detections=300,
               val=dict(max_detections=100))


def test_stage_overrides_merge_with_common_and_default():
    slot = StagedPostprocessor(
        dict(type="BoxPostProcessor", iou_threshold=0.6, test=dict(score_threshold=0.25)),
        key="model.head.postprocessor", default=DEFAULT, owner="H")
    val, test = slot.for_stage("val"), slot.for_stage("test")
    assert isinstance(val, BoxPostProcessor)
    assert (val.score_threshold, val.iou_threshold, val.max_detections) == (0.001, 0.6, 100)
    assert (test.score_threshold, test.iou_threshold, test.max_detections) == (0.25, 0.6, 300)


def test_none_uses_default_and_built_object_serves_both_stages():
    slot = StagedPostprocessor(None, key="k", default=DEFAULT, owner="H")
    assert slot.for_stage("val").max_detections == 100
    assert slot.for_stage("test").max_detections == 300
    obj = BoxPostProcessor(score_threshold=0.5)
    slot = StagedPostprocessor(obj, key="k", default=DEFAULT, owner="H")
    assert slot.for_stage("val") is obj and slot.for_stage("test") is obj


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"H: model.head.postprocessor has no 'type'"):
        StagedPostprocessor(dict(score_threshold=0.1), key="model.head.postprocessor",
                            default=DEFAULT, owner="H")
    with pytest.raises(ConfigError, match=r"k.test must be a dict"):
        StagedPostprocessor(dict(type="BoxPostProcessor", test=0.5), key="k", default=DEFAULT,
                            owner="H")
    with pytest.raises(ConfigError, match=r"k.val.*score_threshold"):
        StagedPostprocessor(dict(type="BoxPostProcessor", val=dict(score_threshold=2)), key="k",
                            default=DEFAULT, owner="H")
    slot = StagedPostprocessor(None, key="k", default=DEFAULT, owner="H")
    with pytest.raises(ConfigError, match="stage must be one of"):
        slot.for_stage("train")


def test_sweepable_defaults_to_constructor_arguments():
    names = sweepable_settings(BoxPostProcessor)
    assert "score_threshold" in names and "iou_threshold" in names and "self" not in names
