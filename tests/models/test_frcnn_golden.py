"""Golden values of FasterRCNNHead, recorded on 1b54f77 (flat arguments) before the head was split
into nested components (issue 12; the configs below are those flat settings in the nested form):
loss terms, collapse-check counts, proposals and val/test predictions of two tiny heads (the digits recipe's head shape, and a conv box head with every option changed)
on a fixed batch, plus the state_dict keys (old checkpoints must keep loading)."""

import copy

import pytest
import torch

from detlab.models.heads.faster_rcnn import FasterRCNNHead
from detlab.recipe import load
from detlab.structures import Batch

from conftest import ROOT

torch.set_num_threads(1)

CONFIGS = {
    # recipes/digits_faster_rcnn.py's head (representation_size 256 -> 32 for speed)
    "digits": dict(
        num_classes=10,
        rpn=dict(
            anchor_generator=dict(sizes=((10, 14.5), (20, 28.5), (40.5, 57)),
                                  aspect_ratios=(1.5, 1.86, 2.17)),
            pre_nms_topk=dict(train=1000, test=500), post_nms_topk=dict(train=300, test=100),
        ),
        roi=dict(
            roi_align=dict(sampling_ratio=1),
            box_head=dict(type="TwoMLPBoxHead", representation_size=32),
            sampler=dict(type="BalancedSampler", num=128, pos_fraction=0.25),
            loss_box=dict(type="SmoothL1Loss", beta=1 / 9), loss_cls=None,
        ),
        postprocessor=dict(
            type="BoxPostProcessor",
            val=dict(score_threshold=0.05, iou_threshold=0.5, max_detections=100),
            test=dict(score_threshold=0.05, iou_threshold=0.5, max_detections=100),
        ),
    ),
    "conv": dict(
        num_classes=3,
        rpn=dict(
            anchor_generator=dict(sizes=(8, 16, 32), aspect_ratios=(0.5, 1.0, 2.0)),
            conv_depth=2,
            assigner=dict(type="MaxIoUAssigner", pos_iou=0.6, neg_iou=0.2,
                          low_quality_matches=True),
            sampler=dict(type="BalancedSampler", num=64, pos_fraction=0.4),
            pre_nms_topk=200, post_nms_topk=dict(train=64, test=48),
            nms=dict(iou_threshold=0.6, score_threshold=0.01),
        ),
        roi=dict(
            roi_align=dict(levels=(2, 3), output_size=5, sampling_ratio=2),
            box_head=dict(type="ConvFCBoxHead", conv_channels=(16, 16), norm="batch",
                          representation_size=24),
            assigner=dict(type="MaxIoUAssigner", pos_iou=0.55, neg_iou=0.45),
            sampler=dict(type="BalancedSampler", num=48, pos_fraction=0.3),
            box_coder=dict(weights=(8.0, 8.0, 4.0, 4.0)),
            loss_box=dict(type="GIoULoss", weight=10.0),
            loss_cls=dict(type="FocalLoss", activation="softmax", alpha=None, gamma=2.0),
        ),
        postprocessor=dict(
            type="BoxPostProcessor",
            val=dict(score_threshold=0.02, max_detections=50),
            test=dict(score_threshold=0.2, iou_threshold=0.4, max_detections=20,
                      pre_nms_topk=200),
        ),
    ),
}

