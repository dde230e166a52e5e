"""What every detlab loss shares: a ``weight`` that scales its result and a ``name`` that becomes
the ``loss_<name>`` key a head reports, plus the argument checks that raise
:class:`~detlab.errors.ConfigError`."""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from ..checks import check_choice, check_float
from ..errors import ConfigError

__all__ = ["Loss", "default_loss_name", "check_float", "check_choice", "power_finite_grad"]

# A split before "Tversky" in "FocalTversky" and before "L1" in "SmoothL1", but none inside an
# acronym ("CIoU" -> "ciou", "DF" -> "df").
_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z][a-z0-9])")


def default_loss_name(class_name: str) -> str:
    """snake_case of ``class_name`` without a trailing ``Loss``: ``FocalTverskyLoss`` ->
    ``focal_tversky``."""
    stem = class_name[: -len("Loss")] if class_name.endswith("Loss") else class_name
    return _WORD_BOUNDARY.sub("_", stem or class_name).lower()


def power_finite_grad(x: Tensor, gamma: float, eps: float = 1e-6) -> Tensor:
    """``x ** gamma`` for ``x >= 0``; for 0 < gamma < 1 made linear on ``[0, eps]``.

    For 0 < gamma < 1 the derivative of ``x ** gamma`` is infinite at 0 (a perfect prediction in
    a focal term), which autograd turns into NaN; the linear piece (continuous at ``eps``) keeps
    the value 0 at 0 and the slope finite, ``eps ** (gamma - 1)``.
    """
    if gamma == 0 or gamma >= 1:
        return x**gamma
    return torch.where(x > eps, x.clamp_min(eps) ** gamma, x * eps ** (gamma - 1.0))


class Loss(nn.Module):
    """Base of detlab losses: stores and checks ``weight`` and ``name``.

    Args:
        weight: non-negative factor the subclass multiplies its result by.
        name: key suffix (``loss_<name>``); letters, digits and ``_``. Default:
            :func:`default_loss_name` of the class name.
    """

    def __init__(self, weight: float = 1.0, name: str | None = None) -> None:
        super().__init__()
        owner = type(self).__name__
        self.weight = check_float(owner, "weight", weight, low=0.0)
        if name is None:
            name = default_loss_name(owner)
        if not isinstance(name, str) or not re.fullmatch(r"\w+", name):
            raise ConfigError(
                f"{owner}: name must be a non-empty string of letters, digits and '_', "
                f"got {name!r}"
            )
        self.name = name

    def extra_repr(self) -> str:
        """The loss's settings as shown by ``repr(loss)``."""
        return f"name={self.name!r}, weight={self.weight:g}"
