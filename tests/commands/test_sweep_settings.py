"""``detlab sweep`` over post-processor knobs: the one-slot keys, knobs a method ignores, every
metric in the table, and rows equal to a plain evaluation (faster-coco-eval vs pycocotools)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detlab.commands.sweep import check_keys, format_table, run_sweep
from detlab.engine.task import DetlabTask
from detlab.errors import ConfigError
from detlab.postprocess.staged import StagedPostprocessor
from detlab.recipe import load
from detlab.registry import EVALUATORS

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.val.num_samples=4", "data.val.image_size=64", "data.val.img_size=64",
        "data.batch_size=2", "data.num_workers=0"]
DEFAULT = dict(type="BoxPostProcessor", score_threshold=0.001, iou_threshold=0.7)


class SlotHead(torch.nn.Module):
    """A head with the one post-processing slot (what every head gets after the redesign)."""

    def __init__(self, **test):
        super().__init__()
        self.postprocessor = StagedPostprocessor(dict(type="BoxPostProcessor", test=test),
                                                 key="model.head.postprocessor",
                                                 default=DEFAULT, owner="SlotHead")


def test_slot_keys_read_sweepable():
    head = SlotHead()
    check_keys({"model.head.postprocessor.iou_threshold": [0.5],
                "model.head.postprocessor.test.method": ["diou"], "evaluator.max_dets": [10]},
               head)
    with pytest.raises(ConfigError, match="test stage"):
        check_keys({"model.head.postprocessor.val.iou_threshold": [0.5]}, head)
    with pytest.raises(ConfigError, match="for <knob> in score_threshold, pre_nms_topk"):
        check_keys({"model.head.postprocessor.test.nope": [1]}, head)
    with pytest.raises(ConfigError, match="cannot sweep 'model.head.reg_max'"):
        check_keys({"model.head.reg_max": [8]}, head)


def test_ignored_knobs_of_the_slot():
    from detlab.commands.sweep import _ignored

    keys = ["model.head.postprocessor.test.iou_threshold", "model.head.postprocessor.sigma"]
    assert list(_ignored(SlotHead(method="soft_gaussian"), keys)) == keys[:1]
    assert list(_ignored(SlotHead(method="standard"), keys)) == keys[1:]


@pytest.fixture(scope="module")
def task():
    torch.manual_seed(0)
    return DetlabTask(load(ROOT / "recipes" / "helmet_yolo.py", TINY))


def test_sweep_refuses_a_knob_every_row_ignores(task):
    with pytest.raises(ConfigError, match="Gaussian Soft-NMS .* every value gives the same"):
        run_sweep(task, {"model.head.postprocessor.method": ["soft_gaussian"],
                         "model.head.postprocessor.iou_threshold": [0.5, 0.7]})


def test_sweep_flags_ignored_rows_shows_every_metric_and_equals_eval(task):
    result = run_sweep(task, {"model.head.postprocessor.method": ["standard", "soft_gaussian"],
                              "model.head.postprocessor.iou_threshold": [0.5, 0.7]})
    rows = {tuple(r["settings"].values()): r for r in result}
    key = "model.head.postprocessor.iou_threshold"
    assert set(rows["soft_gaussian", 0.5]["ignored"]) == {key}
    assert not rows["standard", 0.5]["ignored"]
    np.testing.assert_equal(rows["soft_gaussian", 0.5]["metrics"],
                            rows["soft_gaussian", 0.7]["metrics"])
    table = format_table(result)
    assert "0.5*" in table and f"* {key}: ignored (Gaussian Soft-NMS" in table
    for name in ("AP_rel_tiny", "AP_rel_large", "AR_large", "AP/helmet_on", "AP/helmet_off"):
        assert name in table
    # the recipe's own setting (standard, 0.7) through the task's head and pycocotools
    evaluator = EVALUATORS.build(dict(task.recipe["evaluator"], backend="pycocotools"))
    from detlab.data.datamodule import DataModule

    data = DataModule(task.recipe.section("data"), size_divisor=task.model.size_divisor)
    task.model.eval()
    with torch.inference_mode():
        for batch in data.val_dataloader():
            evaluator.update(task.model.head.postprocess(task.model(batch.images), batch), batch)
    np.testing.assert_equal(rows["standard", 0.7]["metrics"], evaluator.compute())
