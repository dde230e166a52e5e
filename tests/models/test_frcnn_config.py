"""FasterRCNNHead's nested recipe slots: the flat arguments of earlier versions are ConfigErrors
naming the nested key, partial component dicts keep the stage defaults, and the recipe's
anchor_generator sizes the RPN head (a mismatch names the recipe key)."""

import pytest
import torch

from detlab.cli import main
from detlab.errors import ConfigError
from detlab.models import Model
from detlab.models.heads.faster_rcnn import FasterRCNNHead
from detlab.models.heads.faster_rcnn_flat import LEGACY_KEYS
from detlab.recipe import load

from conftest import ROOT

DIGITS = ROOT / "recipes" / "digits_faster_rcnn.py"
SMALL = ["model.backbone.name=resnet10t", "model.neck.out_channels=16",
         "model.head.roi.box_head.representation_size=16"]

# one value of the old type per flat argument (what a recipe of 1b54f77 may hold)
FLAT = dict(
    anchor_sizes=(8, 16), aspect_ratios=(1.0,), rpn_conv_depth=2, rpn_fg_iou=0.6,
    rpn_bg_iou=0.2, rpn_batch_size=64, rpn_positive_fraction=0.4, rpn_pre_nms_topk=100,
    rpn_post_nms_topk=50, rpn_nms_iou=0.6, rpn_score_threshold=0.1, roi_levels=(2, 3),
    roi_output_size=5, roi_sampling_ratio=1, box_head="conv", representation_size=32,
    conv_channels=(8,), box_head_norm="batch", roi_fg_iou=0.6, roi_bg_iou=0.4,
    roi_batch_size=64, roi_positive_fraction=0.3, box_coder_weights=(1, 1, 1, 1),
    box_loss="GIoULoss", cls_loss=None, val_postprocess=dict(score_threshold=0.1),
    test_postprocess=dict(score_threshold=0.5),
)


def _head(**kwargs) -> FasterRCNNHead:
    return FasterRCNNHead(in_channels=[8, 8], strides=[4, 8], num_classes=2, **kwargs)


@pytest.mark.parametrize("arg", sorted(FLAT))
def test_each_flat_argument_names_its_nested_key(arg):
    assert set(FLAT) == set(LEGACY_KEYS)
    with pytest.raises(ConfigError) as err:
        _head(**{arg: FLAT[arg]})
    msg = str(err.value)
    assert f"{arg} -> model.head.{LEGACY_KEYS[arg]}" in msg and "--recipe" in msg


def test_flat_arguments_are_listed_together_and_typos_get_a_hint():
    with pytest.raises(ConfigError) as err:
        _head(rpn_fg_iou=0.6, test_postprocess=dict(score_threshold=0.5), rpm=dict())
    msg = str(err.value)
    assert "rpn_fg_iou -> model.head.rpn.assigner.pos_iou" in msg
    assert "test_postprocess -> model.head.postprocessor.test" in msg
    assert "unknown argument(s) 'rpm' (did you mean 'rpn'?)" in msg


