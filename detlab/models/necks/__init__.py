"""Necks: multi-scale feature fusion between backbone and head (``FPN``, ``PAN``)."""

from .fpn import FPN
from .pan import PAN

__all__ = ["FPN", "PAN"]
