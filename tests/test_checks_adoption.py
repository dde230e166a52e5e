"""Argument checks moved to detlab.checks: booleans are not numbers any more where the hand-written
checks let them through, and the shared message format names owner, argument and value."""

import pytest

from detlab.errors import ConfigError
from detlab.losses.db import DBLoss
from detlab.losses.dfl import DFLoss
from detlab.losses.iou import WIoULoss
from detlab.losses.quality_focal import VarifocalLoss


@pytest.mark.parametrize("kwargs, message", [
    (dict(prob_weight=True), "DBLoss: prob_weight must be a number >= 0, got True"),
    (dict(negative_ratio=True), "DBLoss: negative_ratio must be a number > 0, got True"),
    (dict(eps=float("inf")), "DBLoss: eps must be a number > 0, got inf"),
])
def test_dbloss_refuses_booleans_and_non_finite(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DBLoss(**kwargs)


def test_shared_messages_of_box_losses():
    with pytest.raises(ConfigError, match=r"WIoULoss: momentum must be a number > 0 and <= 1, "
                                          r"got 1\.5"):
        WIoULoss(momentum=1.5)
    with pytest.raises(ConfigError, match=r"DFLoss: reg_max must be an int >= 2, got True"):
        DFLoss(reg_max=True)
    with pytest.raises(ConfigError, match=r"VarifocalLoss: iou_weighted must be True or False, "
                                          r"got 1"):
        VarifocalLoss(iou_weighted=1)
    with pytest.raises(ConfigError, match=r"DFLoss: eps must be a number > 0 and < 1, got 0"):
        DFLoss(eps=0)
