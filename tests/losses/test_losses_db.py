"""Tests for detlab.losses.db.DBLoss: hand-computed values on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from detlab.errors import ConfigError, DataError
from detlab.losses.db import DBLoss
from detlab.registry import LOSSES


def softplus(x: float) -> float:
    """BCE of logit x against target 0 (and of -x against target 1): ln(1 + e^x)."""
    return math.log1p(math.exp(x))


def _case(prob_logits, gt, mask=None, thresh=None, thresh_gt=None, thresh_mask=None, binary=None):
    n = len(gt)

    def t(v, default):
        return torch.tensor(v if v is not None else default, dtype=torch.float32)

    outputs = {
        "prob": t(prob_logits, None).view(1, 1, 1, n),
        "thresh": t(thresh, [0.0] * n).view(1, 1, 1, n),
        "binary": t(binary, [0.0] * n).view(1, 1, 1, n),
    }
    targets = {
        "prob_map": t(gt, None).view(1, 1, n),
        "prob_mask": t(mask, [1.0] * n).view(1, 1, n),
        "thresh_map": t(thresh_gt, [0.0] * n).view(1, 1, n),
        "thresh_mask": t(thresh_mask, [0.0] * n).view(1, 1, n),
    }
    return outputs, targets


NEG_LOGITS = [2.0, 1.0, 0.0, -1.0, -2.0]


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        # 1 positive (logit 0 -> ln 2), 5 negatives: keep min(5, 3 * 1) = 3 hardest.
        (None, (math.log(2) + softplus(2) + softplus(1) + softplus(0)) / 4),
        # The hardest negative is masked out: the next three are kept.
        ([1, 0, 1, 1, 1, 1], (math.log(2) + softplus(1) + softplus(0) + softplus(-1)) / 4),
        # Only 2 negatives left in the mask: min(2, 3) = 2.
        ([1, 1, 1, 0, 0, 0], (math.log(2) + softplus(2) + softplus(1)) / 3),
    ],
)
def test_mined_bce_by_hand(mask, expected: float) -> None:
    outputs, targets = _case([0.0] + NEG_LOGITS, [1, 0, 0, 0, 0, 0], mask=mask)
    out = DBLoss(prob_weight=5.0)(outputs, targets)
    assert out["loss_prob"].item() == pytest.approx(5.0 * expected, rel=1e-5)


def test_negative_ratio_changes_the_count() -> None:
    outputs, targets = _case([0.0] + NEG_LOGITS, [1, 0, 0, 0, 0, 0])
    out = DBLoss(prob_weight=1.0, negative_ratio=1.0)(outputs, targets)
    assert out["loss_prob"].item() == pytest.approx((math.log(2) + softplus(2)) / 2, rel=1e-5)


def test_thresh_l1_and_binary_dice_by_hand() -> None:
    outputs, targets = _case(
        [0.0, 0.0, 0.0, 0.0],
        gt=[1, 1, 0, 0],
        mask=[1, 1, 1, 0],
        thresh=[0.5, 0.2, 0.9, 0.9],
        thresh_gt=[0.7, 0.3, 0.3, 0.3],
        thresh_mask=[1, 1, 0, 0],
        binary=[0.8, 0.6, 0.5, 0.9],
    )
    out = DBLoss(thresh_weight=10.0, binary_weight=2.0)(outputs, targets)
    l1 = (0.2 + 0.1) / 2
    assert out["loss_thresh"].item() == pytest.approx(10.0 * l1, rel=1e-5)
    # Inside the mask: |P G| = 0.8 + 0.6, |P| = 0.8 + 0.6 + 0.5, |G| = 2.
    dice = 1 - 2 * 1.4 / (1.9 + 2.0)
    assert out["loss_binary"].item() == pytest.approx(2.0 * dice, rel=1e-5)


def test_no_text_is_finite_and_mines_min_negatives() -> None:
    outputs, targets = _case(NEG_LOGITS, [0, 0, 0, 0, 0], binary=[0.5] * 5)
    for v in outputs.values():
        v.requires_grad_(True)
    out = DBLoss(prob_weight=1.0, min_negatives=2)(outputs, targets)
    assert out["loss_prob"].item() == pytest.approx((softplus(2) + softplus(1)) / 2, rel=1e-5)
    assert out["loss_thresh"].item() == 0.0
    assert out["loss_binary"].item() == pytest.approx(1.0)
    total = sum(out.values())
    total.backward()
    assert all(torch.isfinite(v.grad).all() for v in outputs.values())
    assert outputs["prob"].grad.abs().sum() > 0


def test_everything_masked_is_finite() -> None:
    outputs, targets = _case(NEG_LOGITS, [0, 0, 0, 0, 0], mask=[0] * 5)
    out = DBLoss()(outputs, targets)
    assert all(torch.isfinite(v) for v in out.values())
    assert out["loss_prob"].item() == 0.0


def test_half_inputs_give_float32_losses() -> None:
    outputs, targets = _case([0.0] + NEG_LOGITS, [1, 0, 0, 0, 0, 0])
    outputs = {k: v.half() for k, v in outputs.items()}
    out = DBLoss()(outputs, targets)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())


def test_batch_of_maps_without_channel_dim() -> None:
    torch.manual_seed(0)
    outputs = {"prob": torch.randn(2, 8, 8), "thresh": torch.rand(2, 8, 8)}
    outputs["binary"] = torch.rand(2, 8, 8)
    keys = ("prob_map", "prob_mask", "thresh_mask")
    targets = {k: (torch.rand(2, 8, 8) > 0.5).float() for k in keys}
    targets["thresh_map"] = torch.rand(2, 8, 8)
    out = DBLoss()(outputs, targets)
    assert set(out) == {"loss_prob", "loss_thresh", "loss_binary"}


def test_shape_mismatch_and_missing_keys_raise_data_error() -> None:
    outputs, targets = _case([0.0] * 3, [1, 0, 0])
    outputs["thresh"] = torch.zeros(1, 1, 2, 3)
    with pytest.raises(DataError, match="thresh"):
        DBLoss()(outputs, targets)
    del outputs["binary"]
    with pytest.raises(DataError, match="binary"):
        DBLoss()(outputs, targets)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        (dict(prob_weight=-1.0), "prob_weight"),
        (dict(thresh_weight="10"), "thresh_weight"),
        (dict(negative_ratio=0.0), "negative_ratio"),
        (dict(min_negatives=1.5), "min_negatives"),
        (dict(eps=0.0), "eps"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        DBLoss(**kwargs)


def test_registered_and_buildable() -> None:
    loss = LOSSES.build(dict(type="DBLoss", prob_weight=1.0, negative_ratio=2.0))
    assert isinstance(loss, DBLoss) and loss.negative_ratio == 2.0
