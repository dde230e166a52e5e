"""``ImageFiles``: plain image files (PNG, JPEG, TIFF …) for ``detlab predict``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ...errors import ConfigError, DataError
from ...registry import DATASETS
from ..geometry import InputGeometry
from .detection_base import read_rgb

__all__ = ["ImageFiles", "read_image", "preprocess_pixels"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_image(path: str | Path, channels: int) -> np.ndarray:
    """Read an image file as ``(H, W, channels)`` float32 in [0, 1] (16-bit PNGs scaled too;
    32-bit float TIFFs as stored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "F":  # 32-bit float TIFF: values taken as stored ([0, 1] units)
                arr = np.asarray(img, dtype=np.float32)[..., None]
            elif img.mode in ("I;16", "I;16B", "I"):
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
    """Image files to predict on, preprocessed like the recipe's validation data.

    ``detlab predict`` builds it from the val dataset's ``input_spec()`` (channels,
    normalization and :class:`~detlab.data.geometry.InputGeometry`), so a file gets the tensor
    ``detlab eval`` would build from it. Steps: read; ``geometry`` (resize, pad) on the uint8
    pixels (``pixels="uint8"``, as detection datasets do) or on [0, 1] floats
    (``pixels="float"``, as text and segmentation datasets do); ``x / 255`` for uint8;
    ``(x - mean) / std`` per channel. ``meta`` follows the :class:`~detlab.structures.Batch`
    contract (``scale``, ``pad``, ``input_size``, ``orig_size``) and ``image_id`` is the file
    name relative to the input folder (a file given directly: its name).

    Args:
        paths: image files, or folders (every image file inside, sorted).
        channels: 1 (grayscale) or 3 (RGB).
        mean: per-channel value subtracted from the [0, 1] pixels.
        std: per-channel divisor applied after subtracting ``mean``.
        img_size: shorthand for ``geometry=dict(img_size=..)`` (long side, no padding).
        geometry: :class:`~detlab.data.geometry.InputGeometry` arguments (``None``: keep size).
        pixels: ``"float"`` or ``"uint8"``: what the geometry is applied to (above).
    """

    def __init__(self, paths: Sequence[str | Path], channels: int = 3,
                 mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225),
                 img_size: int | None = None, geometry: Mapping[str, Any] | None = None,
                 pixels: str = "float") -> None:
        if channels not in (1, 3):
            raise ConfigError(f"ImageFiles.channels={channels}: expected 1 or 3")
        if img_size is not None and (isinstance(img_size, bool) or not isinstance(img_size, int)
                                     or img_size < 1):
            raise ConfigError(f"ImageFiles.img_size={img_size!r}: expected a positive int or None")
        if img_size is not None and geometry is not None:
            raise ConfigError("ImageFiles: give img_size or geometry, not both "
                              f"(img_size={img_size!r}, geometry={dict(geometry)!r})")
        if pixels not in ("float", "uint8"):
            raise ConfigError(f"ImageFiles.pixels={pixels!r}: expected 'float' or 'uint8'")
        self.geometry = InputGeometry.from_config(
            {"img_size": img_size} if img_size is not None else geometry)
        self.img_size = self.geometry.img_size
        self.pixels = pixels
        self.channels = channels
        self.mean = _per_channel(mean, channels, "mean")
        self.std = _per_channel(std, channels, "std")
        if (self.std <= 0).any():
            raise ConfigError(f"ImageFiles.std={tuple(std)!r}: every value must be > 0")
        files: list[tuple[Path, str]] = []
        for p in paths:
            p = Path(p)
            if p.is_dir():
                files.extend((f, f.relative_to(p).as_posix()) for f in sorted(p.iterdir())
                             if f.suffix.lower() in IMAGE_SUFFIXES)
            elif p.exists():
                files.append((p, p.name))
            else:
                raise DataError(f"input not found: {p}")
        if not files:
            raise DataError(f"no image files found in {', '.join(map(str, paths))}")
        self.files = [f for f, _ in files]
        self.names = [n for _, n in files]

    def input_spec(self) -> dict[str, Any]:
        """This dataset's preprocessing as ``ImageFiles`` arguments (compared with data.val's)."""
        return {"channels": self.channels, "mean": tuple(float(v) for v in self.mean),
                "std": tuple(float(v) for v in self.std),
                "geometry": self.geometry.to_config(), "pixels": self.pixels}

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, path: Path) -> np.ndarray:
        if self.pixels == "float":
            return read_image(path, self.channels)
        if self.channels == 3:
            return read_rgb(path)
        arr = np.rint(read_image(path, 1) * 255.0)
        return arr.clip(0, 255).astype(np.uint8)

    def preprocess(self, arr: np.ndarray) -> tuple[torch.Tensor, dict[str, Any]]:
        """Pixels as :meth:`_read` returns them → network input and meta
        (:func:`preprocess_pixels` with this dataset's settings)."""
        return preprocess_pixels(arr, self.geometry, self.pixels, self.mean, self.std)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample_from(index, self._read(self.files[index]))

    def sample_from(self, index: int, arr: np.ndarray) -> dict[str, Any]:
        """Sample ``index`` from its already decoded pixels ``arr`` (as :meth:`_read` gives)."""
        path = self.files[index]
        image, meta = self.preprocess(arr)
        return {
            "image": image,
            "target": {},
            "meta": {"image_id": self.names[index], "file_name": self.names[index],
                     "path": str(path), **meta},
        }


def preprocess_pixels(arr: np.ndarray, geometry: InputGeometry, pixels: str, mean: np.ndarray,
                      std: np.ndarray) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(H, W, C)`` pixels (uint8 for ``pixels="uint8"``, else [0, 1] floats) → the normalized
    ``(C, H', W')`` float32 network input and its geometry meta: ``geometry`` (resize, pad), then
    ``x / 255`` for uint8, then ``(x - mean) / std``. ImageFiles and the tiles of sliced
    inference share it, so a tile is preprocessed exactly like a whole val image."""
    if arr.dtype != np.uint8 and geometry.pad != "none":
        geometry = replace(geometry, pad_value=geometry.pad_value / 255.0)
    arr, _, meta = geometry.apply(arr)
    arr = arr.astype(np.float32)
    if pixels == "uint8":
        arr /= 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    arr = (arr - mean) / std
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), meta


def _per_channel(values: Sequence[float], channels: int, arg: str) -> np.ndarray:
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"ImageFiles.{arg}={values!r}: expected numbers") from None
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) < channels:
        raise ConfigError(f"ImageFiles.{arg}={tuple(vals)!r}: expected {channels} values")
    return np.asarray(vals[:channels], dtype=np.float32)
