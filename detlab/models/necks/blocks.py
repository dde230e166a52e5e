"""Convolution building blocks shared by the necks.

All blocks map ``(B, C_in, H, W)`` to ``(B, C_out, H', W')``; convolutions pad ``k // 2`` so a
stride-1 block keeps the size and a stride-2 one gives ``ceil(H / 2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from ...errors import ConfigError

__all__ = ["Norm", "norm_layer", "conv_norm_act", "Bottleneck", "C2f", "ConvBlock", "resize_to"]

Norm = Literal["none", "batch", "group"]


def _group_norm(channels: int) -> nn.GroupNorm:
    # 32 groups as in Wu & He (arXiv:1803.08494); gcd keeps small channel counts valid.
    return nn.GroupNorm(math.gcd(32, channels), channels)


def norm_layer(norm: str, owner: str = "neck") -> Callable[[int], nn.Module] | None:
    """Factory ``channels -> norm module`` for ``norm`` (``None`` for ``"none"``)."""
    if norm == "none":
        return None
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        return _group_norm
    raise ConfigError(f"{owner}: norm={norm!r} is not one of 'none', 'batch', 'group'")


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    stride: int = 1,
    norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
    act: bool = True,
) -> Conv2dNormActivation:
    """Conv (bias only without norm) -> norm -> SiLU (if ``act``), padding ``kernel_size // 2``."""
    return Conv2dNormActivation(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        stride=stride,
        norm_layer=norm,
        activation_layer=nn.SiLU if act else None,
    )


class Bottleneck(nn.Module):
    """Two 3x3 conv-norm-SiLU layers, with a residual add when ``shortcut`` and shapes allow."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        shortcut: bool = True,
        norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = conv_norm_act(in_channels, out_channels, 3, norm=norm)
        self.conv2 = conv_norm_act(out_channels, out_channels, 3, norm=norm)
        self.residual = shortcut and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W) -> (B, out_channels, H, W)``."""
        y = self.conv2(self.conv1(x))
        return x + y if self.residual else y


class C2f(nn.Module):
    """YOLOv8's C2f block: CSP split with ``num_blocks`` chained bottlenecks, all outputs kept.

    A 1x1 conv makes ``2 * hidden`` channels (``hidden = out_channels // 2``) and splits them;
    each bottleneck refines the last chunk, and every chunk is concatenated and fused by a 1x1
    conv. CSP idea: Wang et al., arXiv:1911.11929.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int = 1,
        shortcut: bool = False,
        norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        hidden = max(out_channels // 2, 1)
        self.hidden = hidden
        self.split = conv_norm_act(in_channels, 2 * hidden, 1, norm=norm)
        self.blocks = nn.ModuleList(
            Bottleneck(hidden, hidden, shortcut, norm) for _ in range(num_blocks)
        )
        self.fuse = conv_norm_act((2 + num_blocks) * hidden, out_channels, 1, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W) -> (B, out_channels, H, W)``."""
        chunks = list(self.split(x).split(self.hidden, dim=1))
        for block in self.blocks:
            chunks.append(block(chunks[-1]))
        return self.fuse(torch.cat(chunks, dim=1))


class ConvBlock(nn.Sequential):
    """Plain block: 1x1 conv-norm-SiLU to ``out_channels``, then ``num_blocks`` 3x3 ones."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int = 1,
        norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
    ) -> None:
        layers = [conv_norm_act(in_channels, out_channels, 1, norm=norm)]
        layers += [
            conv_norm_act(out_channels, out_channels, 3, norm=norm) for _ in range(num_blocks)
        ]
        super().__init__(*layers)


def resize_to(x: Tensor, ref: Tensor) -> Tensor:
    """``x`` resized (nearest) to the spatial size of ``ref``; returned unchanged if equal.

    Necks upsample/downsample to the size of the map they merge with rather than by a fixed
    factor, so maps of odd size (e.g. 7x11 next to 4x6) still line up.
    """
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="nearest")
