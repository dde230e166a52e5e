"""``ImageFiles``: plain image files (PNG, JPEG, TIFF …) for ``detlab predict``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ...errors import ConfigError, DataError
from ...registry import DATASETS
from ..letterbox import resize_keep_ratio

__all__ = ["ImageFiles", "read_image"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_image(path: str | Path, channels: int) -> np.ndarray:
    """Read an image file as ``(H, W, channels)`` float32 in [0, 1] (16-bit PNGs scaled too)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I"):
                arr = np.asarray(img, dtype=np.float32) / 65535.0
                arr = arr[..., None]
            else:
                arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
                arr = arr / 255.0
                if arr.ndim == 2:
                    arr = arr[..., None]
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err
    if arr.shape[-1] != channels:
        arr = np.repeat(arr[..., :1], channels, axis=-1) if arr.shape[-1] == 1 else arr[..., :1]
    return arr


@DATASETS.register
class ImageFiles(Dataset):
    """Image files to predict on, normalized like the training data.

    Pixel values are read into [0, 1] and normalized as ``(x - mean) / std`` per channel.
    Images keep their size (the model pads them), or with ``img_size`` are resized keeping the
    aspect ratio so the long side fits ``img_size`` (as detection datasets do for training);
    ``meta["scale"]`` records the factor and heads map predictions back to the original size.

    Args:
        paths: image files, or folders (every image file inside, sorted).
        channels: 1 (grayscale) or 3 (RGB).
        mean: per-channel value subtracted from the [0, 1] pixels.
        std: per-channel divisor applied after subtracting ``mean``.
        img_size: long side to resize to (``None``: keep the size).
    """

    def __init__(self, paths: Sequence[str | Path], channels: int = 3,
                 mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225),
                 img_size: int | None = None) -> None:
        if channels not in (1, 3):
            raise ConfigError(f"ImageFiles.channels={channels}: expected 1 or 3")
        if img_size is not None and (isinstance(img_size, bool) or not isinstance(img_size, int)
                                     or img_size < 1):
            raise ConfigError(f"ImageFiles.img_size={img_size!r}: expected a positive int or None")
        self.img_size = img_size
        self.channels = channels
        self.mean = np.asarray(list(mean)[:channels] * (channels if len(mean) == 1 else 1),
                               dtype=np.float32)[:channels]
        self.std = np.asarray(list(std)[:channels] * (channels if len(std) == 1 else 1),
                              dtype=np.float32)[:channels]
        files: list[Path] = []
        for p in paths:
            p = Path(p)
            if p.is_dir():
                files.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
            elif p.exists():
                files.append(p)
            else:
                raise DataError(f"input not found: {p}")
        if not files:
            raise DataError(f"no image files found in {', '.join(map(str, paths))}")
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        arr = (read_image(path, self.channels) - self.mean) / self.std
        h, w = arr.shape[:2]
        scale = (1.0, 1.0)
        if self.img_size is not None:
            arr, _, scale = resize_keep_ratio(arr, None, self.img_size)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))),
            "target": {},
            "meta": {
                "image_id": path.stem, "path": str(path), "orig_size": (h, w),
                "input_size": tuple(arr.shape[:2]), "scale": scale, "pad": (0, 0),
            },
        }
