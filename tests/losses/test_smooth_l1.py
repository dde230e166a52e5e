"""SmoothL1Loss against torch's smooth_l1_loss, with torchvision's RoI normalization."""

import pytest
import torch
import torch.nn.functional as F

from detlab.errors import ConfigError
from detlab.losses.smooth_l1 import SmoothL1Loss


@pytest.mark.parametrize("beta", [1 / 9, 1.0, 0.0])
def test_matches_torch_sum_over_avg_factor(beta):
    torch.manual_seed(0)
    pred, target = torch.randn(7, 4), torch.randn(7, 4)
    expected = F.smooth_l1_loss(pred, target, beta=beta, reduction="sum") / 32
    got = SmoothL1Loss(beta=beta, weight=2.0)(pred, target, avg_factor=32)
    assert float(got) == pytest.approx(2 * float(expected), rel=1e-6)


def test_hand_values_and_empty_input():
    loss = SmoothL1Loss(beta=1.0, reduction="none")
    # |x| = 0.5 < beta: 0.5 * 0.25 = 0.125; |x| = 3: 3 - 0.5 = 2.5
    out = loss(torch.tensor([[0.5, 3.0]]), torch.zeros(1, 2))
    assert out.tolist() == pytest.approx([2.625])
    empty = SmoothL1Loss()(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, 4), avg_factor=5)
    assert empty.item() == 0.0 and empty.requires_grad
    assert SmoothL1Loss.target_space == "deltas"
    with pytest.raises(ConfigError, match="beta"):
        SmoothL1Loss(beta=-1)
