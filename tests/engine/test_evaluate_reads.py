"""``detlab eval`` (engine.inference.evaluate) caps NMS at what its evaluator reads, on the
head it runs (the inference copy), gives the uncapped numbers, and leaves the head as it was."""

from __future__ import annotations

from detlab.engine.inference import evaluate
from detlab.engine.inference_model import inference_task
from detlab.engine.trainer import load_task
from detlab.evaluation.coco import CocoEvaluator
from detlab.postprocess.box_nms import BoxPostProcessor
from detlab.postprocess.evaluated import stage_postprocessor


def test_evaluate_caps_nms_at_max_dets_with_the_same_numbers(det_ckpt, monkeypatch):
    caps = []
    original = BoxPostProcessor.batched
    monkeypatch.setattr(BoxPostProcessor, "batched", lambda self, *a: caps.append(
        self.evaluated_per_class) or original(self, *a))
    task = load_task(det_ckpt, ["evaluator.max_dets=50"])
    capped = evaluate(task)
    assert caps and set(caps) == {50}
    # the head eval ran is the inference copy's; both are uncapped again
    for head in (task.model.head, inference_task(task).model.head):
        assert stage_postprocessor(head).evaluated_per_class is None
    caps.clear()
    monkeypatch.setattr(CocoEvaluator, "detections_read_per_class", lambda self: None)
    assert evaluate(task) == capped and set(caps) == {None}
