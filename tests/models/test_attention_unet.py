"""AttentionUNetHead: shapes, gates, loss plumbing, gradients, mapping back to original size."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detlab.errors import ConfigError, DataError
from detlab.models import Model
from detlab.models.heads import AttentionUNetHead
from detlab.models.heads.attention_unet import AttentionGate
from detlab.structures import Batch


class BCELoss(nn.Module):
    """Returns a Tensor (the head names the term ``loss_<name>``)."""

    name = "bce"

    def forward(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits, target)


class SoftCELoss(nn.Module):
    """Cross-entropy against a one-hot target; returns a dict of terms."""

    def forward(self, logits, target):
        ce = -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()
        return {"ce": ce, "loss_l1": (logits.softmax(1) - target).abs().mean()}


def _model(num_classes=1, loss=None, in_chans=1, backbone=None, **head):
    backbone = backbone or dict(type="TimmBackbone", name="resnet18", in_chans=in_chans)
    head = dict(type="AttentionUNetHead", num_classes=num_classes, loss=loss or BCELoss(), **head)
    return Model(backbone=backbone, head=head)


def _batch(images, num_classes=1, meta=None):
    torch.manual_seed(1)
    b, _, h, w = images.shape
    targets = [{"mask": (torch.rand(num_classes, h, w) > 0.5).float()} for _ in range(b)]
    meta = meta or [{"orig_size": (h, w), "input_size": (h, w), "scale": (1.0, 1.0)}] * b
    return Batch(images=images, targets=targets, meta=meta)


def test_shapes_and_attention_maps_at_64():
    torch.manual_seed(0)
    model = _model()
    out = model(torch.randn(2, 1, 64, 64))
    assert out["logits"].shape == (2, 1, 64, 64)
    # resnet18 levels at strides 2..32: one gate per skip (strides 16, 8, 4, 2), coarse to fine
    shapes = [tuple(a.shape) for a in out["attention"]]
    assert shapes == [(2, 1, 64 // s, 64 // s) for s in (16, 8, 4, 2)]
    for a in out["attention"]:
        assert 0.0 <= a.min() and a.max() <= 1.0


def test_gate_matches_hand_computation():
    gate = AttentionGate(skip_channels=1, gate_channels=1, inter_channels=1, ratio=2)
    with torch.no_grad():
        gate.theta_x.weight.fill_(1.0)  # 2x2 sum of ones = 4
        gate.phi_g.weight.fill_(1.0)
        gate.phi_g.bias.fill_(-1.0)
        gate.psi.weight.fill_(0.5)
        gate.psi.bias.fill_(-1.0)
    x, g = torch.ones(1, 1, 2, 2), torch.ones(1, 1, 1, 1)
    gated, alpha = gate(x, g)
    expected = 1 / (1 + math.exp(-(0.5 * max(0.0, 4 + 1 - 1) - 1)))  # sigmoid(1)
    assert torch.allclose(alpha, torch.full((1, 1, 2, 2), expected))
    assert torch.allclose(gated, x * expected)


def test_odd_input_size_loss_predictions_and_gradients():
    torch.manual_seed(0)
    model = _model(loss=BCELoss())
    batch = _batch(torch.randn(2, 1, 70, 90))
    out = model(batch.images)
    assert out["logits"].shape == (2, 1, 96, 96)  # Model pads to a multiple of 32
    losses = model.head.compute_loss(out, batch)
    target = torch.stack([t["mask"] for t in batch.targets])
    expected = F.binary_cross_entropy_with_logits(out["logits"][..., :70, :90], target)
    assert list(losses) == ["loss_bce"] and torch.allclose(losses["loss_bce"], expected)
    losses["loss_bce"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    preds = model.predict(batch)
    assert len(preds) == 2 and preds[0].probs.shape == (1, 70, 90)
    assert preds[0].mask.dtype == torch.bool
    assert torch.equal(preds[0].mask, preds[0].probs > 0.5)
    # gate maps cropped to the 70x90 input on their grids (strides 16, 8, 4, 2 → ceil)
    shapes = [tuple(a.shape) for a in preds[0].extras["attention"]]
    assert shapes == [(1, 5, 6), (1, 9, 12), (1, 18, 23), (1, 35, 45)]


@pytest.mark.parametrize(
    "meta, region",
    [  # input = orig * scale + pad; region = rows, cols of the resized image in the input
        (dict(orig_size=(35, 45), scale=(2.0, 2.0), input_size=(70, 90)), (0, 70, 0, 90)),
        (
            # input_size is the un-padded content (Batch contract), pad its top-left corner
            dict(orig_size=(30, 40), scale=(2.0, 2.0), pad=(5, 10), input_size=(60, 80)),
            (5, 65, 10, 90),
        ),
        (dict(orig_size=(140, 45), scale=(0.5, 2.0), input_size=(70, 90)), (0, 70, 0, 90)),
    ],
)
def test_predictions_mapped_to_original_size(meta, region):
    torch.manual_seed(0)
    model = _model().eval()
    batch = _batch(torch.randn(1, 1, 70, 90), meta=[meta])
    with torch.no_grad():
        out = model(batch.images)
        pred = model.head.postprocess(out, batch)[0]
    t, b, l, r = region
    probs = out["logits"][:, :, t:b, l:r].sigmoid()
    expected = F.interpolate(probs, size=meta["orig_size"], mode="bilinear")
    assert pred.probs.shape == (1, *meta["orig_size"])
    assert torch.allclose(pred.probs, expected[0], atol=1e-6)


def test_softmax_three_classes_with_class_maps():
    torch.manual_seed(0)
    model = _model(num_classes=3, loss=SoftCELoss(), activation="softmax")
    images = torch.randn(2, 1, 64, 64)
    class_map = torch.randint(0, 3, (64, 64))
    batch = Batch(
        images=images,
        targets=[{"mask": class_map}, {"mask": F.one_hot(class_map, 3).permute(2, 0, 1).float()}],
        meta=[{"orig_size": (32, 32), "scale": (2.0, 2.0)}] * 2,
    )
    out = model(images)
    losses = model.head.compute_loss(out, batch)
    assert sorted(losses) == ["loss_ce", "loss_l1"]
    expected = F.cross_entropy(out["logits"], class_map.expand(2, -1, -1))
    assert torch.allclose(losses["loss_ce"], expected, atol=1e-6)
    preds = model.head.postprocess(out, batch)
    assert preds[0].probs.shape == (3, 32, 32)
    assert torch.allclose(preds[0].probs.sum(0), torch.ones(32, 32), atol=1e-5)
    assert torch.equal(preds[0].mask.sum(0), torch.ones(32, 32, dtype=torch.long))
    assert torch.equal(preds[0].mask.float().argmax(0), preds[0].probs.argmax(0))


def test_unet_encoder_backbone_strides_start_at_one():
    torch.manual_seed(0)
    backbone = dict(type="UNetEncoder", depth=4, init_features=8, in_chans=1)
    model = _model(num_classes=2, backbone=backbone)
    assert model.head.final_up is None and len(model.head.blocks) == 3
    batch = _batch(torch.randn(2, 1, 40, 24), num_classes=2)
    out = model(batch.images)
    assert out["logits"].shape == (2, 2, 40, 24)
    assert [tuple(a.shape[-2:]) for a in out["attention"]] == [(10, 6), (20, 12), (40, 24)]
    model.loss(batch)["loss_bce"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_gate_none_is_plain_unet():
    model = _model(gate="none", backbone=dict(type="UNetEncoder", depth=3, init_features=4))
    out = model(torch.randn(1, 1, 16, 16))
    assert out["attention"] == [] and out["logits"].shape == (1, 1, 16, 16)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(decoder_channels=(64, 32)), "decoder_channels must be 5"),
        (dict(num_classes=1, activation="softmax"), "num_classes >= 2"),
        (dict(postprocessor=dict(type="SegmentationPostProcessor", threshold=1.5)), "threshold"),
        (dict(strides=[2, 4, 12, 16, 32]), "divide"),
        (dict(gate="multiplicative"), "gate"),
    ],
)
def test_bad_config(kwargs, match):
    args = dict(
        in_channels=[64, 64, 128, 256, 512], strides=[2, 4, 8, 16, 32], num_classes=1,
        loss=BCELoss(),
    )
    with pytest.raises(ConfigError, match=match):
        AttentionUNetHead(**{**args, **kwargs})


def test_mask_of_wrong_shape_is_data_error():
    model = _model(num_classes=2, backbone=dict(type="UNetEncoder", depth=2, init_features=4))
    batch = Batch(images=torch.randn(1, 1, 8, 8), targets=[{"mask": torch.zeros(3, 8, 8)}])
    with pytest.raises(DataError, match=r"image 0.*\(3, 8, 8\)"):
        model.loss(batch)


def test_prior_prob_sets_initial_probability():
    import math

    import torch

    from detlab.models.heads.attention_unet import AttentionUNetHead

    head = AttentionUNetHead([8, 16], [1, 2], num_classes=1, loss=torch.nn.Identity(),
                             decoder_channels=[8], prior_prob=0.01)
    assert head.classifier.bias.item() == pytest.approx(math.log(0.01 / 0.99))
    with pytest.raises(ConfigError, match="prior_prob"):
        AttentionUNetHead([8, 16], [1, 2], num_classes=1, loss=torch.nn.Identity(),
                          decoder_channels=[8], prior_prob=1.5)