def test_old_override_on_the_recipe_names_the_new_key(capsys):
    assert main(["train", str(DIGITS), "+model.head.roi_batch_size=32",
                 "--work-dir", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "roi_batch_size -> model.head.roi.sampler.num" in err


def test_partial_component_dicts_keep_the_stage_defaults():
    head = _head(rpn=dict(anchor_generator=dict(sizes=(8, 16)), sampler=dict(num=128),
                          assigner=dict(pos_iou=0.6)),
                 roi=dict(sampler=dict(pos_fraction=0.5), box_head=dict(representation_size=8)),
                 postprocessor=dict(type="BoxPostProcessor", test=dict(score_threshold=0.4)))
    assert (head.rpn.sampler.num, head.rpn.sampler.pos_fraction) == (128, 0.5)
    a = head.rpn.assigner
    assert (a.pos_iou, a.neg_iou, a.low_quality_matches) == (0.6, 0.3, True)
    assert (head.roi.sampler.num, head.roi.sampler.pos_fraction) == (512, 0.5)
    a = head.roi.assigner
    assert (a.pos_iou, a.neg_iou, a.low_quality_matches) == (0.5, 0.5, False)
    assert head.roi.box_predictor.cls_score.in_features == 8
    assert head.rpn.pre_nms_topk == {"train": 2000, "test": 1000}
    assert head.rpn.box_coder.weights == (1.0, 1.0, 1.0, 1.0)
    assert head.roi.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    val, test = (head.postprocessor.for_stage(s) for s in ("val", "test"))
    assert (val.score_threshold, val.iou_threshold, val.max_detections, val.pre_nms_topk) == (
        0.05, 0.5, 100, 1000)
    assert (test.score_threshold, test.iou_threshold) == (0.4, 0.5)


@pytest.mark.parametrize("sizes, ratios, per_location", [
    ("[[8, 12], [16, 24], [32, 48]]", "[1.0, 2.0]", 4),
    ("[6, 12, 24]", "[0.5, 1.0, 1.5, 2.0, 3.0]", 5),
])
def test_recipe_anchor_generator_sizes_the_rpn_head(sizes, ratios, per_location):
    recipe = load(DIGITS, [*SMALL, f"model.head.rpn.anchor_generator.sizes={sizes}",
                           f"model.head.rpn.anchor_generator.aspect_ratios={ratios}"])
    model = Model(**{k: v for k, v in recipe["model"].items() if k != "type"})
    head = model.head
    assert head.num_anchors == per_location
    assert head.rpn.core.head.cls_logits.out_channels == per_location
    assert head.rpn.core.head.bbox_pred.out_channels == 4 * per_location
    assert len(head.anchor_sizes) == len(model.neck.strides) == 3
    with torch.no_grad():
        objectness, _, anchors, per_level = head.rpn([torch.zeros(1, 16, 8, 8),
                                                      torch.zeros(1, 16, 4, 4),
                                                      torch.zeros(1, 16, 2, 2)])
    assert per_level == [64 * per_location, 16 * per_location, 4 * per_location]
    assert anchors.shape == (84 * per_location, 4)


@pytest.mark.parametrize("override, match", [
    ("model.head.rpn.anchor_generator.sizes=[8, 16]",
     r"model\.head\.rpn\.anchor_generator: sizes has 2 size group\(s\) but the model gives 3"),
    ("model.head.rpn.anchor_generator.sizes=[[8, 12], [16], [32]]",
     r"model\.head\.rpn\.anchor_generator: every level needs the same number of anchors per "
     r"location .*\[6, 3, 3\]"),
    ("model.head.rpn.anchor_generator.aspect_ratios=[[1.0], [1.0, 2.0], [1.0]]",
     r"model\.head\.rpn\.anchor_generator: every level needs the same number"),
])
def test_anchor_mismatch_names_the_recipe_key(override, match, capsys):
    recipe = load(DIGITS, [*SMALL, override])
    with pytest.raises(ConfigError, match=match):
        Model(**{k: v for k, v in recipe["model"].items() if k != "type"})
    assert main(["train", str(DIGITS), *SMALL, override, "--work-dir", "/nonexistent"]) == 2
    assert "model.head.rpn.anchor_generator" in capsys.readouterr().err


def test_component_given_by_name_keeps_the_defaults():
    head = _head(rpn=dict(anchor_generator=dict(sizes=(8, 16)), sampler="BalancedSampler",
                          assigner="MaxIoUAssigner"))
    assert (head.rpn.sampler.num, head.rpn.sampler.pos_fraction) == (256, 0.5)
    assert (head.rpn.assigner.pos_iou, head.rpn.assigner.low_quality_matches) == (0.7, True)


def test_rpn_box_space_loss_gets_decoded_anchors():
    from torchvision.ops import generalized_box_iou

    torch.manual_seed(0)
    head = _head(rpn=dict(anchor_generator=dict(sizes=(8, 16), aspect_ratios=(1.0,)),
                          loss_box=dict(type="GIoULoss"), sampler=dict(num=8)))
    feats = [torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]
    objectness, deltas, anchors, _ = head.rpn(feats)
    targets = [{"boxes": torch.tensor([[2.0, 2, 10, 10]]), "labels": torch.tensor([1])}]
    torch.manual_seed(1)
    _, box = head.rpn.loss(objectness, deltas, anchors, targets)
    torch.manual_seed(1)
    labels = head.rpn.assigner(anchors, targets[0]["boxes"]).labels
    pos, neg = head.rpn.sampler(labels)
    pred = head.rpn.box_coder.decode_single(deltas[0][pos], anchors[pos])
    giou = torch.diag(generalized_box_iou(pred, targets[0]["boxes"].expand(len(pred), 4)))
    expected = (1 - giou).sum() / int(pos.sum() + neg.sum())
    assert int(pos.sum()) >= 1 and float(box) == pytest.approx(float(expected), rel=1e-5)
