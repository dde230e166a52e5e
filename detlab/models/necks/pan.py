"""Path Aggregation Network neck, YOLOv8 style (PANet, Liu et al., arXiv:1803.01534)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ...checks import is_int, is_number
from ...errors import ConfigError
from ...registry import NECKS
from ..layers import C2f, ConvBlock, Norm, check_norm, conv_norm_act, resize_to
from .levels import plan_levels

__all__ = ["PAN"]


@NECKS.register
class PAN(nn.Module):
    """Top-down then bottom-up path aggregation, as in the YOLOv5/v8 necks.

    With backbone maps ``C_low .. C_top`` for the requested levels:

    * top-down: ``T_top = C_top``; ``T_k = block(cat(up(T_{k+1}), C_k))``, ``out_channels[k]``;
    * bottom-up: ``P_low = T_low``; ``P_k = block(cat(down(P_{k-1}), T_k))`` where ``down`` is a
      3x3 stride-2 conv-norm-SiLU keeping ``P_{k-1}``'s channels;
    * extra levels above the backbone's top: 3x3 stride-2 conv-norm-SiLU of the level below.

    ``up`` is nearest upsampling to the lateral map's size and ``down`` is resized to its
    partner's size when they differ, so odd-sized maps line up. With YOLOv8n's backbone
    channels ``(64, 128, 256)``, ``out_channels=(64, 128, 256)``, ``block="c2f"`` and
    ``depth=0.33`` this is YOLOv8n's neck layer for layer.

    Args:
        in_channels: channels of each backbone map, finest first (given by ``Model``).
        strides: stride of each backbone map in pixels, powers of two (given by ``Model``).
        out_channels: channels of every output level, or one entry per level of ``levels``,
            or one entry per backbone map (finest first) when ``levels`` is a sub-range of the
            backbone's levels: the entries of the chosen maps are used.
        levels: output pyramid levels ``P_k`` (stride ``2**k``), contiguous and ascending, e.g.
            ``(3, 4, 5)`` or ``(2, 3, 4, 5)`` for small objects; at least two must be backbone
            levels. Default: the backbone's levels.
        block: fusion block, ``"c2f"`` (YOLOv8) or ``"conv"`` (1x1 then 3x3 conv-norm-SiLU).
        depth: depth multiplier; each block has ``max(1, round(3 * depth))`` bottlenecks / 3x3
            convs (YOLOv8 scales n/s: 0.33 -> 1, m: 0.67 -> 2, l/x: 1.0 -> 3).
        norm: normalisation after each conv (``"batch"``, YOLO's), one of
            :data:`~detlab.models.layers.NORMS`.

    Attributes:
        channels: output channels per level. strides: output strides per level (pixels).

    Shapes:
        ``forward(feats)``: the backbone's list of ``(B, in_channels[i], H_i, W_i)`` maps ->
        list of ``(B, channels[j], H_k, W_k)`` for each level; backbone levels keep their
        input size, each extra level is ``ceil`` of half the one below.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        out_channels: int | Sequence[int] = 256,
        levels: Sequence[int] | None = None,
        block: Literal["c2f", "conv"] = "c2f",
        depth: float = 0.33,
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        plan = plan_levels("PAN", in_channels, strides, levels)
        n_levels = len(plan.levels)
        outs = [out_channels] * n_levels if is_int(out_channels) else list(out_channels)
        if len(outs) == len(in_channels) != n_levels and plan.num_extra == 0:
            # One entry per backbone map: `levels` chose a sub-range of them, so the channels
            # of the chosen maps are used (the recipe's 'model.neck.levels=(3,4,5)' override
            # of a P2..P5 neck must not need out_channels rewritten as well).
            outs = [outs[i] for i in plan.input_indices]
        if len(outs) != n_levels or any(
            not is_int(c) or c <= 0 for c in outs
        ):
            raise ConfigError(
                f"PAN: out_channels={out_channels!r} must be a positive int or one positive int "
                f"per level of levels={plan.levels}"
            )
        if len(plan.input_indices) < 2:
            raise ConfigError(
                f"PAN: levels={plan.levels} use {len(plan.input_indices)} backbone level(s); path "
                "aggregation needs at least two (add lower levels or backbone out_indices)"
            )
        if block not in ("c2f", "conv"):
            raise ConfigError(f"PAN: block={block!r} is not one of 'c2f', 'conv'")
        if not is_number(depth) or depth <= 0:
            raise ConfigError(f"PAN: depth={depth!r} must be a positive number")
        norm_fn = check_norm("PAN", norm)
        num_blocks = max(1, round(3 * depth))

        def fuse(c_in: int, c_out: int) -> nn.Module:
            if block == "c2f":
                return C2f(c_in, c_out, num_blocks, shortcut=False, norm=norm_fn)
            return ConvBlock(c_in, c_out, num_blocks, norm=norm_fn)

        self.num_inputs = len(in_channels)
        self.input_indices = plan.input_indices
        ins = [in_channels[i] for i in plan.input_indices]
        n = len(ins)
        # Channels of the top-down maps T_k; T_top is the backbone map itself.
        td = outs[: n - 1] + [ins[-1]]
        self.top_down = nn.ModuleList(fuse(td[k + 1] + ins[k], outs[k]) for k in range(n - 1))
        self.downsample = nn.ModuleList(
            conv_norm_act(outs[k], outs[k], 3, stride=2, norm=norm_fn) for k in range(n - 1)
        )
        self.bottom_up = nn.ModuleList(fuse(outs[k] + td[k + 1], outs[k + 1]) for k in range(n - 1))
        self.extra = nn.ModuleList(
            conv_norm_act(outs[k - 1], outs[k], 3, stride=2, norm=norm_fn)
            for k in range(n, n_levels)
        )
        self.levels = plan.levels
        self.channels = outs
        self.strides = plan.strides

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """Aggregated maps for ``levels``, finest first (see class docstring for shapes)."""
        if len(feats) != self.num_inputs:
            raise ValueError(f"PAN built for {self.num_inputs} backbone maps, got {len(feats)}")
        xs = [feats[i] for i in self.input_indices]
        td = list(xs)
        for k in range(len(xs) - 2, -1, -1):
            td[k] = self.top_down[k](torch.cat([resize_to(td[k + 1], xs[k]), xs[k]], dim=1))
        outs = [td[0]]
        for k, (down, fuse) in enumerate(zip(self.downsample, self.bottom_up)):
            lower = resize_to(down(outs[-1]), td[k + 1])
            outs.append(fuse(torch.cat([lower, td[k + 1]], dim=1)))
        for conv in self.extra:
            outs.append(conv(outs[-1]))
        return outs
