"""TimmBackbone over timm's CNN families: every feature level, alone and in the usual FPN sets,
returns the map timm's full model computes there; invalid ``out_indices`` are ConfigErrors that
list the model's levels (``cs3darknet_s`` has 5 levels, so ``(3, 4, 5)`` is out of range, while
``cspdarknet53`` has a stride-1 level and 6 levels)."""

from __future__ import annotations

import functools

import pytest
import torch

from detlab.errors import ConfigError
from detlab.models.backbones import TimmBackbone

# one small member per family (pretrained=False); 64 px forward in ~0.02 s
FAMILIES = {
    "resnet10t": [2, 4, 8, 16, 32],
    "cs3darknet_s": [2, 4, 8, 16, 32],
    "cspdarknet53": [1, 2, 4, 8, 16, 32],
    "mobilenetv3_small_050": [2, 4, 8, 16, 32],
    "mobilenetv4_conv_small": [2, 4, 8, 16, 32],
    "tinynet_e": [2, 4, 8, 16, 32],  # efficientnet family
    "convnext_atto": [4, 8, 16, 32],
    "hrnet_w18_small": [2, 4, 8, 16, 32],
    "regnetx_002": [2, 4, 8, 16, 32],
}
SIZE = 64


@functools.lru_cache(maxsize=None)
def _reference(name: str) -> tuple[dict, list[torch.Tensor], list[int]]:
    """All levels of ``name``: weights, feature maps of a fixed input, channels."""
    torch.manual_seed(0)
    full = TimmBackbone(name).eval()
    with torch.no_grad():
        feats = full(_image())
    return full.state_dict(), feats, full.channels


def _image() -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _choices(n: int) -> list[tuple[int, ...]]:
    """Sets that together use every level: the even ones, the odd ones, and the last three by
    timm's negative indices (the usual P3-P5)."""
    return [tuple(range(0, n, 2)), tuple(range(1, n, 2)), (-3, -2, -1)]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_level_matches_the_full_model(name):
    torch.set_num_threads(1)
    state, feats, channels = _reference(name)
    strides = FAMILIES[name]
    assert len(feats) == len(strides)
    assert [SIZE // f.shape[-1] for f in feats] == strides  # the levels this test assumes
    for out_indices in _choices(len(strides)):
        levels = [i % len(strides) for i in out_indices]
        # built on the meta device (timm's weight init is most of the build time), then given
        # the reference weights: every parameter and buffer must come from them
        with torch.device("meta"):
            bb = TimmBackbone(name, out_indices=out_indices)
        bb = bb.to_empty(device="cpu").eval()
        missing, _ = bb.load_state_dict(state, strict=False)  # later stages may be dropped
        assert missing == [], (out_indices, missing[:3])
        assert {k for k, _ in bb.named_buffers()} <= set(bb.state_dict())  # none left unset
        assert bb.channels == [channels[i] for i in levels], out_indices
        assert bb.strides == [strides[i] for i in levels], out_indices
        with torch.no_grad():
            got = bb(_image())
        assert len(got) == len(levels), out_indices
        for level, g in zip(levels, got):
            torch.testing.assert_close(g, feats[level], msg=f"{name} {out_indices} {level}")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_out_of_range_and_unordered_levels_are_config_errors(name):
    n = len(FAMILIES[name])
    top = f"0\\.\\.{n - 1}"
    with torch.device("meta"):  # no weights needed to check levels: skip timm's init
        with pytest.raises(ConfigError, match=rf"\({n},\).*{name}.*{n} feature levels.*{top}"):
            TimmBackbone(name, out_indices=(n,))
        # timm itself accepts these and reports channels in the given order: a silent mislabel
        with pytest.raises(ConfigError, match=rf"\({n - 1}, {n - 2}\).*increasing"):
            TimmBackbone(name, out_indices=(n - 1, n - 2))
        with pytest.raises(ConfigError, match=rf"\({n - 1}, -1\).*distinct"):
            TimmBackbone(name, out_indices=(n - 1, -1))


def test_cs3darknet_s_p3_p5_are_levels_2_to_4():
    """(3, 4, 5) is P3-P5 of cspdarknet53 (its level 0 has stride 1), not of cs3darknet_s."""
    with pytest.raises(ConfigError, match=r"0: stride 2, 32 ch;.*E\.g\. out_indices=\(2, 3, 4\) "
                       r"for strides 8, 16, 32"):
        TimmBackbone("cs3darknet_s", out_indices=(3, 4, 5))
    with torch.device("meta"):
        assert TimmBackbone("cs3darknet_s", out_indices=(2, 3, 4)).strides == [8, 16, 32]
        assert TimmBackbone("cspdarknet53", out_indices=(3, 4, 5)).strides == [8, 16, 32]
