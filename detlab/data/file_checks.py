"""Cheap checks that a dataset's image files are there and readable, made when the dataset is
built (before a backbone is created or weights are downloaded), so a wrong path fails in
milliseconds with the path in the message instead of at the first batch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from .datasets.detection_base import check_files_exist

__all__ = ["check_image_files", "image_size"]


def image_size(path: str | Path) -> tuple[int, int]:
    """``(h, w)`` of an image file from its header (PIL reads no pixel data for this)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot decode image file {path} ({err})") from err
    return int(h), int(w)


def check_image_files(paths: Sequence[str | Path], source: str, check_all: bool = False,
                      folder: str | Path | None = None) -> None:
    """Raise :class:`DataError` unless the images of a dataset can be found.

    Always: the folder of the first image exists, and the first image exists and has a
    readable image header (a wrong ``img_dir`` fails here). With ``check_all``: every file
    exists (``stat`` only, no decoding); the message names the first missing files.

    Args:
        paths: the dataset's image files, in dataset order.
        source: what lists them (annotation file or folder), for the message.
        check_all: check every file, not only the first.
        folder: the image folder the recipe names (``img_dir``), checked first.
    """
    if folder is not None and not Path(folder).is_dir():
        raise DataError(f"image folder not found: {folder} (images listed in {source})")
    if not paths:
        return
    first = Path(paths[0])
    if not first.parent.is_dir():
        raise DataError(f"image folder not found: {first.parent} (first image listed in "
                        f"{source}: {first.name})")
    if check_all:
        check_files_exist(paths, source)
    if not first.is_file():
        raise DataError(f"image file listed in {source} not found: {first}")
    image_size(first)
