"""Golden values of the single-stage heads (YOLO, DB, Attention U-Net), recorded on the code
before the head redesign of issue 12 (commit 1b54f77) and hard-coded here: forward-output sums,
loss terms, post-processed predictions and the state-dict keys of tiny models built from a fixed
seed on a fixed batch. A refactor that moves code must keep every number.

``python tests/models/test_head_golden.py`` prints the current values (to re-record them only
for a deliberate behaviour change, said so in the commit).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detlab.evaluation.segmentation import SegmentationEvaluator
from detlab.models import Model

from test_every_head import _det_batch, _seg_batch, _text_batch


class _BCE(nn.Module):
    def forward(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits, target)


_TIMM = dict(type="TimmBackbone", name="resnet10t", pretrained=False)

CONFIGS: dict[str, dict[str, Any]] = {
    "YOLOHead": dict(
        backbone=dict(**_TIMM, out_indices=(1, 2, 3, 4)),
        neck=dict(type="PAN", levels=(2, 3, 4, 5), out_channels=16),
        head=dict(type="YOLOHead", num_classes=2,
                  postprocessor=dict(type="BoxPostProcessor", score_threshold=0.001,
                                   iou_threshold=0.7, max_detections=300)),
    ),
    "DBHead": dict(
        backbone=dict(**_TIMM, out_indices=(1, 2, 3, 4)),
        neck=dict(type="DBFPN", inner_channels=32),
        head=dict(type="DBHead",
                  postprocessor=dict(type="DBPostProcessor", binarize_threshold=0.005,
                                   box_threshold=0.005)),
    ),
    "AttentionUNetHead": dict(
        backbone=dict(**_TIMM, in_chans=1),
        head=dict(type="AttentionUNetHead", num_classes=2, loss=_BCE(),
                  postprocessor=dict(type="SegmentationPostProcessor", threshold=0.48),
                  prior_prob=None),
    ),
}
EVALUATOR = dict(num_bins=64)  # recorded with threshold=0.48: now taken from the predictions
BATCHES = {"YOLOHead": _det_batch, "DBHead": _text_batch, "AttentionUNetHead": _seg_batch}


def _keys_digest(model: nn.Module) -> str:
    return hashlib.sha1("\n".join(sorted(model.state_dict())).encode()).hexdigest()[:12]


def summary(name: str) -> dict[str, float]:
    """The recorded numbers of head ``name``: built with seed 0, one fixed batch."""
    torch.manual_seed(0)
    model = Model(**CONFIGS[name])
    batch = BATCHES[name]()
    params = [p.detach() for p in model.parameters()]
    out: dict[str, Any] = {"num_params": sum(p.numel() for p in params),
                           "param_sum": float(sum(p.double().sum() for p in params))}
    if name != "DBHead":  # its neck moved from model.head.neck to model.neck (remap tested)
        out["keys"] = _keys_digest(model)
    with torch.no_grad():
        raw = model(batch.images)
        for key, value in raw.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                out[f"out.{key}"] = float(value.double().sum())
        for i, alpha in enumerate(raw.get("attention", [])):
            out[f"out.attention{i}"] = float(alpha.double().sum())
    losses = model.loss(batch)
    out.update({key: float(value.detach()) for key, value in losses.items()})
    # One SGD step, so the predictions also check the gradients (an untrained head predicts
    # near-uniform boxes).
    sum(losses.values()).backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.eval()
    with torch.no_grad():
        preds = model.predict(batch)
    for i, pred in enumerate(preds):
        if pred.boxes is not None:
            out[f"pred{i}.n"] = len(pred.boxes)
            out[f"pred{i}.boxes"] = float(pred.boxes.double().sum())
            out[f"pred{i}.labels"] = int(pred.labels.sum())
        if pred.scores is not None:
            out[f"pred{i}.scores"] = float(pred.scores.double().sum())
        if pred.polygons is not None:
            out[f"pred{i}.n"] = len(pred.polygons)
            out[f"pred{i}.polygons"] = float(sum(np.asarray(p, np.float64).sum()
                                                 for p in pred.polygons))
        if pred.probs is not None:
            out[f"pred{i}.probs"] = float(pred.probs.double().sum())
            out[f"pred{i}.mask"] = int(pred.mask.sum())
    if name == "AttentionUNetHead":
        evaluator = SegmentationEvaluator(**EVALUATOR)
        evaluator.update(preds, batch)
        metrics = evaluator.compute()
        for key in ("dice", "iou", "pr_auc", "best_f1"):
            out[f"eval.{key}"] = metrics[key]
    return out


GOLDEN: dict[str, dict[str, Any]] = {
    'AttentionUNetHead': {
        'num_params': 8342446,
        'param_sum': 3002.8261948258596,
        'keys': 'c0768f096054',
        'out.logits': -4693.98468452238,
        'out.attention0': 20.96265947818756,
        'out.attention1': 106.93553891777992,
        'out.attention2': 353.91521391272545,
        'out.attention3': 1568.0392422676086,
        'loss_seg': 0.6801963448524475,
        'pred0.probs': 909.3136593103409,
        'pred0.mask': 960,
        'pred1.probs': 3637.157755225897,
        'pred1.mask': 3840,
        'eval.dice': 0.2303992303992304,
        'eval.iou': 0.1496875,
        'eval.pr_auc': 0.30166666666666664,
        'eval.best_f1': 0.4635035601643686,
    },
    'DBHead': {
        'num_params': 4967690,
        'param_sum': 2030.7603472300666,
        'out.prob_logits': -62484.97406053543,
        'out.thresh': 4682.0922163929245,
        'out.binary': 399.89016716885664,
        'loss_prob': 7.220313549041748,
        'loss_thresh': 2.0174150466918945,
        'loss_binary': 0.990362823009491,
        'pred0.scores': 0.01125640794634819,
        'pred0.n': 1,
        'pred0.polygons': 894.0,
        'pred1.scores': 0.011139829643070698,
        'pred1.n': 1,
        'pred1.polygons': 2105.203125,
    },
    'YOLOHead': {
        'num_params': 5185440,
        'param_sum': 3182.549193413445,
        'keys': '41bda5f78b34',
        'out.cls_logits': -18180.89631175995,
        'out.box_dist': 65605.399051141,
        'out.anchor_points': 40800.0,
        'out.strides': 2880.0,
        'loss_cls': 4.642175674438477,
        'loss_box': 3.7745699882507324,
        'loss_dfl': 4.112417697906494,
        'pred0.n': 14,
        'pred0.boxes': 1120.0,
        'pred0.labels': 7,
        'pred0.scores': 0.040281540248543024,
        'pred1.n': 14,
        'pred1.boxes': 2240.0,
        'pred1.labels': 7,
        'pred1.scores': 0.040281575988046825,
    },
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_head_golden_values(name: str) -> None:
    got = summary(name)
    want = GOLDEN[name]
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if isinstance(value, (int, str)):
            assert got[key] == value, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


if __name__ == "__main__":  # print the values to record
    torch.set_num_threads(1)
    for head in sorted(CONFIGS):
        print(f"    {head!r}: {summary(head)!r},")
