"""Building blocks shared by backbones, necks and heads: one norm vocabulary, the conv blocks.

Norms are named, everywhere (every ``norm=`` argument of a detlab neck or head):

* ``"batch"``: :class:`torch.nn.BatchNorm2d`;
* ``"group"``: :class:`torch.nn.GroupNorm` with ``gcd(32, channels)`` groups (Wu & He,
  arXiv:1803.08494; the gcd keeps small channel counts valid);
* ``"instance"``: :class:`torch.nn.InstanceNorm2d` with a learnt affine (U-Net on small
  medical batches);
* ``"none"``: no norm layer (and the conv before it keeps its bias).

All conv blocks map ``(B, C_in, H, W)`` to ``(B, C_out, H', W')``; convolutions pad
``k // 2``, so a stride-1 block keeps the size and a stride-2 one gives ``ceil(H / 2)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from ..checks import check_choice

__all__ = [
    "NORMS", "Norm", "Bottleneck", "C2f", "ConvBlock", "check_norm", "conv_norm_act",
    "double_conv", "norm_factory", "norm_layer", "output_conv", "resize_to",
]

#: The norm names every detlab block accepts.
NORMS: tuple[str, ...] = ("batch", "group", "instance", "none")
Norm = Literal["batch", "group", "instance", "none"]


def check_norm(owner: str, norm: str, arg: str = "norm") -> str:
    """``norm`` after checking it is one of :data:`NORMS` (``ConfigError`` naming ``owner``)."""
    return check_choice(owner, arg, norm, NORMS)


def norm_layer(name: str, channels: int) -> nn.Module | None:
    """The norm module ``name`` (one of :data:`NORMS`) for ``channels`` channels; ``None`` for
    ``"none"``."""
    check_norm("norm_layer", name, "name")
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if name == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return None


def norm_factory(name: str) -> Callable[[int], nn.Module] | None:
    """``channels -> norm module`` for ``name`` (``None`` for ``"none"``): the ``norm_layer``
    argument torchvision's blocks (``Conv2dNormActivation``, ``FeaturePyramidNetwork``) take."""
    check_norm("norm_factory", name, "name")
    return None if name == "none" else functools.partial(norm_layer, name)


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    stride: int = 1,
    norm: Norm = "batch",
    act: bool = True,
) -> Conv2dNormActivation:
    """Conv (bias only without norm) -> norm -> SiLU (if ``act``), padding ``kernel_size // 2``.

    Module keys: ``0`` the conv, ``1`` the norm (if any), then the activation.
    """
    return Conv2dNormActivation(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        stride=stride,
        norm_layer=norm_factory(norm),
        activation_layer=nn.SiLU if act else None,
    )


def double_conv(in_channels: int, out_channels: int, norm: Norm = "batch") -> nn.Sequential:
    """Two (3x3 conv, padding 1 → norm → ReLU) layers, the U-Net block; keeps the spatial size.

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
    """
    layers: list[nn.Module] = []
    for c_in in (in_channels, out_channels):
        # a conv bias right before a norm layer is cancelled by the norm's mean subtraction
        layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=norm == "none"))
        layer = norm_layer(norm, out_channels)
        if layer is not None:
            layers.append(layer)
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """Two 3x3 conv-norm-SiLU layers, with a residual add when ``shortcut`` and shapes allow."""

    def __init__(
        self, in_channels: int, out_channels: int, shortcut: bool = True, norm: Norm = "batch"
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
        norm: Norm = "batch",
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
        self, in_channels: int, out_channels: int, num_blocks: int = 1, norm: Norm = "batch"
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


def output_conv(module: nn.Module) -> nn.Conv2d | nn.ConvTranspose2d:
    """The last ``Conv2d``/``ConvTranspose2d`` of ``module`` (in ``modules()`` order): a
    branch's output layer, whose bias the heads' init hooks set."""
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if not convs or convs[-1].bias is None:
        raise ValueError(f"{type(module).__name__} has no conv with a bias to initialise")
    return convs[-1]
