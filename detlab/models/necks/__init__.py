"""Necks: multi-scale feature fusion between backbone and head (``FPN``, ``PAN``, ``DBFPN``)."""

from .db_fpn import DBFPN
from .fpn import FPN
from .pan import PAN

__all__ = ["DBFPN", "FPN", "PAN"]
