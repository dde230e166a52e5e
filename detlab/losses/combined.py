"""A weighted set of loss terms reported under separate ``loss_<name>`` keys."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import LOSSES
from .base import Loss, default_loss_name

__all__ = ["CombinedLoss"]


@LOSSES.register
class CombinedLoss(Loss):
    """Runs every term on the same ``(logits, target, valid)`` and returns their values by key.

    Each term applies its own ``weight``; the keys are ``loss_<term.name>``, and a name used
    twice gets ``_2``, ``_3``, … (``loss_dice``, ``loss_dice_2``). The head sums the values.

    Args:
        terms: non-empty list of loss configs (``dict(type=..., **kwargs)``, built with
            ``LOSSES``) or built modules returning a scalar tensor.
        weight: extra factor on every term (default 1).
        name: name of the combination itself (the keys come from the terms).
    """

    def __init__(
        self, terms: list[dict[str, Any] | nn.Module], weight: float = 1.0, name: str | None = None
    ) -> None:
        super().__init__(weight=weight, name=name)
        if not isinstance(terms, (list, tuple)) or not terms:
            raise ConfigError(f"CombinedLoss: terms must be a non-empty list, got {terms!r}")
        built = [LOSSES.build(t, key=f"terms.{i}") for i, t in enumerate(terms)]
        self.keys: list[str] = []
        for i, term in enumerate(built):
            if not isinstance(term, nn.Module) or isinstance(term, CombinedLoss):
                raise ConfigError(
                    f"CombinedLoss: terms.{i} must be a loss module other than CombinedLoss "
                    f"(list nested terms directly), got {type(term).__name__}"
                )
            base = getattr(term, "name", None) or default_loss_name(type(term).__name__)
            key, n = f"loss_{base}", 1
            while key in self.keys:
                n += 1
                key = f"loss_{base}_{n}"
            self.keys.append(key)
        self.terms = nn.ModuleList(built)

    def forward(
        self, logits: Tensor, target: Tensor, valid: Tensor | None = None
    ) -> dict[str, Tensor]:
        """``{"loss_<name>": scalar}`` for every term, each already weighted."""
        return {
            key: term(logits, target, valid) * self.weight
            for key, term in zip(self.keys, self.terms)
        }
