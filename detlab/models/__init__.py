"""Models: the ``Model`` meta-architecture, backbones, necks and heads."""

from .model import Model

__all__ = ["Model"]
