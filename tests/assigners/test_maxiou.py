"""MaxIoUAssigner and BalancedSampler against torchvision's Matcher and
BalancedPositiveNegativeSampler (the oracle), plus hand-computed cases."""

import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, Matcher
from torchvision.ops import box_iou

from detlab.assigners.maxiou import MaxIoUAssigner
from detlab.assigners.sampling import BalancedSampler
from detlab.errors import ConfigError
from detlab.registry import ASSIGNERS, BOX_SAMPLERS


def _random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 60
    wh = torch.rand(n, 2, generator=g) * 30 + 2
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("pos, neg, low", [(0.7, 0.3, True), (0.5, 0.5, False), (0.6, 0.2, False),
                                           (0.5, 0.4, True)])
def test_match_equals_torchvision_matcher(pos, neg, low):
    g = torch.Generator().manual_seed(0)
    ours = ASSIGNERS.build(dict(type="MaxIoUAssigner", pos_iou=pos, neg_iou=neg,
                                low_quality_matches=low))
    theirs = Matcher(pos, neg, allow_low_quality_matches=low)
    for _ in range(20):
        iou = box_iou(_random_boxes(5, g), _random_boxes(300, g))
        assert torch.equal(ours.match(iou), theirs(iou))


def test_hand_computed_assignment_and_labels():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])
    boxes = torch.tensor([
        [0.0, 0, 10, 10],   # IoU 1 with gt 0: positive
        [0, 0, 10, 5],      # IoU 0.5 with gt 0: ignored at (0.7, 0.3)
        [50, 50, 60, 60],   # IoU 0: negative
        [20, 0, 30, 4],     # IoU 0.4 with gt 1: ignored, but gt 1's best box: low-quality match
    ])
    strict = MaxIoUAssigner(pos_iou=0.7, neg_iou=0.3)
    res = strict(boxes, gt, torch.tensor([5, 7]))
    assert res.gt_index.tolist() == [0, -2, -1, -2] and res.labels.tolist() == [5, -1, 0, -1]
    low = MaxIoUAssigner(pos_iou=0.7, neg_iou=0.3, low_quality_matches=True)
    res = low(boxes, gt)
    assert res.gt_index.tolist() == [0, -2, -1, 1] and res.labels.tolist() == [1, -1, 0, 1]
    assert torch.equal(res.matched(gt), gt[[0, 0, 0, 1]])
    empty = low(boxes, torch.zeros(0, 4))
    assert empty.gt_index.tolist() == [-1] * 4 and empty.labels.tolist() == [0] * 4
    assert torch.equal(empty.matched(torch.zeros(0, 4)), torch.zeros(4, 4))


@pytest.mark.parametrize("cfg, match", [
    (dict(pos_iou=0.3, neg_iou=0.5), "neg_iou=0.5 must be <= pos_iou=0.3"),
    (dict(pos_iou=1.5), r"pos_iou must be a number >= 0 and <= 1"),
    (dict(low_quality_matches=1), "low_quality_matches must be True or False"),
])
def test_assigner_arguments(cfg, match):
    with pytest.raises(ConfigError, match=match):
        MaxIoUAssigner(**cfg)


@pytest.mark.parametrize("num, frac", [(256, 0.5), (16, 0.25), (8, 1.0), (500, 0.0)])
def test_sampler_draws_like_torchvision(num, frac):
    labels = [torch.randint(-1, 3, (400,), generator=torch.Generator().manual_seed(s))
              for s in range(3)]
    torch.manual_seed(5)
    theirs = BalancedPositiveNegativeSampler(num, frac)(labels)
    torch.manual_seed(5)
    ours = BOX_SAMPLERS.build(dict(type="BalancedSampler", num=num, pos_fraction=frac))
    for i, lab in enumerate(labels):
        pos, neg = ours(lab)
        assert torch.equal(pos, theirs[0][i].bool()) and torch.equal(neg, theirs[1][i].bool())
        assert int(pos.sum()) == min(int((lab >= 1).sum()), int(num * frac))
        assert int(pos.sum() + neg.sum()) <= num and not (lab[pos | neg] == -1).any()


def test_sampler_arguments():
    with pytest.raises(ConfigError, match="num must be an int >= 1"):
        BalancedSampler(num=0)
    with pytest.raises(ConfigError, match="pos_fraction must be a number >= 0 and <= 1"):
        BalancedSampler(pos_fraction=True)
