"""Distribution Focal Loss: hand values, clamping and counting, shapes."""

from __future__ import annotations

import math

import pytest
import torch

from detlab.errors import ConfigError
from detlab.losses.dfl import DFLoss
from detlab.registry import LOSSES

# reg_max = 4, logits = log(p) with p = (0.1, 0.2, 0.3, 0.4): cross entropy of bin i = −log p_i
P = [0.1, 0.2, 0.3, 0.4]
LOGITS = torch.tensor(P).log()


def nll(i: int) -> float:
    return -math.log(P[i])


@pytest.mark.parametrize(
    "target, expected, clamped",
    [
        (0.0, nll(0), 0),
        (1.25, 0.75 * nll(1) + 0.25 * nll(2), 0),
        (2.0, nll(2), 0),
        (2.99, 0.01 * nll(2) + 0.99 * nll(3), 0),  # reg_max − 1 − clamp_eps: the last legal value
        (3.0, 0.01 * nll(2) + 0.99 * nll(3), 1),  # at the upper edge: clamped to 2.99
        (7.5, 0.01 * nll(2) + 0.99 * nll(3), 1),  # beyond it
        (-0.5, nll(0), 0),  # negative: clamped to 0, counted separately
    ],
)
def test_hand_values_and_clamping(target, expected, clamped):
    loss = DFLoss(reg_max=4, reduction="none")
    got = loss(LOGITS[None], torch.tensor([target]))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert loss.num_clamped == clamped
    assert loss.clamped_fraction == float(clamped)
    assert loss.num_negative == int(target < 0)


def test_counts_accumulate_and_fraction_is_per_call():
    loss = DFLoss(reg_max=16)
    logits = torch.zeros(5, 4, 16)
    target = torch.tensor([[0.0, 3.0, 15.0, 20.0]] * 5)  # 2 of 4 sides at/over the edge
    loss(logits, target)
    assert (loss.num_clamped, loss.clamped_fraction) == (10, 0.5)
    loss(logits[:2], torch.full((2, 4), 1.0))
    assert (loss.num_clamped, loss.clamped_fraction) == (10, 0.0)
    loss(logits[:1], torch.full((1, 4), 99.0))
    assert (loss.num_clamped, loss.clamped_fraction) == (14, 1.0)
    loss.reset_stats()
    assert (loss.num_clamped, loss.clamped_fraction, loss.num_negative) == (0, 0.0, 0)


def test_per_box_shape_is_the_mean_of_sides_and_weights_apply():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, 8, generator=g)
    target = torch.rand(6, 4, generator=g) * 7
    per_side = DFLoss(reg_max=8, reduction="none")(logits.reshape(24, 8), target.reshape(24))
    per_box = DFLoss(reg_max=8, reduction="none")(logits, target)
    assert per_box.shape == (6,)
    torch.testing.assert_close(per_box, per_side.reshape(6, 4).mean(1))
    w = torch.rand(6, generator=g)
    torch.testing.assert_close(
        DFLoss(reg_max=8, weight=0.5)(logits, target, w, avg_factor=3.0),
        0.5 * (per_box * w).sum() / 3.0,
    )


def test_gradient_is_finite_for_out_of_range_and_half_inputs():
    logits = torch.randn(4, 4, 16).half().requires_grad_(True)
    # 6e4: far out of range yet finite in float16 (1e6 would be inf: a non-finite target)
    target = torch.tensor([[0.0, 15.0, 16.0, 6e4], [-3.0, 0.5, 14.999, 7.0]] * 2).half()
    value = DFLoss()(logits, target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all()


def test_empty_is_zero_with_graph():
    logits = torch.zeros(0, 4, 16, requires_grad=True)
    value = DFLoss()(logits, torch.zeros(0, 4))
    assert value.item() == 0.0
    value.backward()
    assert DFLoss().clamped_fraction == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reg_max": 1}, "reg_max"),
        ({"reg_max": 16.0}, "reg_max"),
        ({"clamp_eps": 1.0}, "clamp_eps"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DFLoss(**kwargs)


def test_shape_errors_name_reg_max():
    with pytest.raises(ValueError, match="reg_max=16"):
        DFLoss()(torch.zeros(2, 4, 17), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="target"):
        DFLoss()(torch.zeros(2, 4, 16), torch.zeros(2, 3))


def test_registered():
    assert isinstance(LOSSES.build({"type": "DFLoss", "reg_max": 8}), DFLoss)
