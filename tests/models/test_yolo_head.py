"""YOLOHead: DFL decoding, anchor points per level, loss swaps from recipe overrides, empty
images, decoupled gradients, ignore regions, and predictions mapped back to original pixels."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from detlab.errors import ConfigError, DataError
from detlab.models.heads import YOLOHead
from detlab.recipe import load
from detlab.registry import MODELS
from detlab.structures import Batch

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "helmet_yolo_p2.py"
R = 16  # reg_max


def _head(**kwargs) -> YOLOHead:
    torch.manual_seed(0)
    kwargs = {"in_channels": [8, 8], "strides": [8, 16], "num_classes": 2, "cls_channels": 8,
              "reg_channels": 16, **kwargs}
    return YOLOHead(**kwargs)


def _feats(batch: int = 2, h: int = 64, w: int = 96) -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(batch, 8, h // 8, w // 8, requires_grad=True),
            torch.randn(batch, 8, h // 16, w // 16, requires_grad=True)]


def _bin_logits(values: torch.Tensor) -> torch.Tensor:
    """Logits ``(..., R)`` whose softmax expectation is exactly ``values`` (mass on 2 bins)."""
    low = values.floor().clamp(max=R - 2)
    frac = values - low
    logits = torch.full((*values.shape, R), -1e4)
    logits.scatter_(-1, low.long()[..., None], (1 - frac).clamp(min=1e-30).log()[..., None])
    logits.scatter_(-1, low.long()[..., None] + 1, frac.clamp(min=1e-30).log()[..., None])
    return logits


def _batch(boxes_per_image, size=(64, 96), ignore=None) -> Batch:
    targets = []
    for i, boxes in enumerate(boxes_per_image):
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        t = {"boxes": b, "labels": torch.arange(len(b)) % 2}
        if ignore is not None:
            t["ignore"] = torch.tensor(ignore[i], dtype=torch.bool)
        targets.append(t)
    meta = [dict(image_id=i, orig_size=size, scale=(1.0, 1.0)) for i in range(len(targets))]
    return Batch(images=torch.zeros(len(targets), 3, *size), targets=targets, meta=meta)


@pytest.mark.parametrize("k", [0, 1, 7.5, 14.25, 15])
def test_decode_dfl_expectation_times_stride(k):
    head = _head()
    out = head(_feats(batch=1))
    a = out["anchor_points"].shape[0]
    dist = _bin_logits(torch.full((1, a, 4), float(k))).reshape(1, a, 4 * R)
    boxes = head.decode(dist, out["anchor_points"], out["strides"])[0]
    d = k * out["strides"][:, None]
    want = torch.cat([out["anchor_points"] - d, out["anchor_points"] + d], dim=1)
    torch.testing.assert_close(boxes, want, atol=1e-4, rtol=0)


def test_anchor_points_per_level():
    out = _head()(_feats(batch=2, h=64, w=96))
    assert out["num_anchors_per_level"] == [8 * 12, 4 * 6]
    assert out["cls_logits"].shape == (2, 120, 2) and out["box_dist"].shape == (2, 120, 4 * R)
    points, strides = out["anchor_points"], out["strides"]
    assert points[0].tolist() == [4.0, 4.0] and points[11].tolist() == [92.0, 4.0]
    assert points[12].tolist() == [4.0, 12.0] and points[96].tolist() == [8.0, 8.0]
    assert points[-1].tolist() == [88.0, 56.0]
    assert (strides[:96] == 8).all() and (strides[96:] == 16).all()


@pytest.mark.parametrize(
    "overrides, kinds",
    [
        ([], ("SigmoidBCELoss", "CIoULoss", "TaskAlignedAssigner")),
        (["model.head.box_loss.type=WIoULoss"],
         ("SigmoidBCELoss", "WIoULoss", "TaskAlignedAssigner")),
        (["model.head.box_loss.type=InnerIoULoss", "model.head.box_loss.ratio=0.7"],
         ("SigmoidBCELoss", "InnerIoULoss", "TaskAlignedAssigner")),
        (["model.head.cls_loss.type=VarifocalLoss"],
         ("VarifocalLoss", "CIoULoss", "TaskAlignedAssigner")),
        (["model.head.assigner=ATSSAssigner"], ("SigmoidBCELoss", "CIoULoss", "ATSSAssigner")),
    ],
)
def test_recipe_swaps_build_and_give_finite_losses(overrides, kinds):
    recipe = load(RECIPE, overrides)
    torch.manual_seed(0)
    model = MODELS.build(recipe.section("model"), key="model")
    head = model.head
    assert (type(head.cls_loss).__name__, type(head.box_loss).__name__,
            type(head.assigner).__name__) == kinds
    assert head.box_loss.weight == 7.5 and head.cls_loss.weight == 0.5
    assert head.dfl_loss.weight == 1.5
    batch = _batch([[[10, 12, 30, 40], [40, 8, 46, 14]], []], size=(64, 64))
    out = model(batch.images)
    assert sorted(set(out["strides"].tolist())) == [4.0, 8.0, 16.0, 32.0]  # P2..P5
    losses = head.compute_loss(out, batch)
    assert set(losses) == {"loss_cls", "loss_box", "loss_dfl"}
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert losses["loss_box"] > 0 and losses["loss_dfl"] > 0 and losses["loss_cls"] > 0


def test_image_without_objects_zero_box_loss_positive_cls_loss():
    head = _head()
    feats = _feats()
    losses = head.loss(feats, _batch([[], []]))
    assert losses["loss_box"].item() == 0.0 and losses["loss_dfl"].item() == 0.0
    assert losses["loss_cls"].item() > 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)


def test_gradients_are_decoupled():
    head = _head()
    batch = _batch([[[10, 12, 30, 40]], [[50, 20, 90, 60]]])
    losses = head.loss(_feats(), batch)

    def grads(modules):
        return [p.grad for m in modules for p in m.parameters()]

    losses["loss_box"].backward(retain_graph=True)
    assert all(g is None for g in grads(head.cls_branches))
    assert any(g is not None and g.abs().sum() > 0 for g in grads(head.reg_branches))
    head.zero_grad(set_to_none=True)
    losses["loss_cls"].backward()
    assert all(g is None for g in grads(head.reg_branches))
    assert all(g is not None and torch.isfinite(g).all() for g in grads(head.cls_branches))


def test_ignore_region_silences_classification():
    head = _head()
    covering = [[0, 0, 96, 64]]  # every anchor point lies strictly inside
    losses = head.loss(_feats(), _batch([covering, covering], ignore=[[True], [True]]))
    assert losses["loss_cls"].item() == 0.0 and losses["loss_box"].item() == 0.0
    plain = head.loss(_feats(), _batch([covering, covering]))
    assert plain["loss_cls"].item() > 0 and plain["loss_box"].item() > 0


def test_perfect_output_maps_back_to_original_boxes():
    head = _head(postprocessor=dict(type="BoxPostProcessor", score_threshold=0.5))
    out = head(_feats(batch=2, h=64, w=64))
    points, strides = out["anchor_points"], out["strides"]
    a = points.shape[0]
    # image 0: original 96x128 letterboxed to 48x64 (scale 0.5), padded 8 px on top
    truth0 = torch.tensor([20.0, 30.0, 60.0, 70.0])
    scale, pad = (0.5, 0.5), (8, 0)
    box_in = truth0 * 0.5 + torch.tensor([0.0, 8.0, 0.0, 8.0])  # [10, 23, 30, 43]
    anchor0 = 4 * 8 + 2  # stride-8 cell (row 4, col 2): point (20, 36)
    assert points[anchor0].tolist() == [20.0, 36.0]
    # image 1: scale 1, a box sticking out of the 40x50 original is clipped
    anchor1 = 0  # point (4, 4)
    box1 = torch.tensor([-8.0, -4.0, 20.0, 30.0])
    dists = torch.zeros(2, a, 4)
    dists[0, anchor0] = torch.cat([points[anchor0] - box_in[:2], box_in[2:] - points[anchor0]])
    dists[1, anchor1] = torch.cat([points[anchor1] - box1[:2], box1[2:] - points[anchor1]])
    outputs = dict(out, box_dist=_bin_logits(dists / strides[None, :, None]).reshape(2, a, -1),
                   cls_logits=torch.full((2, a, 2), -20.0))
    outputs["cls_logits"][0, anchor0, 1] = 20.0
    outputs["cls_logits"][1, anchor1, 0] = 20.0
    meta = [dict(image_id=0, orig_size=(96, 128), scale=scale, pad=pad),
            dict(image_id=1, orig_size=(40, 50), scale=(1.0, 1.0), pad=(0, 0))]
    preds = head.postprocess(outputs, Batch(images=torch.zeros(2, 3, 64, 64), meta=meta))
    assert [len(p.boxes) for p in preds] == [1, 1]
    torch.testing.assert_close(preds[0].boxes[0], truth0, atol=1e-3, rtol=0)
    torch.testing.assert_close(preds[1].boxes[0], torch.tensor([0.0, 0.0, 20.0, 30.0]),
                               atol=1e-3, rtol=0)
    assert preds[0].labels.tolist() == [1] and preds[1].labels.tolist() == [0]
    assert preds[0].scores[0].item() == pytest.approx(1 / (1 + math.exp(-20)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_classes=0), "num_classes"),
        (dict(reg_max=1), "reg_max"),
        (dict(dfl_loss=dict(type="DFLoss", reg_max=8)), "reg_max"),
        (dict(prior_prob=1.5), "prior_prob"),
        (dict(in_channels=[8], strides=[8, 16]), "in_channels"),
        (dict(box_loss=dict(type="CIoULos")), "CIoULoss"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _head(**kwargs)


def test_bad_targets_raise_data_error():
    head = _head()
    bad = Batch(images=torch.zeros(1, 3, 64, 96), targets=[{"boxes": torch.zeros(2, 4)}])
    with pytest.raises(DataError, match="labels"):
        head.loss(_feats(batch=1), bad)
    wrong_label = _batch([[[1, 1, 20, 20]]])
    wrong_label.targets[0]["labels"] = torch.tensor([5])
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        head.loss(_feats(batch=1), wrong_label)


def test_prior_bias_init():
    head = _head(prior_prob=0.01)
    assert head.cls_branches[0][-1].bias[0].item() == pytest.approx(math.log(0.01 / 0.99))
    yolo = _head(prior_prob=None, prior_image_size=640)
    for branch, s in zip(yolo.cls_branches, (8, 16)):  # YOLOv8: log(5 / C / (640 / s)^2)
        assert branch[-1].bias[0].item() == pytest.approx(math.log(5 / 2 / (640 / s) ** 2))
