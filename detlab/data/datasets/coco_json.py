"""``CocoDetection``: boxes from a COCO-format JSON file (``instances_*.json``)."""

from __future__ import annotations

import json
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
    FAR_FACTOR,
    DataReport,
    check_bad_fraction,
    check_image_size,
    clip_boxes,
    is_number,
    resolve_inside,
)
from .detection_base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Annotations,
    DetectionDataset,
)

__all__ = ["CocoDetection"]


@DATASETS.register
class CocoDetection(DetectionDataset):
    """Images and boxes of a COCO annotation file; every listed image is a sample.

    Category ids (any integers) are sorted and mapped to contiguous labels ``0 .. K-1``
    (``class_names[label]`` is the category name, ``category_ids[label]`` its COCO id).
    ``classes`` selects and orders categories by name instead; annotations of other categories
    are dropped. Annotation ``bbox`` is ``[x, y, w, h]`` px and becomes xyxy;
    ``iscrowd: 1`` (or ``ignore: 1``) sets the target's ``ignore`` flag. Images without
    annotations are valid samples with zero boxes. The sample format is described in
    :mod:`detlab.data.datasets.detection_base`.

    The file is checked when the dataset is built (rules in :mod:`detlab.data.validation`):
    a malformed entry, a negative box width/height, a coordinate far outside the image, an
    image size that is not a positive int, a repeated image or annotation id, or a
    ``file_name`` outside ``img_dir`` raises :class:`~detlab.errors.DataError` naming the
    entry. Boxes partly outside the image are clipped to it and boxes without area dropped,
    both counted in :meth:`data_report` and logged once.

    Args:
        ann_file: COCO JSON with ``images`` (id, file_name, width, height), ``annotations``
            (image_id, category_id, bbox) and ``categories`` (id, name).
        img_dir: folder that ``file_name`` is relative to.
        classes: category names to keep, in label order; ``None`` keeps all.
        check_files: check every image file exists now (otherwise when it is loaded).
        allow_outside_root: accept ``file_name`` values (absolute, ``..``, symlinks) that lead
            outside ``img_dir``.
        max_bad_fraction: largest fraction of boxes that may be dropped (zero area, outside
            the image) before building fails.
        transforms, geometry, mean, std: see
            :class:`~detlab.data.datasets.detection_base.DetectionDataset`.
        img_size, stride, scale_up, pad_value: shorthand for ``geometry`` (same class).
    """

    def __init__(
        self,
        ann_file: str | Path | None,
        img_dir: str | Path | None,
        transforms: Sequence[Any] | None = None,
        img_size: int | None = UNSET,
        classes: Sequence[str] | None = None,
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
        max_bad_fraction = check_bad_fraction(max_bad_fraction, "CocoDetection")
        for arg, value in (("ann_file", ann_file), ("img_dir", img_dir)):
            if value is None or str(value) == "":
                # Recipes for user data leave the paths unset (None) on purpose.
                what = "COCO JSON file" if arg == "ann_file" else "image folder"
                raise DataError(f"CocoDetection.{arg} is not set: give the path of the {what} "
                                f"(override <dataset key>.{arg}=PATH)")
        if classes is not None and (isinstance(classes, str) or not classes):
            raise ConfigError(f"CocoDetection.classes={classes!r}: expected a list of names")
        self.ann_file = Path(ann_file)
        self.img_dir = Path(img_dir)
        self.allow_outside_root = bool(allow_outside_root)
        self._report = DataReport(f"CocoDetection ({self.ann_file.name})", "boxes")
        data = _load_json(self.ann_file)
        self.category_ids, self.class_names = self._categories(data, classes)
        label_of = {cid: label for label, cid in enumerate(self.category_ids)}
        self._images = self._image_records(data)
        self._boxes: dict[Any, np.ndarray] = {}
        self._parse_annotations(data, label_of)
        self._report.samples = len(self._images)
        self._report.log()
        self._report.enforce(max_bad_fraction)
        check_image_files([self._path(r) for r in self._images], str(self.ann_file),
                          check_all=check_files, folder=self.img_dir)

    def data_report(self) -> DataReport:
        """What was read, clipped, dropped and ignored when the file was parsed."""
        return self._report

    # -- DetectionDataset API -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._images)

    def annotations(self, index: int) -> Annotations:
        rec = self._images[index]
        table = self._boxes.get(rec["id"], _EMPTY)  # x1 y1 x2 y2 label ignore
        return Annotations(
            image_id=rec["id"],
            path=str(self._path(rec)),
            boxes=table[:, :4].astype(np.float32),
            labels=table[:, 4].astype(np.int64),
            ignore=table[:, 5].astype(bool),
            size=(rec["height"], rec["width"]),
            source=str(self.ann_file),
        )

    # -- parsing --------------------------------------------------------------------------------
    def _path(self, rec: dict[str, Any]) -> Path:
        return rec["path"]

    def _categories(
        self, data: dict[str, Any], classes: Sequence[str] | None
    ) -> tuple[list[int], list[str]]:
        cats = _field(data, "categories", list, self.ann_file, "the file")
        by_id: dict[int, str] = {}
        for i, cat in enumerate(cats):
            where = f"categories[{i}]"
            cid = _field(cat, "id", int, self.ann_file, where)
            if cid in by_id:
                raise DataError(f"{self.ann_file}: {where} repeats category id {cid}")
            by_id[cid] = str(_field(cat, "name", str, self.ann_file, where))
        if classes is None:
            ids = sorted(by_id)
            return ids, [by_id[c] for c in ids]
        id_of: dict[str, int] = {}
        for cid, name in sorted(by_id.items()):
            id_of.setdefault(name, cid)
        missing = [n for n in classes if n not in id_of]
        if missing:
            raise DataError(
                f"{self.ann_file}: classes {missing} are not category names "
                f"(the file has {sorted(id_of)})"
            )
        return [id_of[n] for n in classes], list(classes)

    def _image_records(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        records, seen = [], set()
        for i, img in enumerate(_field(data, "images", list, self.ann_file, "the file")):
            where = f"images[{i}]"
            rec = {
                "id": _field(img, "id", (int, str), self.ann_file, where),
                "file_name": _field(img, "file_name", str, self.ann_file, where),
                "width": _field(img, "width", int, self.ann_file, where),
                "height": _field(img, "height", int, self.ann_file, where),
            }
            check_image_size(rec["width"], rec["height"], f"{self.ann_file}: {where}")
            rec["path"] = resolve_inside(self.img_dir, rec["file_name"],
                                         f"{self.ann_file}: {where} key 'file_name'",
                                         self.allow_outside_root)
            if rec["id"] in seen:
                raise DataError(f"{self.ann_file}: {where} repeats image id {rec['id']!r}")
            seen.add(rec["id"])
            records.append(rec)
        return records

    def _parse_annotations(self, data: dict[str, Any], label_of: dict[int, int]) -> None:
        """Check every annotation, then clip (and count) all boxes at once in original pixels."""
        known_cats = set(label_of)
        all_cats = {c["id"] for c in data["categories"]}
        size_of = {rec["id"]: (rec["width"], rec["height"]) for rec in self._images}
        ann_ids: set[Any] = set()
        rows, sizes, image_ids, places = [], [], [], []
        for i, ann in enumerate(_field(data, "annotations", list, self.ann_file, "the file")):
            where = f"annotations[{i}]"
            image_id = _field(ann, "image_id", (int, str), self.ann_file, where)
            cid = _field(ann, "category_id", int, self.ann_file, where)
            bbox = _field(ann, "bbox", list, self.ann_file, where)
            if "id" in ann:
                ann_id = _field(ann, "id", (int, str), self.ann_file, where)
                if ann_id in ann_ids:
                    raise DataError(f"{self.ann_file}: {where} repeats annotation id {ann_id!r}")
                ann_ids.add(ann_id)
            if image_id not in size_of:
                raise DataError(
                    f"{self.ann_file}: {where} key 'image_id' = {image_id!r} is not in 'images'"
                )
            if cid not in all_cats:
                raise DataError(
                    f"{self.ann_file}: {where} key 'category_id' = {cid} is not in 'categories'"
                )
            if len(bbox) != 4 or not all(is_number(v) for v in bbox):
                raise DataError(
                    f"{self.ann_file}: {where} key 'bbox' = {_short(bbox)}: expected [x, y, w, h] "
                    "finite numbers"
                )
            x, y, w, h = (float(v) for v in bbox)
            if w < 0 or h < 0:
                raise DataError(f"{self.ann_file}: {where} key 'bbox' = {_short(bbox)}: width "
                                "and height must be >= 0")
            crowd = _flag(ann, "iscrowd", self.ann_file, where) or _flag(
                ann, "ignore", self.ann_file, where)
            if cid not in known_cats:
                self._report.count("ignored", "category not in classes", f"{where}")
                continue
            rows.append((x, y, x + w, y + h, label_of[cid], float(crowd)))
            sizes.append(size_of[image_id])
            image_ids.append(image_id)
            places.append(f"{self.ann_file.name}: {where}")
        table = np.asarray(rows, np.float64).reshape(-1, 6)
        wh = np.asarray(sizes, np.float64).reshape(-1, 2)
        self._report.objects = len(table)
        span = np.concatenate([wh, wh], 1)
        far = ((table[:, :4] < -FAR_FACTOR * span) | (table[:, :4] > (1 + FAR_FACTOR) * span))
        if far.any():
            k = int(np.flatnonzero(far.any(1))[0])
            raise DataError(
                f"{self.ann_file}: {places[k].split(': ', 1)[1]} box {table[k, :4].tolist()} lies "
                f"more than {FAR_FACTOR:g} image sizes outside its {wh[k, 0]:g} x {wh[k, 1]:g} "
                "image (wrong units or a corrupt value)"
            )
        boxes, keep = clip_boxes(table[:, :4], wh[:, :1], wh[:, 1:], self._report, places)
        table = np.concatenate([boxes, table[keep, 4:]], 1)
        kept_ids = [image_ids[k] for k in keep.tolist()]
        groups: dict[Any, list[int]] = {}
        for row, image_id in enumerate(kept_ids):
            groups.setdefault(image_id, []).append(row)
        self._boxes = {image_id: table[idx] for image_id, idx in groups.items()}


_EMPTY = np.zeros((0, 6), np.float64)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _flag(ann: dict[str, Any], key: str, path: Path, where: str) -> bool:
    value = ann.get(key, 0)
    if value not in (0, 1):  # True/False compare equal to 1/0
        raise DataError(f"{path}: {where} key {key!r} = {_short(value)}: expected 0 or 1")
    return bool(value)


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"COCO annotation file not found: {path}")
    try:
        with path.open("r", encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with key 'images', got "
                        f"{type(data).__name__}")
    return data


def _field(obj: Any, key: str, kind: type | tuple[type, ...], path: Path, where: str) -> Any:
    """``obj[key]`` checked for type; errors name the file, the entry and the key."""
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {where} must be a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{path}: {where} has no key {key!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{path}: {where} key {key!r} = {_short(value)}: expected {names}")
    return value
