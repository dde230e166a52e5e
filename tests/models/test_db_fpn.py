"""DBFPN: output channels/stride, odd map sizes, and the fused map against a functional
re-computation of the paper's neck with the module's own weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detlab.errors import ConfigError
from detlab.models.necks.db_fpn import DBFPN
from detlab.registry import NECKS


@pytest.mark.parametrize(
    "strides, sizes, inner, channels",
    [
        ((4, 8, 16, 32), [(16, 24), (8, 12), (4, 6), (2, 3)], 32, 32),
        ((4, 8, 16, 32), [(13, 25), (7, 13), (4, 7), (2, 4)], 16, 16),  # odd (ceil) sizes
        ((2, 4, 8, 16, 32), [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)], 32, 40),
        ((8,), [(5, 7)], 8, 2),
    ],
)
def test_fused_map_shape(strides, sizes, inner, channels) -> None:
    in_channels = [4 * (i + 1) for i in range(len(strides))]
    neck = NECKS.build(dict(type="DBFPN", inner_channels=inner), in_channels=in_channels,
                       strides=list(strides))
    (out,) = neck([torch.randn(2, c, *s) for c, s in zip(in_channels, sizes)])
    assert neck.channels == [channels] and neck.strides == [strides[0]]
    assert out.shape == (2, channels, *sizes[0])


def test_matches_functional_reference() -> None:
    torch.manual_seed(0)
    neck = DBFPN([4, 8, 16, 32], [4, 8, 16, 32], inner_channels=16)
    c2, c3, c4, c5 = (torch.randn(1, c, 32 // 2**i, 32 // 2**i) for i, c in
                      enumerate([4, 8, 16, 32]))

    def lat(i, x):
        return F.conv2d(x, neck.lateral[i].weight)

    def out(i, x):
        return F.conv2d(x, neck.smooth[i].weight, padding=1)

    in5 = lat(3, c5)
    out4 = F.interpolate(in5, scale_factor=2, mode="nearest") + lat(2, c4)
    out3 = F.interpolate(out4, scale_factor=2, mode="nearest") + lat(1, c3)
    out2 = F.interpolate(out3, scale_factor=2, mode="nearest") + lat(0, c2)
    p5 = F.interpolate(out(3, in5), scale_factor=8, mode="nearest")
    p4 = F.interpolate(out(2, out4), scale_factor=4, mode="nearest")
    p3 = F.interpolate(out(1, out3), scale_factor=2, mode="nearest")
    expected = torch.cat([p5, p4, p3, out(0, out2)], dim=1)
    torch.testing.assert_close(neck([c2, c3, c4, c5])[0], expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(inner_channels=10), "multiple of 4"), (dict(strides=[8, 8]), "increase"),
     (dict(in_channels=[4]), "one stride each"), (dict(in_channels=[4, 0]), "positive ints")],
)
def test_config_errors(kwargs, match) -> None:
    args = dict(in_channels=[4, 8], strides=[4, 8], inner_channels=16) | kwargs
    with pytest.raises(ConfigError, match=match):
        DBFPN(**args)
