"""Backbones: ``forward(images) -> list[Tensor]`` with ``channels`` and ``strides`` attributes."""

from .timm import TimmBackbone
from .unet_encoder import UNetEncoder

__all__ = ["TimmBackbone", "UNetEncoder"]
