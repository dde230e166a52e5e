"""``UNetEncoder``: the contracting path of the classic U-Net (Ronneberger et al. 2015,
arXiv:1505.04597), with "same" padding so feature sizes are exact powers-of-two divisions."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import BACKBONES
from ..layers import NORMS, double_conv

__all__ = ["UNetEncoder"]


@BACKBONES.register
class UNetEncoder(nn.Module):
    """Plain U-Net encoder: ``depth`` double-conv blocks with 2x2 max-pooling between them.

    Args:
        depth: number of levels (blocks).
        init_features: channels of the first block; block ``i`` has ``init_features * 2**i``.
        in_chans: input image channels.
        norm: normalization after each conv: ``"batch"``, ``"instance"`` or ``"none"``.

    Attributes ``channels`` ``[f, 2f, 4f, …]`` and ``strides`` ``[1, 2, 4, …]`` (defaults:
    ``[32, 64, 128, 256, 512]``, ``[1, 2, 4, 8, 16]``). ``forward(images (B, in_chans, H, W))``
    returns ``depth`` maps ``(B, channels[i], H / 2**i, W / 2**i)``, finest first (H, W
    multiples of ``2**(depth-1)``).
    """

    def __init__(
        self,
        depth: int = 5,
        init_features: int = 32,
        in_chans: int = 1,
        norm: Literal["batch", "instance", "none"] = "batch",
    ) -> None:
        super().__init__()
        for arg, value in (("depth", depth), ("init_features", init_features),
                           ("in_chans", in_chans)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"UNetEncoder: {arg} must be a positive int, got {value!r}")
        if norm not in NORMS:
            raise ConfigError(f"UNetEncoder: norm must be one of {NORMS}, got {norm!r}")
        self.channels: list[int] = [init_features * 2**i for i in range(depth)]
        self.strides: list[int] = [2**i for i in range(depth)]
        self.pool = nn.MaxPool2d(2)
        c_in = [in_chans] + self.channels[:-1]
        self.blocks = nn.ModuleList(
            double_conv(a, b, norm) for a, b in zip(c_in, self.channels)
        )

    def forward(self, images: Tensor) -> list[Tensor]:
        """Feature maps, finest first: ``[(B, channels[i], H / 2**i, W / 2**i)]``."""
        feats = []
        x = images
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            feats.append(x)
        return feats
