"""Task heads. One head a file; each registers itself in ``HEADS``."""

from .attention_unet import AttentionUNetHead
from .base import Head
from .db import DBHead

__all__ = ["AttentionUNetHead", "DBHead", "Head"]
