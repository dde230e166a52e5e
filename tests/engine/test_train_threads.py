"""``train.num_threads``: applied by ``fit`` before training, validated."""

from __future__ import annotations

import pytest
import torch

from detlab.engine.trainer import _set_threads
from detlab.errors import ConfigError


def test_num_threads_applied_and_restored():
    before = torch.get_num_threads()
    try:
        _set_threads(None)
        assert torch.get_num_threads() == before
        _set_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_num_threads_rejects_bad_values(bad):
    with pytest.raises(ConfigError, match="train.num_threads"):
        _set_threads(bad)
