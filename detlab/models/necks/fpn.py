"""Feature Pyramid Network (Lin et al., arXiv:1612.03144) on top of any backbone."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock
from torchvision.ops.misc import Conv2dNormActivation

from ...checks import is_int
from ...errors import ConfigError
from ...registry import NECKS
from ..layers import Norm, check_norm, norm_factory
from .levels import plan_levels

__all__ = ["FPN"]


class _ExtraLevels(ExtraFPNBlock):
    """Levels above the backbone's top: a chain of 3x3 stride-2 convs, ReLU between them
    (RetinaNet's P6/P7, arXiv:1708.02002), for any number of extra levels."""

    def __init__(
        self, in_channels: int, out_channels: int, num_levels: int, from_backbone: bool, norm
    ) -> None:
        super().__init__()
        self.from_backbone = from_backbone
        self.convs = nn.ModuleList(
            Conv2dNormActivation(
                in_channels if i == 0 else out_channels,
                out_channels,
                kernel_size=3,
                stride=2,
                norm_layer=norm,
                activation_layer=None,
            )
            for i in range(num_levels)
        )
        for m in self.modules():  # same init as torchvision's FPN convs
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(
        self, results: list[Tensor], x: list[Tensor], names: list[str]
    ) -> tuple[list[Tensor], list[str]]:
        h = x[-1] if self.from_backbone else results[-1]
        for i, conv in enumerate(self.convs):
            h = conv(h if i == 0 else F.relu(h))
            results.append(h)
            names.append(f"extra{i}")
        return results, names


@NECKS.register
class FPN(nn.Module):
    """Feature Pyramid Network: lateral 1x1 convs, top-down nearest upsampling and addition,
    3x3 output convs (torchvision's ``FeaturePyramidNetwork``), plus optional extra levels.

    The top-down pathway upsamples to the lateral map's own size (not by a fixed factor), so
    odd-sized maps line up.

    Args:
        in_channels: channels of each backbone map, finest first (given by ``Model``).
        strides: stride of each backbone map in pixels, powers of two (given by ``Model``).
        out_channels: channels of every output level.
        levels: output pyramid levels ``P_k`` (stride ``2**k``), contiguous and ascending, e.g.
            ``(2, 3, 4, 5)`` for a stride-4 level or ``(3, 4, 5, 6, 7)`` for RetinaNet. Levels
            up to the backbone's top must be backbone outputs; higher ones are extra stride-2
            convs. Backbone maps below ``min(levels)`` or above ``max(levels)`` are unused.
            Default: the backbone's levels.
        norm: normalisation after each conv, one of :data:`~detlab.models.layers.NORMS`:
            ``"none"`` (the paper), ``"batch"``, ``"group"`` (GroupNorm with 32 groups,
            arXiv:1803.08494) or ``"instance"``.
        extra_source: input of the first extra level: the top pyramid output ``"pyramid"``
            (FCOS, torchvision RetinaNet v2) or the top backbone map ``"backbone"`` (RetinaNet
            paper, P6 from C5).

    Attributes:
        channels: output channels per level. strides: output strides per level (pixels).

    Shapes:
        ``forward(feats)``: the backbone's list of ``(B, in_channels[i], H_i, W_i)`` maps ->
        list of ``(B, out_channels, H_k, W_k)`` for each level of ``levels``; backbone levels
        keep their input size, each extra level is ``ceil`` of half the one below.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        out_channels: int = 256,
        levels: Sequence[int] | None = None,
        norm: Norm = "none",
        extra_source: Literal["pyramid", "backbone"] = "pyramid",
    ) -> None:
        super().__init__()
        self.plan = plan_levels("FPN", in_channels, strides, levels)
        if not is_int(out_channels) or out_channels <= 0:
            raise ConfigError(f"FPN: out_channels={out_channels!r} must be a positive integer")
        if extra_source not in ("pyramid", "backbone"):
            raise ConfigError(
                f"FPN: extra_source={extra_source!r} is not one of 'pyramid', 'backbone'"
            )
        norm_fn = norm_factory(check_norm("FPN", norm))
        self.num_inputs = len(in_channels)
        used = [in_channels[i] for i in self.plan.input_indices]
        extra = None
        if self.plan.num_extra:
            from_backbone = extra_source == "backbone"
            extra = _ExtraLevels(
                used[-1] if from_backbone else out_channels,
                out_channels,
                self.plan.num_extra,
                from_backbone,
                norm_fn,
            )
        self.fpn = FeaturePyramidNetwork(used, out_channels, extra_blocks=extra, norm_layer=norm_fn)
        self.levels = self.plan.levels
        self.channels = [out_channels] * len(self.levels)
        self.strides = self.plan.strides

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """Pyramid maps for ``levels``, finest first (see class docstring for shapes)."""
        if len(feats) != self.num_inputs:
            raise ValueError(f"FPN built for {self.num_inputs} backbone maps, got {len(feats)}")
        inputs = OrderedDict((str(i), feats[i]) for i in self.plan.input_indices)
        return list(self.fpn(inputs).values())
