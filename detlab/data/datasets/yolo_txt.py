"""``YoloDetection``: images with YOLO ``.txt`` labels (``class cx cy w h``, normalized)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError
from ...registry import DATASETS
from ..file_checks import check_image_files
from ..geometry import UNSET, InputGeometry
from ..validation import (
    DEFAULT_MAX_BAD_FRACTION,
    DataReport,
    check_bad_fraction,
    clip_boxes,
    parse_number,
    read_text,
    require_inside,
    resolve_inside,
)
from .detection_base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Annotations,
    DetectionDataset,
)

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

    Every label file is read and checked when the dataset is built (rules in
    :mod:`detlab.data.validation`): a malformed or non-UTF-8 line, or an image or label path
    that leaves the data root (``root``, else the list file's folder), raises
    :class:`~detlab.errors.DataError` naming ``file:line``. Boxes that overshoot the image are
    clipped to it and boxes without area dropped, both counted in :meth:`data_report`.

    Args:
        root: dataset folder (holds ``images/`` and ``labels/``); also resolves a relative
            ``list_file``.
        split: sub-folder of ``images/`` (folder mode).
        list_file: text file of image paths; replaces the folder layout.
        class_names: name per class id; or ``names_file``: a ``data.yaml`` with ``names``
            (a list, or a mapping id -> name).
        check_files: check every image exists now (otherwise when it is loaded).
        allow_outside_root: accept list-file entries (absolute, ``..``, symlinks) that lead
            outside the data root.
        max_bad_fraction: largest fraction of boxes that may be dropped (zero area) before
            building fails.
        transforms, geometry, mean, std: see
            :class:`~detlab.data.datasets.detection_base.DetectionDataset`.
        img_size, stride, scale_up, pad_value: shorthand for ``geometry`` (same class).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        list_file: str | Path | None = None,
        class_names: Sequence[str] | None = None,
        names_file: str | Path | None = None,
        transforms: Sequence[Any] | None = None,
        img_size: int | None = UNSET,
        check_files: bool = False,
        stride: int | None = UNSET,
        scale_up: bool = UNSET,
        pad_value: float = UNSET,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        geometry: Mapping[str, Any] | InputGeometry | None = None,
        allow_outside_root: bool = False,
        max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    ) -> None:
        super().__init__(transforms, geometry, mean, std, img_size=img_size, stride=stride,
                         scale_up=scale_up, pad_value=pad_value)
        max_bad_fraction = check_bad_fraction(max_bad_fraction, "YoloDetection")
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
            data_root = Path(root) if root is not None else list_path.parent
            self.images = _read_list(list_path, data_root, allow_outside_root)
            base = list_path.parent
        else:
            data_root = Path(root)
            base = data_root / "images" / split
            if not base.is_dir():
                raise DataError(f"YOLO image folder not found: {base}")
            self.images = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            for p in self.images:  # a symlinked image may point out of the dataset
                require_inside(p, data_root, f"{base}", allow_outside_root)
        if not self.images:
            raise DataError(f"no images found in {list_file or base}")
        self._ids = [_image_id(p, base) for p in self.images]
        first: dict[str, int] = {}
        for i, image_id in enumerate(self._ids):  # image ids key the evaluation: one each
            if image_id in first:
                j = first[image_id]
                raise DataError(
                    f"{list_file or base}: images {j + 1} and {i + 1} ({str(self.images[j])!r}, "
                    f"{str(self.images[i])!r}) share the id {image_id!r} and the label file "
                    f"{label_path_for(self.images[i])}; list each image once")
            first[image_id] = i
        self._report = DataReport(f"YoloDetection ({list_file or base})", "boxes")
        self._labels = []
        self._sources = []  # label file per image, as str: annotations() runs per sample
        for image in self.images:
            label = label_path_for(image)
            require_inside(label, data_root, f"label of {image}", allow_outside_root)
            self._labels.append(_parse_label_file(label, len(self.class_names), self._report))
            self._sources.append(str(label))
        self._paths = [str(p) for p in self.images]
        self._areas: list[np.ndarray | None] | None = None
        self._report.samples = len(self.images)
        self._report.log()
        self._report.enforce(max_bad_fraction)
        check_image_files(self.images, str(list_file or base), check_all=check_files)

    def data_report(self) -> DataReport:
        """What was read, clipped and dropped when the label files were parsed."""
        return self._report

    def __len__(self) -> int:
        return len(self.images)

    def object_areas(self, index: int) -> np.ndarray:
        """``(M,)`` relative areas of image ``index``'s objects (see the base class), computed
        once per image: a sampler asks for all of them whenever a train loader is built."""
        if self._areas is None:
            self._areas = [None] * len(self)
        areas = self._areas[index]
        if areas is None:
            areas = self._areas[index] = super().object_areas(index)
        return areas.copy()

    def annotations(self, index: int) -> Annotations:
        boxes, labels = self._labels[index]
        return Annotations(
            image_id=self._ids[index], path=self._paths[index], boxes=boxes, labels=labels,
            ignore=np.zeros(len(labels), bool), normalized=True, source=self._sources[index],
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
        data = yaml.safe_load(read_text(path, "names file"))
    except yaml.YAMLError as err:
        raise DataError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict) or "names" not in data:
        raise DataError(f"{path}: has no key 'names' (expected e.g. names: [helmet, head])")
    names = data["names"]
    if isinstance(names, dict):
        if set(names) != set(range(len(names))):
            raise DataError(f"{path}: key 'names' must map ids 0..K-1 to names, got {names!r}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: key 'names' must be a non-empty list, got {names!r}")
    return [str(n) for n in names]


def _read_list(path: Path, data_root: Path, allow_outside_root: bool) -> list[Path]:
    if not path.is_file():
        raise DataError(f"YOLO list file not found: {path}")
    out = []
    for lineno, line in enumerate(read_text(path, "YOLO list file").splitlines(), start=1):
        line = line.strip()
        if line:
            where = f"{path}:{lineno}"
            if Path(line).is_absolute():
                p = require_inside(Path(line), data_root, where, allow_outside_root)
            else:
                p = resolve_inside(path.parent, line, where, True)
                require_inside(p, data_root, where, allow_outside_root, shown=line)
            out.append(p)
    return out


def _image_id(image: Path, base: Path) -> str:
    try:
        rel = image.relative_to(base)
    except ValueError:
        rel = image
    return rel.with_suffix("").as_posix()


def _parse_label_file(path: Path, num_classes: int, report: DataReport
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 4)`` normalized xyxy boxes clipped to [0, 1] (float64, so that pixel boxes are
    exact to float32) and ``(N,)`` labels of one file; clipping and dropping counted."""
    if not path.is_file():
        return np.zeros((0, 4), np.float64), np.zeros(0, np.int64)
    boxes, labels, places, seen = [], [], [], set()
    for lineno, line in enumerate(read_text(path, "YOLO label file").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        try:
            values = [parse_number(v) for v in fields]
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
        report.objects += 1
        if (cls, *box) in seen:  # as Ultralytics: a repeated row is one object, not two
            report.count("dropped", "duplicate line", where)
            continue
        seen.add((cls, *box))
        boxes.append(box)
        labels.append(int(cls))
        places.append(where)
    arr, keep = clip_boxes(np.asarray(boxes, np.float64).reshape(-1, 4), 1.0, 1.0, report, places)
    return arr, np.asarray(labels, np.int64)[keep]
