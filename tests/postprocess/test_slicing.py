"""Merge rules of sliced inference on hand-made boxes (NMS vs NMM vs greedy NMM, IoU vs IoS,
per class vs class-agnostic) and the settings' errors."""

import pytest
import torch

from detlab.errors import ConfigError
from detlab.postprocess.slicing import SlicedInference, merge_detections, pairwise_match

# A and B overlap by half of B (IoU 50/150 = 1/3, IoS 0.5); B and C by 30 px² (IoU 30/170,
# IoS 0.3); A and C not at all.
A, B, C = (0, 0, 10, 10), (5, 0, 15, 10), (12, 0, 22, 10)


def _run(boxes, scores, labels=None, **kw):
    labels = labels or [0] * len(boxes)
    out = merge_detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores),
                           torch.tensor(labels), **kw)
    return [tuple(round(v, 4) for v in b) for b in out[0].tolist()], out[1].tolist(), \
        out[2].tolist()


def test_metrics_by_hand():
    m = pairwise_match(torch.tensor([A, B, C], dtype=torch.float64).numpy(), "iou")
    assert m[0, 1] == pytest.approx(1 / 3) and m[1, 2] == pytest.approx(30 / 170)
    assert m[0, 2] == 0
    s = pairwise_match(torch.tensor([A, B, C], dtype=torch.float64).numpy(), "ios")
    assert s[0, 1] == pytest.approx(0.5) and s[1, 2] == pytest.approx(0.3)


def test_nms_iou_vs_ios():
    # threshold 0.4: IoU(A, B) = 0.33 keeps B, IoS(A, B) = 0.5 drops it
    boxes, scores, _ = _run([A, B, C], [0.9, 0.8, 0.7], method="nms", metric="iou",
                            threshold=0.4)
    assert boxes == [A, B, C] and scores == pytest.approx([0.9, 0.8, 0.7])
    boxes, scores, _ = _run([A, B, C], [0.9, 0.8, 0.7], method="nms", metric="ios",
                            threshold=0.4)
    assert boxes == [A, C]  # C survives: the box that overlapped it (B) was dropped


def test_greedy_nmm_vs_nmm_transitive():
    # IoS >= 0.3: A claims B; C matches only B.
    boxes, scores, _ = _run([C, A, B], [0.7, 0.9, 0.8], method="greedy_nmm", metric="ios",
                            threshold=0.3)
    assert boxes == [(0, 0, 15, 10), C] and scores == pytest.approx([0.9, 0.7])
    # NMM: B, claimed by A, claims C for A's group; C still matches the merged (0, 0, 15, 10)
    # (IoS 30/100) and joins it.
    boxes, scores, _ = _run([C, A, B], [0.7, 0.9, 0.8], method="nmm", metric="ios",
                            threshold=0.3)
    assert boxes == [(0, 0, 22, 10)] and scores == pytest.approx([0.9])
    # NMS at the same setting only drops B.
    boxes, _, _ = _run([C, A, B], [0.7, 0.9, 0.8], method="nms", metric="ios", threshold=0.3)
    assert boxes == [A, C]


def test_greedy_nmm_rechecks_the_growing_box():
    # IoU(A, tall) = IoU(A, flat) = 0.5: A claims both. Merged with `tall` first (higher score)
    # the box is 10x20 and IoU(merged, flat) = 50/200 < 0.5: flat is claimed but not merged,
    # so it is gone (SAHI's rule).
    tall, flat = (0, 0, 10, 20), (0, 0, 10, 5)
    boxes, scores, _ = _run([flat, A, tall], [0.7, 0.9, 0.8], method="greedy_nmm",
                            metric="iou", threshold=0.5)
    assert boxes == [(0, 0, 10, 20)] and scores == pytest.approx([0.9])


def test_per_class_vs_class_agnostic():
    same = (0, 0, 10, 10)
    boxes, _, labels = _run([A, same], [0.9, 0.85], [0, 1], method="nms", metric="iou",
                            threshold=0.5)
    assert boxes == [A, same] and labels == [0, 1]  # different classes never match
    boxes, _, labels = _run([A, same], [0.9, 0.85], [0, 1], method="nms", metric="iou",
                            threshold=0.5, class_agnostic=True)
    assert boxes == [A] and labels == [0]
    boxes, scores, labels = _run([B, A], [0.6, 0.9], [1, 0], method="greedy_nmm",
                                 metric="ios", threshold=0.5, class_agnostic=True)
    assert boxes == [(0, 0, 15, 10)] and labels == [0] and scores == pytest.approx([0.9])


def test_empty_input():
    out = merge_detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert [tuple(t.shape) for t in out] == [(0, 4), (0,), (0,)]


@pytest.mark.parametrize("key, value, words", [
    ("overlap", 1.0, "[0, 1)"), ("overlap", -0.1, "[0, 1)"), ("merge", "wbf", "one of"),
    ("slice_height", 0, "positive"), ("slice_width", -5, "positive"),
    ("match_metric", "giou", "one of"), ("match_threshold", 1.5, "[0, 1]"),
    ("batch_size", 0, "positive"), ("full_image", 1, "true or false"),
])
def test_bad_settings_name_the_key(key, value, words):
    with pytest.raises(ConfigError) as err:
        SlicedInference.from_config({key: value})
    assert f"inference.slicing.{key}={value!r}" in str(err.value) and words in str(err.value)


def test_unknown_key_and_section():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['slice'\]"):
        SlicedInference.from_config({"slice": 640})
    with pytest.raises(ConfigError, match="inference: unknown key"):
        SlicedInference.from_recipe({"inference": {"slicng": {}}})
    assert SlicedInference.from_recipe({}) is None
    s = SlicedInference.from_recipe({"inference": {"slicing": {"slice_height": 320}}})
    assert s.tile_size == (320, 320)
