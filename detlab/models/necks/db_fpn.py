"""The DB neck (Liao et al., arXiv:1911.08947, Fig. 2): a light FPN whose levels are
upsampled to the finest one and concatenated into one fused map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...checks import is_int
from ...errors import ConfigError
from ...registry import NECKS

__all__ = ["DBFPN"]


@NECKS.register
class DBFPN(nn.Module):
    """Lateral 1x1 convs to ``inner_channels``, top-down nearest upsampling and addition, a
    3x3 conv to ``inner_channels // 4`` per level, every level upsampled (nearest) to the
    finest one and concatenated: one map of ``len(strides) * inner_channels // 4`` channels
    (``inner_channels`` for the paper's four levels, strides 4-32).

    The neck of :class:`~detlab.models.heads.db.DBHead` (``model.neck=dict(type="DBFPN",
    inner_channels=...)``), and of any head that wants a single fused stride-``strides[0]`` map.

    Checkpoints written before the DB neck moved out of the head (weights under
    ``model.head.neck.*``) load into a model with this neck: :meth:`remap_old_keys` reads their
    ``head.neck.*`` entries as ``neck.*`` (with ``--recipe`` naming a current recipe, since
    their stored recipe still has ``model.head.inner_channels``).

    Args:
        in_channels: channels of each input level, finest first (given by ``Model``).
        strides: stride of each level in pixels, increasing (given by ``Model``).
        inner_channels: width of the lateral/top-down maps; a multiple of 4 (DB: 256).

    Shapes: ``forward([(B, in_channels[i], H_i, W_i)]) -> [(B, channels[0], H_0, W_0)]``;
    ``channels == [len(strides) * inner_channels // 4]``, ``strides == [strides[0]]``.
    """

    def __init__(
        self, in_channels: Sequence[int], strides: Sequence[int], inner_channels: int = 256
    ) -> None:
        super().__init__()
        in_channels, strides = check_levels("DBFPN", in_channels, strides)
        if not is_int(inner_channels) or inner_channels < 4 or inner_channels % 4:
            raise ConfigError(
                f"DBFPN: inner_channels must be a positive multiple of 4, got {inner_channels!r}"
            )
        out = inner_channels // 4
        # No biases: the paper's reference code has none here, and the heads that follow
        # start with a conv + BatchNorm.
        self.lateral = nn.ModuleList(nn.Conv2d(c, inner_channels, 1, bias=False)
                                     for c in in_channels)
        self.smooth = nn.ModuleList(
            nn.Conv2d(inner_channels, out, 3, padding=1, bias=False) for _ in in_channels
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        self.channels = [out * len(in_channels)]
        self.strides = [strides[0]]

    def remap_old_keys(self, state_dict: dict, prefix: str) -> None:
        """Called by :class:`~detlab.models.model.Model` when loading, ``prefix`` being the
        model's: when ``state_dict`` has no ``<prefix>neck.*`` entry but ``<prefix>head.neck.*``
        ones (where ``DBHead`` kept its neck before issue 12), move them to
        ``<prefix>neck.*`` in place."""
        new, old = prefix + "neck.", prefix + "head.neck."
        if any(k.startswith(new) for k in state_dict):
            return
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[new + key[len(old):]] = state_dict.pop(key)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """One fused map at the finest level's size (see class docstring)."""
        if len(feats) != len(self.lateral):
            raise ConfigError(
                f"DBFPN: got {len(feats)} feature maps, built for {len(self.lateral)}"
            )
        x = self.lateral[-1](feats[-1])
        merged = [x]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.lateral[i](feats[i])
            # Upsample to the lateral's own size (not x2) so odd-sized maps line up.
            x = lateral + F.interpolate(x, size=lateral.shape[-2:], mode="nearest")
            merged.append(x)
        merged.reverse()  # finest first
        size = merged[0].shape[-2:]
        outs = [
            F.interpolate(conv(m), size=size, mode="nearest") if i else conv(m)
            for i, (conv, m) in enumerate(zip(self.smooth, merged))
        ]
        # Coarsest first in the concatenation, as in the paper's figure.
        return [torch.cat(outs[::-1], dim=1)]


def check_levels(
    who: str, in_channels: Sequence[int], strides: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Validate per-level ``in_channels``/``strides`` (>= 1 level, positive ints, strides
    increasing); raise ConfigError naming ``who``."""
    channels, steps = list(in_channels), list(strides)
    if not channels or len(channels) != len(steps):
        raise ConfigError(
            f"{who}: needs >= 1 feature level with one stride each, got in_channels="
            f"{channels!r}, strides={steps!r}"
        )
    if not all(is_int(v) and v > 0 for v in channels + steps):
        raise ConfigError(
            f"{who}: in_channels {channels!r} and strides {steps!r} must be positive ints"
        )
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ConfigError(f"{who}: strides must increase (finest first), got {steps!r}")
    return channels, steps