# Recorded with the code of 1b54f77 (python of this file's `_run`).
GOLDEN = {
    "digits": {
        "losses": {"loss_rpn_objectness": 0.6926426887512207, "loss_rpn_box": 0.0037935408763587475,
                   "loss_roi_cls": 2.309976577758789, "loss_roi_box": 0.06680348515510559},
        "stats": {"num_pos": 6, "num_gt": 3, "num_gt_below_stride": 0, "roi_num_pos": 9},
        "proposals": [100, 100], "proposal_sum": 25780.55078125,
        # per image: detections, score sum, box coordinate sum, label sum
        "val": [[100, 11.428874015808105, 10966.97265625, 694],
                [100, 11.394338607788086, 11335.4296875, 717]],
        "test": [[100, 11.428874015808105, 10966.97265625, 694],
                 [100, 11.394338607788086, 11335.4296875, 717]],
        "keys": [
            ("roi.box_head.fc6.bias", (32,)), ("roi.box_head.fc6.weight", (32, 784)),
            ("roi.box_head.fc7.bias", (32,)), ("roi.box_head.fc7.weight", (32, 32)),
            ("roi.box_predictor.bbox_pred.bias", (44,)),
            ("roi.box_predictor.bbox_pred.weight", (44, 32)),
            ("roi.box_predictor.cls_score.bias", (11,)),
            ("roi.box_predictor.cls_score.weight", (11, 32)),
            ("rpn.core.head.bbox_pred.bias", (24,)),
            ("rpn.core.head.bbox_pred.weight", (24, 16, 1, 1)),
            ("rpn.core.head.cls_logits.bias", (6,)),
            ("rpn.core.head.cls_logits.weight", (6, 16, 1, 1)),
            ("rpn.core.head.conv.0.0.bias", (16,)),
            ("rpn.core.head.conv.0.0.weight", (16, 16, 3, 3)),
        ],
    },
    "conv": {
        "losses": {"loss_rpn_objectness": 0.693128764629364, "loss_rpn_box": 0.017875945195555687,
                   "loss_roi_cls": 0.5207967758178711, "loss_roi_box": 0.02281399630010128},
        "stats": {"num_pos": 4, "num_gt": 3, "num_gt_below_stride": 0, "roi_num_pos": 3},
        "proposals": [48, 48], "proposal_sum": 12215.2763671875,
        "val": [[50, 13.26707649230957, 5191.931640625, 94],
                [50, 13.34057331085205, 5730.439453125, 94]],
        "test": [[20, 5.611392021179199, 2296.534423828125, 40],
                 [20, 5.657800674438477, 2339.62158203125, 40]],
        "keys": [
            ("roi.box_head.0.0.weight", (16, 16, 3, 3)), ("roi.box_head.0.1.bias", (16,)),
            ("roi.box_head.0.1.num_batches_tracked", ()),
            ("roi.box_head.0.1.running_mean", (16,)), ("roi.box_head.0.1.running_var", (16,)),
            ("roi.box_head.0.1.weight", (16,)), ("roi.box_head.1.0.weight", (16, 16, 3, 3)),
            ("roi.box_head.1.1.bias", (16,)), ("roi.box_head.1.1.num_batches_tracked", ()),
            ("roi.box_head.1.1.running_mean", (16,)), ("roi.box_head.1.1.running_var", (16,)),
            ("roi.box_head.1.1.weight", (16,)), ("roi.box_head.3.bias", (24,)),
            ("roi.box_head.3.weight", (24, 400)), ("roi.box_predictor.bbox_pred.bias", (16,)),
            ("roi.box_predictor.bbox_pred.weight", (16, 24)),
            ("roi.box_predictor.cls_score.bias", (4,)),
            ("roi.box_predictor.cls_score.weight", (4, 24)),
            ("rpn.core.head.bbox_pred.bias", (12,)),
            ("rpn.core.head.bbox_pred.weight", (12, 16, 1, 1)),
            ("rpn.core.head.cls_logits.bias", (3,)),
            ("rpn.core.head.cls_logits.weight", (3, 16, 1, 1)),
            ("rpn.core.head.conv.0.0.bias", (16,)),
            ("rpn.core.head.conv.0.0.weight", (16, 16, 3, 3)),
            ("rpn.core.head.conv.1.0.bias", (16,)),
            ("rpn.core.head.conv.1.0.weight", (16, 16, 3, 3)),
        ],
    },
}


def _batch() -> Batch:
    """Two 64 px inputs (48 x 64 originals padded by 8 rows on top); one ignored box."""
    targets = [
        {"boxes": torch.tensor([[4.0, 6, 14, 26], [30, 8, 40, 30], [20, 40, 28, 58]]),
         "labels": torch.tensor([1, 2, 0]), "ignore": torch.tensor([False, False, True])},
        {"boxes": torch.tensor([[10.0, 10, 50, 44]]), "labels": torch.tensor([2]),
         "ignore": torch.tensor([False])},
    ]
    meta = [dict(image_id=i, orig_size=(48, 64), scale=(1.0, 1.0), pad=(8, 0)) for i in range(2)]
    return Batch(torch.zeros(2, 3, 64, 64), targets, meta)


def _run(cfg: dict) -> dict:
    torch.manual_seed(0)
    head = FasterRCNNHead(in_channels=[16] * 3, strides=[4, 8, 16], **cfg)
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 16, 64 // s, 64 // s, generator=g) for s in (4, 8, 16)]
    batch = _batch()
    head.train()
    torch.manual_seed(2)  # the RPN / RoI samplers draw from the global generator
    res = {"losses": {k: float(v) for k, v in head.loss(feats, batch).items()},
           "stats": {k: int(v) for k, v in head.last_stats.items()}}
    head.eval()
    with torch.no_grad():
        out = head(feats)
        res["proposals"] = [len(p) for p in out["proposals"]]
        res["proposal_sum"] = float(sum(p.sum() for p in out["proposals"]))
        for stage in ("val", "test"):
            res[stage] = [[len(p.scores), float(p.scores.sum()), float(p.boxes.sum()),
                           int(p.labels.sum())] for p in head.postprocess(out, batch, stage=stage)]
    res["keys"] = sorted((k, tuple(v.shape)) for k, v in head.state_dict().items())
    return res


def _recipe_head() -> dict:
    """The digits recipe's head with the golden run's width (representation_size 32)."""
    head = copy.deepcopy(dict(load(ROOT / "recipes" / "digits_faster_rcnn.py")["model"]["head"]))
    head.pop("type")
    head["roi"]["box_head"]["representation_size"] = 32
    return head


@pytest.mark.parametrize("name", [*sorted(CONFIGS), "digits_recipe"])
def test_golden_values(name):
    cfg = _recipe_head() if name == "digits_recipe" else CONFIGS[name]
    got, want = _run(cfg), GOLDEN[name.replace("_recipe", "")]
    assert got["keys"] == want["keys"]
    assert got["stats"] == want["stats"] and got["proposals"] == want["proposals"]
    assert got["losses"] == pytest.approx(want["losses"], rel=1e-6, abs=1e-7)
    assert got["proposal_sum"] == pytest.approx(want["proposal_sum"], rel=1e-6)
    for stage in ("val", "test"):
        for g, w in zip(got[stage], want[stage], strict=True):
            assert g[0] == w[0] and g[3] == w[3], (stage, g, w)
            assert g[1:3] == pytest.approx(w[1:3], rel=1e-5), (stage, g, w)
