"""Which pyramid levels a neck outputs, and which backbone maps feed them.

Level ``k`` (``P_k``) is the feature map of stride ``2**k`` pixels. A neck takes every map the
backbone gives (``in_channels``/``strides``, one entry per map, finest first) and outputs the
contiguous levels ``levels``: those up to the backbone's top level must come from the backbone;
those above it are "extra" levels made by stride-2 convolutions (RetinaNet, arXiv:1708.02002).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...checks import is_int
from ...errors import ConfigError

__all__ = ["LevelPlan", "plan_levels"]


@dataclass(frozen=True)
class LevelPlan:
    """Resolved levels of a neck.

    Attributes:
        levels: output levels, ascending and contiguous, e.g. ``(3, 4, 5, 6, 7)``.
        input_indices: index into the backbone's feature list of each output level the backbone
            provides (the first ``len(input_indices)`` entries of ``levels``).
        num_extra: number of output levels above the backbone's top level.
    """

    levels: tuple[int, ...]
    input_indices: tuple[int, ...]
    num_extra: int

    @property
    def strides(self) -> list[int]:
        """Output strides in pixels, ``2**k`` for each level."""
        return [2**k for k in self.levels]


def _names(levels: Sequence[int]) -> str:
    return ", ".join(f"P{k}" for k in levels)


def plan_levels(
    owner: str,
    in_channels: Sequence[int],
    strides: Sequence[int],
    levels: Sequence[int] | None,
) -> LevelPlan:
    """Validate a neck's inputs and requested levels and say how to build them.

    Args:
        owner: neck name used in error messages, e.g. ``"FPN"``.
        in_channels: channels of each backbone map, finest first.
        strides: stride of each backbone map in pixels; powers of two, strictly increasing.
        levels: requested output levels, or ``None`` for the backbone's own levels.

    Raises:
        ConfigError: mismatched or invalid ``in_channels``/``strides``, non-contiguous
            ``levels``, or a requested level the backbone does not provide.
    """
    in_channels, strides = list(in_channels), list(strides)
    if not strides or len(in_channels) != len(strides):
        raise ConfigError(
            f"{owner}: in_channels={in_channels} and strides={strides} must be non-empty lists "
            "of the same length (one entry per backbone feature map)"
        )
    for name, values in (("in_channels", in_channels), ("strides", strides)):
        if any(not is_int(v) or v <= 0 for v in values):
            raise ConfigError(f"{owner}: {name}={values} must be positive integers")
    bad = [s for s in strides if s & (s - 1)]
    if bad:
        raise ConfigError(
            f"{owner}: strides={strides} must be powers of two (level P_k has stride 2**k); "
            f"got {bad}"
        )
    if any(b <= a for a, b in zip(strides, strides[1:])):
        raise ConfigError(f"{owner}: strides={strides} must be strictly increasing (finest first)")
    available = [s.bit_length() - 1 for s in strides]

    if levels is None:
        levels = available
    if (
        isinstance(levels, (str, bytes))
        or not isinstance(levels, Sequence)
        or not levels
        or any(not is_int(k) or k < 0 for k in levels)
    ):
        raise ConfigError(
            f"{owner}: levels={levels!r} must be a non-empty sequence of pyramid levels k >= 0 "
            "(P_k has stride 2**k), e.g. (3, 4, 5)"
        )
    levels = tuple(levels)
    if list(levels) != list(range(levels[0], levels[0] + len(levels))):
        raise ConfigError(
            f"{owner}: levels={levels} must be ascending and contiguous, e.g. (2, 3, 4, 5); "
            "a pyramid has no gaps"
        )
    top = available[-1]
    if levels[0] > top:
        raise ConfigError(
            f"{owner}: levels={levels} start above the backbone's top level P{top} "
            f"(strides {strides}); the lowest level must come from the backbone"
        )
    for k in levels:
        if k <= top and k not in available:
            raise ConfigError(
                f"{owner}: levels={levels} ask for P{k} (stride {2**k}) but the backbone gives "
                f"strides {strides} ({_names(available)}). Add the backbone out_index whose "
                f"reduction is {2**k} to out_indices (for timm ResNets that is out_index "
                f"{k - 1}), or drop P{k} from levels"
            )
    inputs = tuple(available.index(k) for k in levels if k <= top)
    return LevelPlan(levels=levels, input_indices=inputs, num_extra=len(levels) - len(inputs))
