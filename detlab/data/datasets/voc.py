"""``VocDetection``: boxes from Pascal VOC XML files (``Annotations/*.xml`` + ``JPEGImages/``).

The layout Detectron2, MMDetection and torchvision's ``VOCDetection`` read::

    root/Annotations/<id>.xml        one file per image
    root/JPEGImages/<filename>       the image named by the XML's <filename> (else <id>.jpg)
    root/ImageSets/Main/<split>.txt  optional list of ids (one per line) of a split

Coordinates: VOC's ``<bndbox>`` holds 1-based, inclusive pixel indices (``xmin=1, xmax=W``
covers the whole image). detlab boxes are continuous pixel-edge coordinates (the whole image
is ``[0, W] x [0, H]``), so, as Detectron2's ``load_voc_instances`` does, 1 is subtracted from
``xmin`` and ``ymin`` and ``xmax``/``ymax`` are kept: ``(xmin - 1, ymin - 1, xmax, ymax)``.

The files are checked when the dataset is built (rules in :mod:`detlab.data.validation`): a
malformed file or number, NaN/inf, ``xmax < xmin``, a ``<size>`` that is not a whole number of
pixels in ``[1, MAX_IMAGE_SIDE]``, a coordinate more than ``FAR_FACTOR`` image sizes outside
the image, or a ``<filename>`` / split id leading out of its folder raises
:class:`~detlab.errors.DataError` naming the file and the object. Boxes partly outside the
image (e.g. a 0-based ``xmax = W + 1`` of a labelling tool) are clipped to it and boxes left
without area dropped, both counted in :meth:`VocDetection.data_report` and logged once.

XML from users is untrusted: files with a ``<!DOCTYPE`` or ``<!ENTITY`` declaration are
refused (no entity expansion, so no "billion laughs"); ``defusedxml`` parses when installed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from ...errors import ConfigError, DataError
from ...registry import DATASETS
from ..file_checks import check_image_files, image_size
from ..geometry import UNSET, InputGeometry
from ..validation import (
    DEFAULT_MAX_BAD_FRACTION,
    DataReport,
    check_bad_fraction,
    check_far_coordinates,
    check_image_size,
    clip_boxes,
    parse_number,
    read_text,
    require_inside,
    resolve_inside,
)
from .detection_base import IMAGENET_MEAN, IMAGENET_STD, Annotations, DetectionDataset

__all__ = ["VocDetection", "VOC_CLASSES", "parse_voc_xml", "VocObject"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class VocObject(NamedTuple):
    """One ``<object>`` of a VOC file."""

    name: str
    box: tuple[float, float, float, float]  #: continuous xyxy pixels (module docstring)
    difficult: bool


def _parse_xml_bytes(data: bytes, path: Path) -> ET.Element:
    if _DECLARATION.search(data):
        raise DataError(f"{path}: DOCTYPE/ENTITY declarations are not allowed in annotation XML "
                        "(entity expansion is refused for safety)")
    try:
        try:
            from defusedxml.ElementTree import fromstring  # optional, stricter parser
        except ImportError:
            fromstring = ET.fromstring
        return fromstring(data)
    except ET.ParseError as err:  # also malformed or non-UTF-8 bytes
        raise DataError(f"{path}: not valid XML ({err})") from err
    except Exception as err:  # defusedxml's own refusals, encodings Python does not know
        raise DataError(f"{path}: refused XML ({type(err).__name__}: {err})") from err


def _number(obj: ET.Element, tag: str, path: Path, where: str) -> float:
    node = obj.find(tag)
    if node is None or node.text is None or not node.text.strip():
        raise DataError(f"{path}: {where} has no <{tag}>")
    try:
        value = parse_number(node.text)
    except ValueError:
        raise DataError(f"{path}: {where} <{tag}> = {node.text.strip()[:40]!r} is not a "
                        "number") from None
    if not np.isfinite(value):
        raise DataError(f"{path}: {where} <{tag}> = {value} is not finite")
    return value


def _size(root: ET.Element, path: Path) -> tuple[int, int] | None:
    """``(h, w)`` from ``<size>``; None when absent or ``0 x 0`` (some tools write that)."""
    node = root.find("size")
    if node is None:
        return None
    w = _number(node, "width", path, "<size>")
    h = _number(node, "height", path, "<size>")
    if w == 0 and h == 0:
        return None
    if not (w.is_integer() and h.is_integer()):
        raise DataError(f"{path}: <size> width={w:g}, height={h:g}: expected whole pixels")
    width, height = check_image_size(int(w), int(h), f"{path}: <size>")
    return height, width


def parse_voc_xml(path: str | Path) -> tuple[str | None, tuple[int, int] | None, list[VocObject]]:
    """Read one VOC annotation file.

    Returns:
        ``(filename, size, objects)``: ``<filename>`` (or None), ``(h, w)`` from ``<size>``
        (or None when absent or 0 x 0), and each ``<object>`` with its box converted to
        continuous xyxy pixels (module docstring; not clipped) and its ``difficult`` flag.

    Raises:
        DataError: unreadable or malformed file, naming the file and the object index.
    """
    path = Path(path)
    try:
        root = _parse_xml_bytes(path.read_bytes(), path)
    except OSError as err:
        raise DataError(f"cannot read annotation file {path}: {err.strerror or err}") from err
    if root.tag != "annotation":
        raise DataError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    filename = (root.findtext("filename") or "").strip() or None
    size = _size(root, path)
    objects = []
    for i, obj in enumerate(root.findall("object")):
        where = f"object[{i}]"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{path}: {where} has no <name>")
        box_node = obj.find("bndbox")
        if box_node is None:
            raise DataError(f"{path}: {where} ({name!r}) has no <bndbox>")
        where = f"{where} ({name!r})"
        x1, y1, x2, y2 = (_number(box_node, t, path, where)
                          for t in ("xmin", "ymin", "xmax", "ymax"))
        if x2 < x1 or y2 < y1:
            raise DataError(f"{path}: {where} has xmin={x1:g}, ymin={y1:g}, xmax={x2:g}, "
                            f"ymax={y2:g}: expected xmin <= xmax and ymin <= ymax")
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise DataError(f"{path}: {where} <difficult> = {difficult[:20]!r}: expected 0 or 1")
        objects.append(VocObject(name, (x1 - 1.0, y1 - 1.0, x2, y2), difficult == "1"))
    return filename, size, objects


@DATASETS.register
class VocDetection(DetectionDataset):
    """A Pascal VOC folder: ``Annotations/*.xml`` + ``JPEGImages/`` (module docstring).

    Labels follow ``classes``: ``class_names[label]`` is the object ``<name>``. Objects whose
    name is not in ``classes`` are left out and counted (``ignored``, "category not in
    classes"), as ``CocoDetection.classes`` selects categories. Images without objects are
    valid samples. An XML without ``<size>`` gets it from the image header when built (the
    boxes are clipped in original pixels then).

    Args:
        root: the VOC folder (``VOC2007/``, or your own with the same sub-folders).
        split: id list ``ImageSets/Main/<split>.txt``; ``None`` uses every XML file (sorted).
        classes: names in label order; ``None`` = the sorted names found in the split's files;
            ``"voc"`` = the 20 Pascal VOC classes (:data:`VOC_CLASSES`).
        difficult: ``"ignore"`` (default; the object is an ignore region, as in VOC's own
            evaluation), ``"drop"`` (left out, counted as ``ignored``) or ``"keep"`` (a normal
            object).
        ann_dir, img_dir: sub-folders of ``root`` (or absolute paths).
        check_files: check now that every image exists and has the ``<size>`` of its XML
            (header reads, no decoding); the first image is always checked.
        allow_outside_root: accept ``<filename>`` values (absolute, ``..``, symlinks) that lead
            outside ``img_dir``.
        max_bad_fraction: largest fraction of boxes that may be dropped (no area inside the
            image) before building fails.
        transforms, geometry, mean, std: see
            :class:`~detlab.data.datasets.detection_base.DetectionDataset`.
        img_size, stride, scale_up, pad_value: shorthand for ``geometry`` (same class).
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str | None = None,
        classes: Sequence[str] | str | None = None,
        difficult: Literal["ignore", "drop", "keep"] = "ignore",
        transforms: Sequence[Any] | None = None,
        img_size: int | None = UNSET,
        ann_dir: str = "Annotations",
        img_dir: str = "JPEGImages",
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
        max_bad_fraction = check_bad_fraction(max_bad_fraction, "VocDetection")
        if root is None or str(root) == "":
            raise DataError("VocDetection.root is not set: give the VOC folder holding "
                            "Annotations/ and JPEGImages/ (override <dataset key>.root=PATH)")
        if difficult not in ("ignore", "drop", "keep"):
            raise ConfigError(f"VocDetection.difficult={difficult!r}: expected 'ignore', "
                              "'drop' or 'keep'")
        self.root = Path(root).expanduser()
        self.ann_dir, self.img_dir = self.root / ann_dir, self.root / img_dir
        self.allow_outside_root = bool(allow_outside_root)
        if not self.ann_dir.is_dir():
            raise DataError(f"VOC annotation folder not found: {self.ann_dir}")
        self._report = DataReport(
            f"VocDetection ({self.ann_dir.parent.name}/{self.ann_dir.name})", "boxes")
        ids = self._ids(split)
        parsed = [(i, *parse_voc_xml(self._xml(i))) for i in ids]
        self.class_names = self._classes(classes, parsed)
        self._records = self._parse(parsed, difficult)
        self._report.samples = len(self._records)
        self._report.log()
        self._report.enforce(max_bad_fraction)
        check_image_files([r[1] for r in self._records], str(self.ann_dir),
                          check_all=check_files, folder=self.img_dir)
        for image_id, path, size, _, xml in self._records[:len(self._records) if check_files
                                                            else 1]:
            actual = image_size(path)  # header only
            if actual != size:
                raise DataError(f"image {path} is {actual[0]}x{actual[1]} (h x w) but {xml} "
                                f"<size> says {size[0]}x{size[1]}")

    def data_report(self) -> DataReport:
        """What was read, clipped, dropped and ignored when the files were parsed."""
        return self._report

    # -- DetectionDataset API -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def annotations(self, index: int) -> Annotations:
        image_id, path, size, table, source = self._records[index]
        return Annotations(
            image_id=image_id, path=str(path), boxes=table[:, :4].astype(np.float32),
            labels=table[:, 4].astype(np.int64), ignore=table[:, 5].astype(bool),
            size=size, source=source,
        )

    # -- parsing --------------------------------------------------------------------------------
    def _xml(self, image_id: str) -> Path:
        """``Annotations/<id>.xml``, required to stay in the annotation folder (ids come from
        a split list the user wrote)."""
        return require_inside(self.ann_dir / f"{image_id}.xml", self.ann_dir,
                              f"VOC id {image_id[:60]!r}", shown=f"{image_id}.xml")

    def _ids(self, split: str | None) -> list[str]:
        if split is None:
            ids = sorted(p.stem for p in self.ann_dir.glob("*.xml"))
            where = f"{self.ann_dir}/*.xml"
        else:
            list_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
            if not list_file.is_file():
                raise DataError(f"VOC split list not found: {list_file} (split={split!r}; "
                                "split=None uses every file in Annotations/)")
            # Main/<class>_<split>.txt lines are "id  1"; the first field is the id either way.
            ids = [line.split()[0] for line in read_text(list_file, "split list").splitlines()
                   if line.strip()]
            where = str(list_file)
            missing = [i for i in ids if not self._xml(i).is_file()]
            if missing:
                raise DataError(f"{list_file}: {len(missing)} id(s) have no annotation file in "
                                f"{self.ann_dir}, e.g. {missing[0][:60]!r} -> "
                                f"{missing[0][:60]}.xml")
        if not ids:
            raise DataError(f"no VOC annotations found in {where}")
        return ids

    def _classes(self, classes: Sequence[str] | str | None, parsed: list) -> list[str]:
        if classes is None:
            names = sorted({o[0] for rec in parsed for o in rec[3]})
            if not names:
                raise DataError(f"{self.ann_dir}: no <object> in any file, so no class names; "
                                "give classes=[...]")
            return names
        if isinstance(classes, str):
            if classes.lower() != "voc":
                raise ConfigError(f"VocDetection.classes={classes!r}: expected a list of names "
                                  "or 'voc' (the 20 Pascal VOC classes)")
            return list(VOC_CLASSES)
        names = [str(c) for c in classes]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"VocDetection.classes={list(classes)!r}: expected distinct names")
        return names

    def _parse(self, parsed: list, difficult: str) -> list[tuple]:
        """Records ``(id, image path, (h, w), table, xml)``; every box checked, clipped to its
        image in original pixels and counted (``table`` rows: x1 y1 x2 y2 label ignore)."""
        label_of = {n: i for i, n in enumerate(self.class_names)}
        records, rows, sizes, owner, places = [], [], [], [], []
        for image_id, filename, size, objects in parsed:
            xml = self.ann_dir / f"{image_id}.xml"
            path = resolve_inside(self.img_dir, filename or f"{image_id}.jpg",
                                  f"{xml}: <filename>", self.allow_outside_root)
            if size is None:  # no <size>: the image header (not the pixels) gives it
                size = image_size(path)
            h, w = size
            for i, (name, box, hard) in enumerate(objects):
                where = f"object[{i}] ({name!r})"
                if name not in label_of:
                    self._report.count("ignored", "category not in classes",
                                       f"{xml.name}: {where}")
                    continue
                if hard and difficult == "drop":
                    self._report.count("ignored", "difficult (difficult='drop')",
                                       f"{xml.name}: {where}")
                    continue
                check_far_coordinates(np.reshape(box, (2, 2)), w, h, f"{xml}: {where}")
                rows.append((*box, label_of[name], float(hard and difficult == "ignore")))
                sizes.append((w, h))
                owner.append(len(records))
                places.append(f"{xml.name}: {where}")
            records.append((image_id, path, size, xml))
        table = np.asarray(rows, np.float64).reshape(-1, 6)
        wh = np.asarray(sizes, np.float64).reshape(-1, 2)
        self._report.objects = len(table)
        boxes, keep = clip_boxes(table[:, :4], wh[:, :1], wh[:, 1:], self._report, places)
        table = np.concatenate([boxes, table[keep, 4:]], 1)
        kept_owner = np.asarray(owner, np.int64).reshape(-1)[keep]  # ascending
        bounds = np.searchsorted(kept_owner, np.arange(len(records) + 1))
        return [(image_id, path, size, table[bounds[k]:bounds[k + 1]], str(xml))
                for k, (image_id, path, size, xml) in enumerate(records)]
