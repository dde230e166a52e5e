"""FasterRCNNHead: anchors derived from the recipe, build-time checks, torchvision as oracle for
proposals and the default RoI loss, the loss plug-in, per-stage post-processing, tiny training."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import fastrcnn_loss

from detlab.data.collate import collate
from detlab.data.datasets.synthetic_shapes import SyntheticShapes
from detlab.errors import ConfigError
from detlab.losses.focal import FocalLoss
from detlab.losses.iou import CIoULoss
from detlab.losses.smooth_l1 import SmoothL1Loss
from detlab.models import Model
from detlab.models.heads.faster_rcnn import FasterRCNNHead
from detlab.models.heads.roi_box import RoILoss
from detlab.structures import Batch
from torchvision.models.detection.rpn import RegionProposalNetwork

torch.set_num_threads(1)


def tiny_model(levels=(2, 3), sizes=((8,), (16,)), ratios=(0.5, 1, 2), rpn=None, roi=None,
               **head) -> Model:
    cfg = dict(
        type="FasterRCNNHead", num_classes=3,
        rpn={**dict(anchor_generator=dict(sizes=sizes, aspect_ratios=ratios), sampler=dict(num=64),
                    pre_nms_topk=dict(train=200, test=100), post_nms_topk=dict(train=64, test=32)),
             **(rpn or {})},
        roi={**dict(box_head=dict(representation_size=32), sampler=dict(num=32)), **(roi or {})},
    )
    cfg.update(head)
    return Model(backbone=dict(type="TimmBackbone", name="resnet10t", out_indices=(1, 2, 3)),
                 neck=dict(type="FPN", out_channels=16, levels=levels), head=cfg)


def shapes_batch(n: int = 4, seed: int = 0) -> Batch:
    ds = SyntheticShapes(num_samples=n, image_size=64, seed=seed, min_size=6, max_size=20)
    return collate([ds[i] for i in range(n)])


@pytest.mark.parametrize(
    "sizes, ratios, per_location",
    [(((8,), (16,)), (0.5, 1.0, 2.0), 3), (((8, 12), (16, 24)), (1.0, 2.0), 4),
     ((8, 16), (1.0,), 1), (((8, 11, 14), (16, 22, 28)), [[0.5, 1, 2], [1, 1.5, 2]], 9)],
)
def test_anchors_per_location_sizes_the_rpn_head(sizes, ratios, per_location):
    head = tiny_model(sizes=sizes, ratios=ratios).head
    assert head.num_anchors == per_location
    assert head.rpn.core.head.cls_logits.out_channels == per_location
    assert head.rpn.core.head.bbox_pred.out_channels == 4 * per_location
    feats = [torch.zeros(1, 16, 4, 5), torch.zeros(1, 16, 2, 3)]
    objectness, _, anchors, per_level = head.rpn(feats)
    assert per_level == [20 * per_location, 6 * per_location]
    assert objectness.shape == (1, 26 * per_location) and anchors.shape == (26 * per_location, 4)


def test_size_groups_must_match_feature_levels():
    key = r"model\.head\.rpn\.anchor_generator: sizes has 3 size group\(s\) but the model gives 2"
    with pytest.raises(ConfigError, match=key):
        tiny_model(sizes=(8, 16, 32))
    with pytest.raises(ConfigError, match=r"anchor_generator: every level needs the same number of "
                                          r"anchors per location.*\[6, 3\]"):
        tiny_model(sizes=((8, 12), (16,)))


def test_four_ratios_on_five_levels_build_and_train_without_touching_counts():
    model = tiny_model(levels=(2, 3, 4, 5, 6), sizes=(4, 8, 12, 24, 48),
                       ratios=(0.5, 1.0, 1.5, 2.0))
    assert model.head.num_anchors == 4 and model.neck.strides == [4, 8, 16, 32, 64]
    losses = model.loss(shapes_batch(2))
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(roi=dict(roi_align=dict(levels=(5,)))), r"model\.head\.roi\.roi_align\.levels"),
     (dict(roi=dict(box_head=dict(type="MLPBoxHead"))),
      r"unknown box head type 'MLPBoxHead'.*TwoMLPBoxHead"),
     (dict(levels=(2, 3, 4), sizes=(8, 16, 32), roi=dict(roi_align=dict(levels=(2, 4)))),
      "contiguous"),
     (dict(postprocessor=dict(type="BoxPostProcessor", val=dict(score_thresh=0.1))),
      "did you mean 'score_threshold'"),
     (dict(rpn=dict(post_nms_topk=dict(train=10))), r"model\.head\.rpn\.post_nms_topk"),
     (dict(rpn=dict(assigner=dict(pos_iou=0.2, neg_iou=0.3))),
      r"model\.head\.rpn\.assigner.*neg_iou=0.3 must be <= pos_iou=0.2"),
     (dict(rpn=dict(nms=dict(iou=0.5))),
      r"model\.head\.rpn\.nms got unknown key\(s\) 'iou' \(did you mean 'iou_threshold'\?\)"),
     (dict(roi=dict(sampler=dict(num=0))), r"model\.head\.roi\.sampler.*num must be an int >= 1"),
     (dict(roi=dict(box_head=dict(type="ConvFCBoxHead", norm="group"))),
      r"model\.head\.roi\.box_head.*norm must be one of \['none', 'batch'\]"),
     (dict(roi=dict(box_head=dict(type="TwoMLPBoxHead", conv_channels=(8,)))),
      r"TwoMLPBoxHead at 'model\.head\.roi\.box_head' got unknown argument\(s\) 'conv_channels'"),
     (dict(roi=dict(box_coder=dict(weights=(1, 1, 1)))), r"roi\.box_coder\.weights must be 4"),
     (dict(rpn=dict(in_channels=8)), r"model\.head\.rpn\.in_channels is set by the head"),
     (dict(roi=dict(pooler=dict())), r"model\.head\.roi got unknown key\(s\) 'pooler'"),
     (dict(num_classes=0), "num_classes")],
)
def test_bad_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        tiny_model(**kwargs)


def test_levels_with_different_channels_need_an_fpn():
    with pytest.raises(ConfigError, match="same number of channels"):
        FasterRCNNHead(in_channels=[64, 128], strides=[4, 8], num_classes=2,
                       rpn=dict(anchor_generator=dict(sizes=(8, 16))))


def test_proposals_equal_torchvision_filter_proposals():
    torch.manual_seed(0)
    head = tiny_model().head.eval()
    feats = [torch.randn(2, 16, 16, 16), torch.randn(2, 16, 8, 8)]
    objectness, deltas, anchors, per_level = head.rpn(feats)
    ours = head.rpn.proposals(objectness, deltas, anchors, per_level, (64, 64), "test")
    core = RegionProposalNetwork(None, head.rpn.core.head, 0.7, 0.3, 256, 0.5,
                                 dict(training=200, testing=100), dict(training=64, testing=32),
                                 0.7).eval()
    decoded = core.box_coder.decode(deltas.reshape(-1, 4), [anchors, anchors]).view(2, -1, 4)
    theirs, _ = core.filter_proposals(decoded, objectness, [(64, 64)] * 2, per_level)
    for a, b in zip(ours, theirs):
        assert len(a) == 32 and torch.equal(a, b)


def test_default_roi_loss_equals_torchvision_fastrcnn_loss():
    torch.manual_seed(0)
    logits, regression = torch.randn(12, 4), torch.randn(12, 16)
    labels = [torch.tensor([0, 1, 2, 0, 3, 0]), torch.tensor([0, 0, 0, 0, 0, 2])]
    targets = [torch.randn(6, 4), torch.randn(6, 4)]
    loss = RoILoss(SmoothL1Loss(beta=1 / 9), None, box_coder=None)
    ours = loss(logits, regression, labels, [None, None], [None, None], targets)
    cls, box = fastrcnn_loss(logits, regression, labels, targets)
    assert ours["loss_roi_cls"] == pytest.approx(float(cls), rel=1e-6)
    assert ours["loss_roi_box"] == pytest.approx(float(box), rel=1e-6)
    focal0 = RoILoss(SmoothL1Loss(), FocalLoss(alpha=None, gamma=0.0, activation="softmax"), None)
    out = focal0(logits, regression, labels, [None, None], [None, None], targets)
    assert out["loss_roi_cls"] == pytest.approx(float(cls), rel=1e-6)  # gamma = 0 is CE


def test_torch_losses_work_on_deltas_with_their_own_reduction():
    torch.manual_seed(0)
    loss = RoILoss(torch.nn.SmoothL1Loss(beta=0.5, reduction="sum"), None, box_coder=None)
    assert loss.space == "deltas"
    regression, targets = torch.randn(3, 12), [torch.randn(3, 4)]
    out = loss(torch.zeros(3, 3), regression, [torch.tensor([2, 0, 1])], [None], [None], targets)
    pos = regression.view(3, 3, 4)[[0, 2], [2, 1]]
    expected = F.smooth_l1_loss(pos, targets[0][[0, 2]], beta=0.5, reduction="sum")
    assert float(out["loss_roi_box"]) == pytest.approx(float(expected), rel=1e-6)
    empty = loss(torch.zeros(2, 3), regression[:2], [torch.tensor([0, 0])], [None], [None],
                 [targets[0][:2]])
    assert empty["loss_roi_box"].item() == 0.0


def test_iou_losses_compare_decoded_boxes_with_matched_ground_truth():
    head = tiny_model(roi=dict(loss_box=dict(type="CIoULoss", weight=10.0))).head
    assert head.roi.criterion.space == "boxes"
    proposals = [torch.tensor([[10.0, 10, 30, 40], [0, 0, 8, 8]])]
    gt = [torch.tensor([[12.0, 8, 30, 44], [0, 0, 1, 1]])]
    regression = torch.zeros(2, 16)
    regression[0, 8:12] = torch.tensor([0.1, -0.2, 0.05, 0.1])  # class 1 (label 2) deltas
    out = head.roi.criterion(torch.zeros(2, 4), regression, [torch.tensor([2, 0])], proposals, gt,
                        [torch.zeros(2, 4)])
    pred = head.roi.box_coder.decode_single(regression[:1, 8:12], proposals[0][:1])
    expected = CIoULoss(weight=10.0)(pred, gt[0][:1], avg_factor=2.0)
    assert out["loss_roi_box"] == pytest.approx(float(expected), rel=1e-6)


def test_image_without_objects_gives_zero_box_losses():
    batch = shapes_batch(2)
    for t in batch.targets:
        t["boxes"], t["labels"] = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
        t["ignore"] = torch.zeros(0, dtype=torch.bool)
    for box_loss in (None, dict(type="GIoULoss")):
        torch.manual_seed(0)
        losses = tiny_model(roi=dict(loss_box=box_loss), rpn=dict(loss_box=box_loss)).loss(batch)
        assert losses["loss_rpn_box"].item() == 0.0 and losses["loss_roi_box"].item() == 0.0
        assert 0 < float(losses["loss_rpn_objectness"]) < math.inf
        assert 0 < float(losses["loss_roi_cls"]) < math.inf
        assert losses["loss_roi_box"].requires_grad


def test_thresholds_are_applied_by_stage_and_mapped_back():
    head = FasterRCNNHead(
        in_channels=[8, 8], strides=[4, 8], num_classes=2,
        rpn=dict(anchor_generator=dict(sizes=(8, 16))),
        roi=dict(box_head=dict(type="TwoMLPBoxHead", representation_size=8)),
        postprocessor=dict(type="BoxPostProcessor",
                           val=dict(score_threshold=0.3, iou_threshold=0.9),
                           test=dict(score_threshold=0.55, iou_threshold=0.5)),
    )
    # Three RoIs, zero deltas (boxes = proposals). IoU(A, B) = 360 / 440 = 0.82.
    proposals = [torch.tensor([[10.0, 10, 30, 30], [12, 10, 32, 30], [50, 50, 60, 70]])]
    probs = torch.tensor([[0.1, 0.9, 1e-6], [0.4, 0.6, 1e-6], [0.5, 1e-6, 0.5]])
    outputs = {"proposals": proposals, "cls_logits": probs.log(), "box_deltas": torch.zeros(3, 12),
               "image_size": (64, 80)}
    meta = dict(image_id=0, orig_size=(30, 40), scale=(2.0, 2.0), pad=(4, 0))
    batch = Batch(torch.zeros(1, 3, 64, 80), [{}], [meta])
    val = head.postprocess(outputs, batch, stage="val")[0]
    test = head.postprocess(outputs, batch, stage="test")[0]
    # val keeps A, B (IoU 0.82 < 0.9) and C; test drops B (NMS 0.5) and C (score 0.5 < 0.55)
    assert val.scores.tolist() == pytest.approx([0.9, 0.6, 0.5], rel=1e-5)
    assert val.labels.tolist() == [0, 0, 1]
    assert test.scores.tolist() == pytest.approx([0.9], rel=1e-5) and test.labels.tolist() == [0]
    # orig = (input - pad) / scale, pad = (top, left); C's bottom is clipped to orig h = 30
    torch.testing.assert_close(
        val.boxes, torch.tensor([[5.0, 3, 15, 13], [6, 3, 16, 13], [25, 23, 30, 30]]))
    with pytest.raises(ConfigError, match="stage"):
        head.postprocess(outputs, batch, stage="train")
    sweepable = set(head.postprocessor.sweepable)
    assert {"score_threshold", "iou_threshold", "max_detections"} <= sweepable


@pytest.mark.parametrize(
    "box_loss, cls_loss",
    [(None, None), (dict(type="CIoULoss", weight=10.0), None),
     (dict(type="DIoULoss", weight=10.0), dict(type="FocalLoss", activation="softmax",
                                               alpha=None, gamma=2.0))],
)
def test_tiny_training_loss_decreases(box_loss, cls_loss):
    torch.manual_seed(0)
    model = tiny_model(roi=dict(loss_box=box_loss, loss_cls=cls_loss))
    batch = shapes_batch(4)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    totals = []
    for _ in range(14):
        losses = model.loss(batch)
        total = sum(losses.values())
        assert torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total))
    assert sum(totals[-3:]) / 3 < 0.7 * sum(totals[:3]) / 3, totals
