"""One loss base: every box/quality loss is a ``Loss`` with ``weight`` and a ``name`` suffix;
``SigmoidBCELoss`` against torch's BCE as the oracle."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from detlab.errors import ConfigError
from detlab.losses import Loss
from detlab.losses.bce import SigmoidBCELoss
from detlab.registry import LOSSES

# registered name -> default name (the head reports ``loss_<name>``)
DEFAULT_NAMES = {
    "IoULoss": "iou", "GIoULoss": "giou", "DIoULoss": "diou", "CIoULoss": "ciou",
    "InnerIoULoss": "inner_ciou", "WIoULoss": "wiou", "DFLoss": "dfl",
    "QualityFocalLoss": "qfl", "VarifocalLoss": "vfl", "SigmoidBCELoss": "bce",
    "FocalLoss": "focal", "DiceLoss": "dice", "FocalTverskyLoss": "focal_tversky",
}


@pytest.mark.parametrize("name, default", sorted(DEFAULT_NAMES.items()))
def test_every_loss_is_a_loss_with_weight_and_name(name, default):
    loss = LOSSES.build(dict(type=name, weight=2.5))
    assert isinstance(loss, Loss)
    assert loss.weight == 2.5 and loss.name == default
    assert LOSSES.build(dict(type=name, name="mine")).name == "mine"
    with pytest.raises(ConfigError, match="weight"):
        LOSSES.build(dict(type=name, weight=-1))
    with pytest.raises(ConfigError, match="name"):
        LOSSES.build(dict(type=name, name="has space"))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sigmoid_bce_matches_torch(reduction):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 3, generator=g) * 3
    targets = torch.rand(7, 3, generator=g) * (torch.rand(7, 3, generator=g) > 0.5)
    per_anchor = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
    want = {"mean": per_anchor.mean(), "sum": per_anchor.sum(), "none": per_anchor}[reduction]
    got = SigmoidBCELoss(weight=2.0, reduction=reduction)(logits, targets)
    torch.testing.assert_close(got, 2.0 * want)


def test_sigmoid_bce_avg_factor_weight_and_empty():
    loss = SigmoidBCELoss()
    logits = torch.zeros(2, 2)  # sigmoid 0.5: BCE = ln 2 per class whatever the target
    got = loss(logits, torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
               weight=torch.tensor([1.0, 0.0]), avg_factor=4.0)
    assert got.item() == pytest.approx(2 * math.log(2) / 4, rel=1e-6)
    empty = loss(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 3))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        loss(torch.zeros(3), torch.zeros(3))
