"""``VocDetection``: boxes from Pascal VOC XML files (``Annotations/*.xml`` + ``JPEGImages/``).

The layout Detectron2, MMDetection and torchvision's ``VOCDetection`` read::

    root/Annotations/<id>.xml        one file per image
    root/JPEGImages/<filename>       the image named by the XML's <filename> (else <id>.jpg)
    root/ImageSets/Main/<split>.txt  optional list of ids (one per line) of a split

Coordinates: VOC's ``<bndbox>`` holds 1-based, inclusive pixel indices (``xmin=1, xmax=W``
covers the whole image). detlab boxes are continuous pixel-edge coordinates (the whole image
is ``[0, W] x [0, H]``), so, as Detectron2's ``load_voc_instances`` does, 1 is subtracted from
``xmin`` and ``ymin`` and ``xmax``/``ymax`` are kept: ``(xmin - 1, ymin - 1, xmax, ymax)``.
A box that leaves the image by at most 1 px (a common 0-based off-by-one of labelling tools)
is clipped to it and counted in ``stats["clipped"]``; more than that is a :class:`DataError`.

XML from users is untrusted: files with a ``<!DOCTYPE`` or ``<!ENTITY`` declaration are
refused (no entity expansion, so no "billion laughs"); ``defusedxml`` parses when installed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from ...errors import ConfigError, DataError
from ...registry import DATASETS
from ..file_checks import check_image_files, image_size
from .detection_base import IMAGENET_MEAN, IMAGENET_STD, Annotations, DetectionDataset

__all__ = ["VocDetection", "VOC_CLASSES", "parse_voc_xml", "VocObject"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_CLIP_TOLERANCE = 1.0  # px a box may leave the image before it is an error


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
    except ET.ParseError as err:
        raise DataError(f"{path}: not valid XML ({err})") from err
    except Exception as err:  # defusedxml's own refusals
        raise DataError(f"{path}: refused XML ({type(err).__name__}: {err})") from err


def _number(obj: ET.Element, tag: str, path: Path, where: str) -> float:
    node = obj.find(tag)
    if node is None or node.text is None or not node.text.strip():
        raise DataError(f"{path}: {where} has no <{tag}>")
    try:
        value = float(node.text.strip())
    except ValueError:
        raise DataError(f"{path}: {where} <{tag}> = {node.text.strip()!r} is not a number") \
            from None
    if not np.isfinite(value):
        raise DataError(f"{path}: {where} <{tag}> = {value} is not finite")
    return value


def parse_voc_xml(path: str | Path) -> tuple[str | None, tuple[int, int] | None, list[VocObject]]:
    """Read one VOC annotation file.

    Returns:
        ``(filename, size, objects)``: ``<filename>`` (or None), ``(h, w)`` from ``<size>``
        (or None when absent or 0), and each ``<object>`` with its box converted to
        continuous xyxy pixels (module docstring) and its ``difficult`` flag.

    Raises:
        DataError: unreadable or malformed file, naming the file and the object index.
    """
    path = Path(path)
    try:
        root = _parse_xml_bytes(path.read_bytes(), path)
    except OSError as err:
        raise DataError(f"cannot read annotation file {path}: {err}") from err
    if root.tag != "annotation":
        raise DataError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    filename = (root.findtext("filename") or "").strip() or None
    size = None
    size_node = root.find("size")
    if size_node is not None:
        w = _number(size_node, "width", path, "<size>")
        h = _number(size_node, "height", path, "<size>")
        if w < 0 or h < 0 or not w.is_integer() or not h.is_integer():
            raise DataError(f"{path}: <size> width={w}, height={h}: expected whole numbers >= 0")
        size = (int(h), int(w)) if w > 0 and h > 0 else None  # 0 x 0: some tools omit it so
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
            raise DataError(f"{path}: {where} has xmin={x1}, ymin={y1}, xmax={x2}, ymax={y2}: "
                            "expected xmin <= xmax and ymin <= ymax")
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise DataError(f"{path}: {where} <difficult> = {difficult!r}: expected 0 or 1")
        objects.append(VocObject(name, (x1 - 1.0, y1 - 1.0, x2, y2), difficult == "1"))
    return filename, size, objects


@DATASETS.register
class VocDetection(DetectionDataset):
    """A Pascal VOC folder: ``Annotations/*.xml`` + ``JPEGImages/`` (module docstring).

    Labels follow ``classes``: ``class_names[label]`` is the object ``<name>``. Objects whose
    name is not in ``classes`` are dropped and counted (``stats["other_class"]``), as
    ``CocoDetection.classes`` selects categories. Images without objects are valid samples.

    Args:
        root: the VOC folder (``VOC2007/``, or your own with the same sub-folders).
        split: id list ``ImageSets/Main/<split>.txt``; ``None`` uses every XML file (sorted).
        classes: names in label order; ``None`` = the sorted names found in the split's files;
            ``"voc"`` = the 20 Pascal VOC classes (:data:`VOC_CLASSES`).
        difficult: ``"ignore"`` (default; the object is an ignore region, as in VOC's own
            evaluation), ``"drop"`` (removed, counted) or ``"keep"`` (a normal object).
        ann_dir, img_dir: sub-folders of ``root`` (or absolute paths).
        check_files: check now that every image exists and has the ``<size>`` of its XML
            (header reads, no decoding); the first image is always checked.
        transforms, img_size, stride, scale_up, pad_value, mean, std: see
            :class:`~detlab.data.datasets.detection_base.DetectionDataset`.

    Attributes:
        stats: counters over the split: ``objects`` read, ``difficult``, ``dropped_difficult``,
            ``other_class`` (dropped), ``clipped`` (boxes moved by <= 1 px into the image).
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str | None = None,
        classes: Sequence[str] | str | None = None,
        difficult: Literal["ignore", "drop", "keep"] = "ignore",
        transforms: Sequence[Any] | None = None,
        img_size: int | None = 640,
        ann_dir: str = "Annotations",
        img_dir: str = "JPEGImages",
        check_files: bool = False,
        stride: int | None = 32,
        scale_up: bool = True,
        pad_value: float = 114,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(transforms, img_size, stride, scale_up, pad_value, mean, std)
        if root is None or str(root) == "":
            raise DataError("VocDetection.root is not set: give the VOC folder holding "
                            "Annotations/ and JPEGImages/ (override <dataset key>.root=PATH)")
        if difficult not in ("ignore", "drop", "keep"):
            raise ConfigError(f"VocDetection.difficult={difficult!r}: expected 'ignore', "
                              "'drop' or 'keep'")
        self.root = Path(root).expanduser()
        self.ann_dir, self.img_dir = self.root / ann_dir, self.root / img_dir
        if not self.ann_dir.is_dir():
            raise DataError(f"VOC annotation folder not found: {self.ann_dir}")
        ids = self._ids(split)
        parsed = [(i, *parse_voc_xml(self.ann_dir / f"{i}.xml")) for i in ids]
        self.class_names = self._classes(classes, parsed)
        self.stats = dict(objects=0, difficult=0, dropped_difficult=0, other_class=0, clipped=0)
        self._records = [self._record(rec, difficult) for rec in parsed]
        check_image_files([r[1] for r in self._records], str(self.ann_dir),
                          check_all=check_files, folder=self.img_dir)
        for image_id, path, size, _, xml in self._records[:len(self._records) if check_files
                                                            else 1]:
            actual = image_size(path)  # header only
            if size is not None and actual != size:
                raise DataError(f"image {path} is {actual[0]}x{actual[1]} (h x w) but {xml} "
                                f"<size> says {size[0]}x{size[1]}")

    # -- DetectionDataset API -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def annotations(self, index: int) -> Annotations:
        image_id, path, size, table, source = self._records[index]
        if size is None:  # no <size>: the image header (not the pixels) gives it
            size = image_size(path)
            self._records[index] = (image_id, path, size, table, source)
        return Annotations(
            image_id=image_id, path=str(path), boxes=table[:, :4].astype(np.float32),
            labels=table[:, 4].astype(np.int64), ignore=table[:, 5].astype(bool),
            size=size, source=source,
        )

    # -- parsing --------------------------------------------------------------------------------
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
            ids = [line.split()[0] for line in list_file.read_text(encoding="utf-8").splitlines()
                   if line.strip()]
            where = str(list_file)
            missing = [i for i in ids if not (self.ann_dir / f"{i}.xml").is_file()]
            if missing:
                raise DataError(f"{list_file}: {len(missing)} id(s) have no annotation file in "
                                f"{self.ann_dir}, e.g. {missing[0]!r} -> {missing[0]}.xml")
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

    def _record(self, rec: tuple, difficult: str) -> tuple:
        image_id, filename, size, objects = rec
        xml = self.ann_dir / f"{image_id}.xml"
        label_of = {n: i for i, n in enumerate(self.class_names)}
        rows = []
        for i, (name, box, hard) in enumerate(objects):
            self.stats["objects"] += 1
            if name not in label_of:
                self.stats["other_class"] += 1
                continue
            self.stats["difficult"] += int(hard)
            if hard and difficult == "drop":
                self.stats["dropped_difficult"] += 1
                continue
            box = self._clip(box, size, xml, i, name)
            rows.append((*box, label_of[name], float(hard and difficult == "ignore")))
        path = self.img_dir / (filename or f"{image_id}.jpg")
        table = np.asarray(rows, np.float64).reshape(-1, 6)  # x1 y1 x2 y2 label ignore
        return image_id, path, size, table, str(xml)

    def _clip(self, box: tuple, size: tuple[int, int] | None, xml: Path, index: int,
              name: str) -> tuple:
        if size is None:
            return box
        h, w = size
        x1, y1, x2, y2 = box
        if (min(x1, y1) < -_CLIP_TOLERANCE or x2 > w + _CLIP_TOLERANCE
                or y2 > h + _CLIP_TOLERANCE):
            raise DataError(
                f"{xml}: object[{index}] ({name!r}) box xmin={x1 + 1:g}, ymin={y1 + 1:g}, "
                f"xmax={x2:g}, ymax={y2:g} (1-based) lies outside the {w}x{h} image of <size>"
            )
        clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h)))
        if clipped != tuple(box):
            self.stats["clipped"] += 1
        return clipped
