"""Task heads. One head a file; each registers itself in ``HEADS``."""

from .base import Head

__all__ = ["Head"]
