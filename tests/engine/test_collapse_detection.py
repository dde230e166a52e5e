"""One collapse checker for every family: no positive assignment in a training epoch (YOLO's
task-aligned assigner on boxes below the finest stride), validation scores at the head's
prior, and the per-step counts heads publish in ``last_stats``."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

from detlab.engine.diagnostics import (
    DiagnosticsCallback,
    assignment_collapse_check,
    score_collapse_check,
)
from detlab.models.heads.faster_rcnn import FasterRCNNHead
from detlab.models.heads.yolo import YOLOHead
from detlab.structures import Batch, Prediction


def _yolo(**kw):
    torch.manual_seed(0)
    return YOLOHead([8, 8, 8], [8, 16, 32], num_classes=1, reg_max=4, cls_channels=8,
                    reg_channels=16, **kw)


def _feats(size=64):
    return [torch.randn(2, 8, size // s, size // s) for s in (8, 16, 32)]


def _batch(boxes, size=64):
    targets = [{"boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.zeros(len(b), dtype=torch.long)} for b in boxes]
    meta = [{"image_id": i, "orig_size": (size, size), "input_size": (size, size)}
            for i in range(len(boxes))]
    return Batch(images=torch.zeros(len(boxes), 3, size, size), targets=targets, meta=meta)


def _trainer(callbacks=(), epoch=0, step=60):
    return SimpleNamespace(is_global_zero=True, sanity_checking=False, current_epoch=epoch,
                           callbacks=list(callbacks), global_step=step)


def _epoch(cb, head, batches, trainer):
    module = SimpleNamespace(model=SimpleNamespace(head=head))
    cb.on_train_epoch_start(trainer, module)
    for i, batch in enumerate(batches):
        head.loss(_feats(), batch)
        cb.on_train_batch_end(trainer, module, None, batch, i)
    cb.on_train_epoch_end(trainer, module)


def test_yolo_counts_positive_assignments():
    head = _yolo()
    # 2 x 2 px boxes between the stride-8 anchor centres (4, 12, ...): no centre inside them
    head.loss(_feats(), _batch([[[1, 1, 3, 3]], [[17, 17, 19, 19]]]))
    stats = {k: int(v) for k, v in head.last_stats.items()}
    assert stats == {"num_pos": 0, "num_gt": 2, "num_gt_below_stride": 2}
    head.loss(_feats(), _batch([[[0, 0, 40, 40]], []]))
    assert int(head.last_stats["num_pos"]) > 0 and int(head.last_stats["num_gt"]) == 1
    assert int(head.last_stats["num_gt_below_stride"]) == 0


def test_zero_assignments_warn_with_causes(tmp_path, caplog):
    head, cb = _yolo(), DiagnosticsCallback(tmp_path)
    ema = EMAWeightAveraging(decay=0.9999)  # the trainer's train.ema callback
    with caplog.at_level(logging.WARNING, logger="detlab.diagnostics"):
        _epoch(cb, head, [_batch([[[1, 1, 3, 3]], [[17, 17, 19, 19]]])] * 3, _trainer([ema]))
    text = caplog.text
    assert "no positive anchor assignment in 3 training steps" in text
    assert "6 ground-truth boxes" in text and "6 of 6 boxes are" in text
    assert "finest stride 8 px" in text and "EMA is on (effective decay 0.9999 after 60 steps)" in text
    assert "learning rate" in text and "class mapping" in text
    assert "epoch 0: no positive anchor" in (tmp_path / "diagnostics" / "warnings.log").read_text()


def test_ramped_ema_is_not_blamed_once_its_window_is_short(tmp_path, caplog):
    """detlab's EMA ramps its decay (decay * (1 - exp(-updates / tau))): after 60 of 60 updates
    with tau=10 the window is ~1 / (1 - 0.9974) = 385 steps (> 30: blamed); with tau=1 and
    decay 0.9 it is ~10 steps (<= 30: not blamed)."""
    from detlab.engine.ema import ModelEMA

    head = _yolo()
    slow, fast = ModelEMA(decay=0.9999, tau=10), ModelEMA(decay=0.9, tau=1)
    slow.updates = fast.updates = 60
    with caplog.at_level(logging.WARNING, logger="detlab.diagnostics"):
        _epoch(DiagnosticsCallback(tmp_path), head,
               [_batch([[[1, 1, 3, 3]], [[17, 17, 19, 19]]])] * 3, _trainer([slow]))
    assert "EMA is on (effective decay 0.9974 after 60 steps)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="detlab.diagnostics"):
        _epoch(DiagnosticsCallback(tmp_path / "b"), head,
               [_batch([[[1, 1, 3, 3]], [[17, 17, 19, 19]]])] * 3, _trainer([fast]))
    assert "no positive anchor assignment" in caplog.text and "EMA is on" not in caplog.text


def test_no_warning_when_anchors_are_assigned(tmp_path, caplog):
    head, cb = _yolo(), DiagnosticsCallback(tmp_path)
    with caplog.at_level(logging.WARNING, logger="detlab.diagnostics"):
        _epoch(cb, head, [_batch([[[1, 1, 3, 3]], [[0, 0, 40, 40]]])], _trainer())
    assert caplog.text == ""


def test_faster_rcnn_counts_rpn_positives():
    torch.manual_seed(0)
    head = FasterRCNNHead([8, 8], [8, 16], num_classes=1,
                          rpn=dict(anchor_generator=dict(sizes=((16,), (32,)), aspect_ratios=(1.0,)),
                                   sampler=dict(num=16)),
                          roi=dict(box_head=dict(representation_size=16), sampler=dict(num=16)))
    feats = [torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)]
    batch = _batch([[[8, 8, 24, 24], [40, 40, 43, 43]]])
    head.loss(feats, batch)
    stats = {k: int(v) for k, v in head.last_stats.items()}
    assert stats["num_gt"] == 2 and stats["num_gt_below_stride"] == 1
    # [8, 8, 24, 24] is exactly the 16 px anchor at cell (1, 1): IoU 1; torchvision also keeps
    # each box's best anchor, so every box has at least one positive
    assert stats["num_pos"] >= 2 and stats["roi_num_pos"] >= 2


def _val(cb, head, preds, batch, trainer):
    module = SimpleNamespace(model=SimpleNamespace(head=head), evaluator=None, last_metrics={})
    cb.on_validation_epoch_start(trainer, module)
    cb.on_validation_batch_end(trainer, module, preds, batch, 0)
    cb.on_validation_end(trainer, module)


def test_scores_at_the_prior_warn(tmp_path, caplog):
    head = _yolo(prior_prob=0.01)
    assert head.score_prior == pytest.approx(0.01)
    batch = _batch([[[0, 0, 40, 40]], [[10, 10, 30, 30]]])
    flat = [Prediction(boxes=torch.rand(5, 4) * 30, scores=torch.full((5,), 0.0101),
                       labels=torch.zeros(5, dtype=torch.long)) for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="detlab.diagnostics"):
        _val(DiagnosticsCallback(tmp_path), head, flat, batch,
             _trainer([EMAWeightAveraging(decay=0.9999)], epoch=1))
    assert "every validation score is at the initial prior 0.01" in caplog.text
    assert "EMA is on (effective decay 0.9999 after 60 steps)" in caplog.text
    assert "learning rate" in caplog.text
    caplog.clear()
    learnt = [Prediction(boxes=torch.rand(3, 4) * 30, scores=torch.tensor([0.9, 0.3, 0.02]),
                         labels=torch.zeros(3, dtype=torch.long)) for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="detlab.diagnostics"):
        _val(DiagnosticsCallback(tmp_path / "b"), head, learnt, batch, _trainer(epoch=1))
    assert caplog.text == ""


@pytest.mark.parametrize("summary,expected", [
    (dict(num_gt=4, num_pred=0), "no box predicted"),
    (dict(num_gt=4, num_pred=10, max_score=0.5, min_score=0.499), "scores are equal"),
    (dict(num_gt=4, num_pred=10, max_score=0.015, min_score=0.001), "initial prior"),
    (dict(num_gt=4, num_pred=10, max_score=0.5, min_score=0.001), None),
    (dict(num_gt=0, num_pred=0), None),  # nothing to judge
])
def test_score_collapse_table(summary, expected):
    message = score_collapse_check(summary, prior=0.01)
    assert message is None if expected is None else expected in message


def test_stride_named_only_when_boxes_are_below_it():
    summary = dict(num_gt=4, num_pred=0)
    big = score_collapse_check(summary, stride=8, train={"num_gt": 9, "num_gt_below_stride": 0})
    assert "finest stride" not in big
    small = score_collapse_check(summary, stride=8, train={"num_gt": 9, "num_gt_below_stride": 3})
    assert "smaller than the finest stride 8 px (3 of 9 boxes are)" in small


def test_ema_named_only_when_it_can_be_the_cause():
    summary = dict(num_gt=4, num_pred=0)
    assert "EMA" not in score_collapse_check(summary, ema_decay=0.0)  # trainer runs no EMA
    assert "EMA with a high decay" in score_collapse_check(summary)  # unknown: a candidate


def test_assignment_check_needs_ground_truth():
    assert assignment_collapse_check({"steps": 3, "num_pos": 0, "num_gt": 0}) is None
    assert assignment_collapse_check({"steps": 3, "num_pos": 5, "num_gt": 2}) is None
    text = assignment_collapse_check({"steps": 3, "num_pos": 0, "num_gt": 7}, family="text")
    assert "no positive target pixel in 3 training steps" in text and "min_text_size" in text
