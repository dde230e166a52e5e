"""``YoloDetection``: images with YOLO ``.txt`` labels (``class cx cy w h``, normalized)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError
from ...registry import DATASETS
from .detection_base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Annotations,
    DetectionDataset,
)
from ..file_checks import check_image_files

__all__ = ["YoloDetection", "read_names_file", "label_path_for"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_TOLERANCE = 1e-3  # normalized coordinates may overshoot [0, 1] by rounding; more is an error


@DATASETS.register
class YoloDetection(DetectionDataset):
    """A YOLO dataset: ``root/images/<split>/*.jpg`` with ``root/labels/<split>/*.txt``.

    Each label line is ``class cx cy w h`` with coordinates normalized to [0, 1] (a polygon
    line ``class x1 y1 x2 y2 x3 y3 …`` gives its bounding box). A missing label file means an
    image without objects. Instead of a folder, ``list_file`` names a text file of image paths
    (one per line, relative to the list file's folder); as in Ultralytics, the label of
    ``…/images/…/a.jpg`` is ``…/labels/…/a.txt`` (the last ``images`` folder is replaced), or
    ``a.txt`` beside the image when no folder is called ``images``. ``image_id`` is the image
    path relative to its image folder (or list file), without suffix.

    Args:
        root: dataset folder (holds ``images/`` and ``labels/``); also resolves a relative
            ``list_file``.
        split: sub-folder of ``images/`` (folder mode).
        list_file: text file of image paths; replaces the folder layout.
        class_names: name per class id; or ``names_file``: a ``data.yaml`` with ``names``
            (a list, or a mapping id -> name).
        check_files: check every image exists now (otherwise when it is loaded).
        transforms, img_size, stride, scale_up, pad_value, mean, std: see
            :class:`~detlab.data.datasets.detection_base.DetectionDataset`.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        list_file: str | Path | None = None,
        class_names: Sequence[str] | None = None,
        names_file: str | Path | None = None,
        transforms: Sequence[Any] | None = None,
        img_size: int | None = 640,
        check_files: bool = False,
        stride: int | None = 32,
        scale_up: bool = True,
        pad_value: float = 114,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(transforms, img_size, stride, scale_up, pad_value, mean, std)
        if (class_names is None) == (names_file is None):
            raise ConfigError(
                "YoloDetection needs exactly one of class_names (a list) and names_file "
                f"(a data.yaml with 'names'); got class_names={class_names!r}, "
                f"names_file={names_file!r}"
            )
        if class_names is not None:
            if isinstance(class_names, str) or not class_names:
                raise ConfigError(
                    f"YoloDetection.class_names={class_names!r}: expected a list of names"
                )
            self.class_names = [str(n) for n in class_names]
        else:
            self.class_names = read_names_file(names_file)
        if list_file is None and root is None:
            raise ConfigError("YoloDetection needs root (folder layout) or list_file")
        if list_file is not None:
            list_path = Path(list_file)
            if not list_path.is_absolute() and root is not None:
                list_path = Path(root) / list_path
            self.images, base = _read_list(list_path), list_path.parent
        else:
            base = Path(root) / "images" / split
            if not base.is_dir():
                raise DataError(f"YOLO image folder not found: {base}")
            self.images = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.images:
            raise DataError(f"no images found in {list_file or base}")
        self._ids = [_image_id(p, base) for p in self.images]
        check_image_files(self.images, str(list_file or base), check_all=check_files)

    def __len__(self) -> int:
        return len(self.images)

    def annotations(self, index: int) -> Annotations:
        image = self.images[index]
        label_file = label_path_for(image)
        boxes, labels = _parse_label_file(label_file, len(self.class_names))
        return Annotations(
            image_id=self._ids[index], path=str(image), boxes=boxes, labels=labels,
            ignore=np.zeros(len(labels), bool), normalized=True, source=str(label_file),
        )


def label_path_for(image: Path) -> Path:
    """YOLO convention: the last ``images`` folder becomes ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_names_file(path: str | Path) -> list[str]:
    """Class names from a ``data.yaml``-like file's ``names`` (list or ``{id: name}``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"names file not found: {path}")
    import yaml  # PyYAML ships with albumentations, a detlab dependency

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise DataError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict) or "names" not in data:
        raise DataError(f"{path}: has no key 'names' (expected e.g. names: [helmet, head])")
    names = data["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{path}: key 'names' must map ids 0..K-1 to names, got {names!r}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: key 'names' must be a non-empty list, got {names!r}")
    return [str(n) for n in names]


def _read_list(path: Path) -> list[Path]:
    if not path.is_file():
        raise DataError(f"YOLO list file not found: {path}")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            p = Path(line)
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def _image_id(image: Path, base: Path) -> str:
    try:
        rel = image.relative_to(base)
    except ValueError:
        rel = image
    return rel.with_suffix("").as_posix()


def _parse_label_file(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 4)`` normalized xyxy boxes clipped to [0, 1] (float64, so that pixel boxes are
    exact to float32) and ``(N,)`` labels of one file."""
    if not path.is_file():
        return np.zeros((0, 4), np.float64), np.zeros(0, np.int64)
    boxes, labels = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DataError(f"{where}: non-numeric value in {line.strip()!r}") from None
        cls = values[0]
        if not cls.is_integer() or not 0 <= cls < num_classes:
            raise DataError(f"{where}: class {fields[0]!r} is not an integer in "
                            f"[0, {num_classes}) (num classes from class_names)")
        coords = values[1:]
        if not all(math.isfinite(v) for v in coords):
            raise DataError(f"{where}: non-finite coordinate in {line.strip()!r}")
        if min(coords, default=0) < -_TOLERANCE or max(coords, default=0) > 1 + _TOLERANCE:
            raise DataError(f"{where}: coordinates must be normalized to [0, 1], "
                            f"got {line.strip()!r}")
        if len(coords) == 4:
            cx, cy, w, h = coords
            if w <= 0 or h <= 0:
                raise DataError(f"{where}: box width and height must be > 0, got {w} x {h}")
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif len(coords) >= 6 and len(coords) % 2 == 0:  # polygon: its bounding box
            xs, ys = coords[0::2], coords[1::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
        else:
            raise DataError(f"{where}: expected 'class cx cy w h' (or a polygon 'class x1 y1 "
                            f"x2 y2 x3 y3 ...'), got {len(fields)} fields")
        boxes.append(box)
        labels.append(int(cls))
    arr = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0.0, 1.0)
    return arr, np.asarray(labels, np.int64)
