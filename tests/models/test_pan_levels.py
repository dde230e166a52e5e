"""PAN with one out_channels entry per backbone map and ``levels`` choosing a sub-range of them
(recipes/helmet_yolo_p2.py's advertised 'model.neck.levels=(3,4,5)' on a P2..P5 neck)."""

import pytest
import torch

from detlab.errors import ConfigError
from detlab.models.necks import PAN

CHANNELS, STRIDES = [16, 24, 32, 40], [4, 8, 16, 32]  # P2 .. P5


def test_per_backbone_out_channels_follow_the_chosen_levels():
    neck = PAN(CHANNELS, STRIDES, out_channels=(8, 12, 16, 20), levels=(3, 4, 5), depth=0.33)
    assert neck.channels == [12, 16, 20] and neck.strides == [8, 16, 32]
    feats = [torch.randn(1, c, 64 // s, 64 // s) for c, s in zip(CHANNELS, STRIDES)]
    assert [o.shape[1] for o in neck(feats)] == [12, 16, 20]


def test_levels_with_an_extra_level_still_need_one_entry_per_level():
    # P4..P6: P6 has no backbone map, so four per-map entries cannot say its channels.
    with pytest.raises(ConfigError, match=r"one positive int per level of levels=\(4, 5, 6\)"):
        PAN(CHANNELS, STRIDES, out_channels=(8, 12, 16, 20), levels=(4, 5, 6))
