"""Quality Focal and Varifocal losses: hand values and torchvision's focal loss as an oracle."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from detlab.errors import ConfigError
from detlab.losses.quality_focal import QualityFocalLoss, VarifocalLoss
from detlab.registry import LOSSES

LN2 = math.log(2.0)


@pytest.mark.parametrize(
    "loss, logit, target, expected",
    [
        # σ(0) = 0.5 → BCE = ln 2 whatever the target
        (QualityFocalLoss(), 0.0, 0.8, 0.3**2 * LN2),
        (QualityFocalLoss(), 0.0, 0.0, 0.5**2 * LN2),
        (QualityFocalLoss(beta=1.0), 0.0, 0.8, 0.3 * LN2),
        (VarifocalLoss(), 0.0, 0.8, 0.8 * LN2),  # positive: weighted by its quality q
        (VarifocalLoss(), 0.0, 0.0, 0.75 * 0.5**2 * LN2),  # negative: α p^γ
        (VarifocalLoss(iou_weighted=False), 0.0, 0.8, LN2),
        (VarifocalLoss(alpha=0.5, gamma=1.0), 0.0, 0.0, 0.5 * 0.5 * LN2),
    ],
)
def test_hand_values(loss, logit, target, expected):
    got = loss(torch.tensor([[logit]]), torch.tensor([[target]]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_qfl_with_hard_targets_is_sigmoid_focal_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 5, generator=g) * 3
    targets = (torch.rand(20, 5, generator=g) > 0.7).float()
    want = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=2.0, reduction="none").sum(1)
    got = QualityFocalLoss(reduction="none")(logits, targets)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_vfl_matches_closed_form():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(12, 3, generator=g)
    q = torch.rand(12, 3, generator=g) * (torch.rand(12, 3, generator=g) > 0.5)
    p = logits.sigmoid()
    pos = -q * (q * p.log() + (1 - q) * (1 - p).log())
    neg = -0.75 * p.pow(2) * (1 - p).log()
    want = torch.where(q > 0, pos, neg).sum(1)
    torch.testing.assert_close(VarifocalLoss(reduction="none")(logits, q), want)


@pytest.mark.parametrize("cls", [QualityFocalLoss, VarifocalLoss])
def test_reduction_weight_avg_factor(cls):
    g = torch.Generator().manual_seed(2)
    logits, q = torch.randn(8, 4, generator=g), torch.rand(8, 4, generator=g)
    per_anchor = cls(reduction="none")(logits, q)
    assert per_anchor.shape == (8,)
    w = torch.rand(8, generator=g)
    torch.testing.assert_close(cls(reduction="sum")(logits, q, w), (per_anchor * w).sum())
    torch.testing.assert_close(
        cls(weight=2.0)(logits, q, w, avg_factor=q.sum()), 2 * (per_anchor * w).sum() / q.sum()
    )


@pytest.mark.parametrize("cls", [QualityFocalLoss, VarifocalLoss])
def test_extreme_logits_half_inputs_finite(cls):
    logits = torch.tensor([[-200.0, 200.0, 0.0], [60.0, -60.0, 1e4]]).half().requires_grad_(True)
    q = torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.3, 0.0]]).half()
    value = cls()(logits, q)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("cls", [QualityFocalLoss, VarifocalLoss])
def test_empty_is_zero_with_graph(cls):
    logits = torch.zeros(0, 3, requires_grad=True)
    value = cls()(logits, torch.zeros(0, 3))
    assert value.item() == 0.0
    value.backward()


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (QualityFocalLoss, {"beta": -1.0}, "beta"),
        (VarifocalLoss, {"alpha": -0.1}, "alpha"),
        (VarifocalLoss, {"iou_weighted": 1}, "iou_weighted"),
        (VarifocalLoss, {"reduction": "max"}, "reduction"),
    ],
)
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def test_registered():
    assert "QualityFocalLoss" in LOSSES and "VarifocalLoss" in LOSSES
