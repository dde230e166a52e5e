"""Task heads. One head a file; each registers itself in ``HEADS``."""

from .attention_unet import AttentionUNetHead
from .base import Head
from .db import DBHead
from .faster_rcnn import FasterRCNNHead
from .yolo import YOLOHead

__all__ = ["AttentionUNetHead", "DBHead", "FasterRCNNHead", "Head", "YOLOHead"]
