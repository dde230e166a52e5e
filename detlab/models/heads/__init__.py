"""Task heads. One head a file; each registers itself in ``HEADS``."""

from .attention_unet import AttentionUNetHead
from .base import Head
from .yolo import YOLOHead

__all__ = ["AttentionUNetHead", "Head", "YOLOHead"]
