"""Small building blocks shared by backbones and heads."""

from __future__ import annotations

from typing import Literal

from torch import nn

__all__ = ["NORMS", "double_conv"]

NORMS = ("batch", "instance", "none")


def double_conv(
    in_channels: int, out_channels: int, norm: Literal["batch", "instance", "none"] = "batch"
) -> nn.Sequential:
    """Two (3x3 conv, padding 1 → norm → ReLU) layers, the U-Net block; keeps the spatial size.

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
    """
    layers: list[nn.Module] = []
    for c_in in (in_channels, out_channels):
        # a conv bias right before a norm layer is cancelled by the norm's mean subtraction
        layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(out_channels))
        elif norm == "instance":
            layers.append(nn.InstanceNorm2d(out_channels, affine=True))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
