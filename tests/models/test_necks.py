"""FPN and PAN necks: levels (P2, extra P6/P7), shapes on odd sizes, errors, gradients, and
numbers checked against a functional re-implementation (FPN) and YOLOv8n's parameter counts
(PAN)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detlab.errors import ConfigError
from detlab.models.heads.base import Head
from detlab.models.model import Model
from detlab.models.necks import FPN, PAN
from detlab.models.layers import C2f
from detlab.registry import NECKS

# resnet18, out_indices (1, 2, 3, 4)
R18_CHANNELS = [64, 128, 256, 512]
R18_STRIDES = [4, 8, 16, 32]


def fake_feats(sizes, channels=R18_CHANNELS, batch=2, seed=0):
    """Random backbone maps with the given (h, w) per level."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h, w, generator=g) for c, (h, w) in zip(channels, sizes)]


def exact_sizes(h, w, strides=R18_STRIDES):
    return [(h // s, w // s) for s in strides]


# 96x160 image: exact multiples. 50x84 image through stride-2 convs (ceil each time): 25x42 ->
# 13x21 (s4), 7x11 (s8), 4x6 (s16), 2x3 (s32): 7x11 is not twice 4x6. A backbone that pools
# without padding floors instead (7x11 -> 3x5), so PAN's stride-2 conv of 7x11 (4x6) must be
# resized to its 3x5 partner.
SIZES = {
    "96x160": exact_sizes(96, 160),
    "50x84": [(13, 21), (7, 11), (4, 6), (2, 3)],
    "floor": [(15, 22), (7, 11), (3, 5), (1, 2)],
}


def expected_sizes(sizes, levels):
    """Backbone levels keep their size; each extra level is ceil(half) of the one below."""
    by_level = {int(math.log2(s)): hw for s, hw in zip(R18_STRIDES, sizes)}
    out = []
    for k in levels:
        if k in by_level:
            out.append(by_level[k])
        else:
            h, w = out[-1]
            out.append((math.ceil(h / 2), math.ceil(w / 2)))
    return out


NECK_CASES = [
    (FPN, {}, (2, 3, 4, 5), [256] * 4),
    (FPN, {"levels": (3, 4, 5)}, (3, 4, 5), [256] * 3),
    (FPN, {"levels": (2, 3, 4, 5), "out_channels": 64}, (2, 3, 4, 5), [64] * 4),
    (FPN, {"levels": (3, 4, 5, 6, 7)}, (3, 4, 5, 6, 7), [256] * 5),
    (FPN, {"levels": (3, 4, 5, 6, 7), "extra_source": "backbone", "norm": "group"},
     (3, 4, 5, 6, 7), [256] * 5),
    (PAN, {"out_channels": 32}, (2, 3, 4, 5), [32] * 4),
    (PAN, {"levels": (3, 4, 5), "out_channels": [64, 128, 256]}, (3, 4, 5), [64, 128, 256]),
    (PAN, {"levels": (2, 3, 4, 5), "out_channels": [32, 64, 96, 128], "block": "conv"},
     (2, 3, 4, 5), [32, 64, 96, 128]),
    (PAN, {"levels": (3, 4, 5, 6, 7), "out_channels": 64, "norm": "group", "depth": 0.67},
     (3, 4, 5, 6, 7), [64] * 5),
]


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("cls,kwargs,levels,channels", NECK_CASES)
def test_levels_channels_strides_and_shapes(cls, kwargs, levels, channels, size):
    neck = cls(R18_CHANNELS, R18_STRIDES, **kwargs)
    assert neck.channels == channels
    assert neck.strides == [2**k for k in levels]
    feats = fake_feats(SIZES[size])
    outs = neck(feats)
    assert len(outs) == len(levels)
    got = [tuple(o.shape) for o in outs]
    want = [(2, c, h, w) for c, (h, w) in zip(channels, expected_sizes(SIZES[size], levels))]
    assert got == want


@pytest.mark.parametrize(
    "cls,kwargs",
    [(FPN, {"levels": (3, 4, 5, 6, 7), "extra_source": "backbone", "norm": "batch"}),
     (FPN, {"levels": (2, 3, 4, 5, 6), "norm": "group"}),
     (PAN, {"levels": (2, 3, 4, 5, 6), "out_channels": 32, "block": "c2f", "depth": 0.67}),
     (PAN, {"levels": (3, 4, 5), "out_channels": 32, "block": "conv", "norm": "none"})],
)
def test_gradient_reaches_every_parameter(cls, kwargs):
    neck = cls(R18_CHANNELS, R18_STRIDES, **kwargs)
    outs = neck(fake_feats(SIZES["50x84"]))
    g = torch.Generator().manual_seed(1)
    # random weights: a plain sum gives BatchNorm affine weights an exactly-zero gradient
    loss = sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs)
    loss.backward()
    for name, p in neck.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def _reference_fpn(neck, feats, extra_from_backbone):
    """FPN of arXiv:1612.03144 written with functional ops from the neck's weights; exact x2
    upsampling by repetition (input sizes are exact multiples)."""
    fpn = neck.fpn
    xs = [feats[i] for i in neck.plan.input_indices]
    lat = [F.conv2d(x, b[0].weight, b[0].bias) for b, x in zip(fpn.inner_blocks, xs)]
    for k in range(len(lat) - 2, -1, -1):
        lat[k] = lat[k] + lat[k + 1].repeat_interleave(2, -2).repeat_interleave(2, -1)
    outs = [F.conv2d(t, b[0].weight, b[0].bias, padding=1) for b, t in zip(fpn.layer_blocks, lat)]
    h = xs[-1] if extra_from_backbone else outs[-1]
    for i, conv in enumerate(fpn.extra_blocks.convs if fpn.extra_blocks else []):
        h = F.conv2d(h if i == 0 else F.relu(h), conv[0].weight, conv[0].bias, stride=2, padding=1)
        outs.append(h)
    return outs


@pytest.mark.parametrize(
    "levels,source", [((3, 4, 5), "pyramid"), ((2, 3, 4, 5), "pyramid"),
                      ((3, 4, 5, 6, 7), "pyramid"), ((4, 5, 6), "backbone")]
)
def test_fpn_matches_functional_reference(levels, source):
    torch.manual_seed(0)
    neck = FPN(R18_CHANNELS, R18_STRIDES, out_channels=32, levels=levels, extra_source=source)
    for p in neck.parameters():  # non-zero biases so a dropped bias would show
        nn.init.normal_(p, std=0.05)
    feats = fake_feats(SIZES["96x160"])
    got = neck(feats)
    want = _reference_fpn(neck, feats, source == "backbone")
    assert len(got) == len(want) == len(levels)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def _changed(neck, feats, level_index):
    """Which outputs change when only backbone map ``level_index`` is perturbed."""
    neck.eval()
    with torch.no_grad():
        base = neck(feats)
        bumped = list(feats)
        bumped[level_index] = feats[level_index] + 1.0
        new = neck(bumped)
    return [not torch.allclose(a, b) for a, b in zip(base, new)]


@pytest.mark.parametrize(
    "cls,c2_to_all,c3_to_top",
    # FPN only flows top-down: P3's input cannot reach P5. PAN's bottom-up path carries it.
    [(FPN, [False, False, False], [True, False, False]),
     (PAN, [False, False, False], [True, True, True])],
)
def test_information_flow_top_down_and_bottom_up(cls, c2_to_all, c3_to_top):
    neck = cls(R18_CHANNELS, R18_STRIDES, out_channels=32, levels=(3, 4, 5))
    feats = fake_feats(SIZES["96x160"])
    assert _changed(neck, feats, 0) == c2_to_all  # C2 unused when levels start at P3
    assert _changed(neck, feats, 1) == c3_to_top
    assert _changed(neck, feats, 3) == [True, True, True]  # C5 reaches every level


def test_pan_matches_yolov8n_neck_parameter_count():
    # YOLOv8n (backbone P3/P4/P5 = 64/128/256 channels) neck layers 12, 15, 16, 18, 19, 21:
    # C2f(384,128) 148224 + C2f(192,64) 37248 + Conv(64,64,3,2) 36992 + C2f(192,128) 123648
    # + Conv(128,128,3,2) 147712 + C2f(384,256) 493056 (ultralytics' model summary).
    neck = PAN([64, 128, 256], [8, 16, 32], out_channels=[64, 128, 256], depth=0.33)
    assert sum(p.numel() for p in neck.parameters()) == 986880
    assert sum(p.numel() for p in C2f(32, 32, 1, shortcut=True).parameters()) == 7360


def test_pan_conv_block_parameter_count_by_hand():
    # ConvBlock(24 -> 8): 1x1 24*8+8 = 200, 3x3 8*8*9+8 = 584; down conv 584; two blocks.
    neck = PAN([8, 16], [8, 16], out_channels=8, block="conv", depth=0.33, norm="none")
    assert sum(p.numel() for p in neck.parameters()) == 2 * (200 + 584) + 584


C3_5 = R18_CHANNELS[1:]  # resnet18 out_indices (2, 3, 4): strides 8, 16, 32


@pytest.mark.parametrize(
    "cls,channels,strides,kwargs,match",
    [
        (FPN, C3_5, [8, 16, 32], {"levels": (2, 3, 4, 5)},
         r"P2 \(stride 4\).*strides \[8, 16, 32\].*out_index 1"),
        (PAN, C3_5, [8, 16, 32], {"levels": (2, 3, 4, 5)}, r"P2 \(stride 4\).*out_indices"),
        (FPN, C3_5, [4, 8, 12], {}, r"strides=\[4, 8, 12\] must be powers of two"),
        (FPN, C3_5, [8, 4, 16], {}, "strictly increasing"),
        (FPN, R18_CHANNELS, [4, 8, 16], {}, "same length"),
        (FPN, R18_CHANNELS, R18_STRIDES, {"levels": (3, 5)}, "contiguous"),
        (FPN, R18_CHANNELS, R18_STRIDES, {"levels": (6, 7)}, "lowest level must come from"),
        (FPN, R18_CHANNELS, R18_STRIDES, {"levels": "345"}, "non-empty sequence"),
        (FPN, R18_CHANNELS, R18_STRIDES, {"norm": "layer"}, "norm must be one of .*got 'layer'"),
        (FPN, R18_CHANNELS, R18_STRIDES, {"extra_source": "c5"}, "extra_source='c5'"),
        (FPN, R18_CHANNELS, R18_STRIDES, {"out_channels": 0}, "out_channels=0"),
        (PAN, R18_CHANNELS, R18_STRIDES, {"levels": (3, 4, 5), "out_channels": [64, 128]},
         r"one positive int per level of levels=\(3, 4, 5\)"),
        (PAN, R18_CHANNELS, R18_STRIDES, {"levels": (5, 6)}, "at least two"),
        (PAN, R18_CHANNELS, R18_STRIDES, {"block": "csp"}, "block='csp'"),
        (PAN, R18_CHANNELS, R18_STRIDES, {"depth": 0}, "depth=0"),
    ],
)
def test_config_errors(cls, channels, strides, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(channels, strides, **kwargs)


def test_built_from_registry_with_model_defaults_and_json_lists():
    # Model passes in_channels/strides as defaults; a recipe round-tripped through JSON has lists.
    neck = NECKS.build({"type": "FPN", "levels": [3, 4, 5, 6]}, key="model.neck",
                       in_channels=R18_CHANNELS, strides=R18_STRIDES)
    assert isinstance(neck, FPN) and neck.strides == [8, 16, 32, 64]


class _PoolBackbone(nn.Module):
    """Stand-in for TimmBackbone: average-pool to each stride, 1x1 conv to its channels."""

    def __init__(self):
        super().__init__()
        self.channels, self.strides = list(R18_CHANNELS), list(R18_STRIDES)
        self.proj = nn.ModuleList(nn.Conv2d(3, c, 1) for c in self.channels)

    def forward(self, x):
        return [p(F.avg_pool2d(x, s)) for p, s in zip(self.proj, self.strides)]


class _EchoHead(Head):
    def __init__(self, in_channels, strides):
        super().__init__()
        self.in_channels, self.strides = list(in_channels), list(strides)

    def forward(self, feats):
        return feats


@pytest.mark.parametrize("neck_type", ["FPN", "PAN"])
def test_model_wires_neck_levels_to_head(neck_type):
    model = Model(backbone=_PoolBackbone(), head={"type": _EchoHead},
                  neck={"type": neck_type, "levels": (2, 3, 4, 5, 6), "out_channels": 32})
    assert model.head.in_channels == [32] * 5
    assert model.head.strides == [4, 8, 16, 32, 64]
    outs = model(torch.zeros(1, 3, 90, 150))  # padded to 96x160
    assert [tuple(o.shape[-2:]) for o in outs] == [(24, 40), (12, 20), (6, 10), (3, 5), (2, 3)]
