"""Task heads. One head a file; each registers itself in ``HEADS``."""

from .attention_unet import AttentionUNetHead
from .base import Head

__all__ = ["AttentionUNetHead", "Head"]
