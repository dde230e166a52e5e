"""Text detection datasets from files: ICDAR-2015 txt annotations and the receipt competition's
JSON layout. Both are parsed (and checked) when the dataset is built, so a bad annotation fails
before training starts; images are read on access. The pipeline (augmentation, clipping,
resize, DB targets) is :mod:`detlab.data.datasets.text_base`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ...errors import DataError
from ...registry import DATASETS
from ..db_targets import DBTargetGenerator
from ..file_checks import check_image_files
from .image_files import IMAGE_SUFFIXES, read_image
from .text_base import IMAGENET_MEAN, IMAGENET_STD, TextDataset, TextSample, check_points

__all__ = ["IcdarTxt", "ReceiptJson", "parse_icdar_txt"]

IGNORE_TEXT = "###"


def parse_icdar_txt(path: str | Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Words of one ICDAR-2015 annotation file.

    Each non-empty line is ``x1,y1,x2,y2,x3,y3,x4,y4,transcription`` (the transcription may
    contain commas; ``###`` marks a don't-care word). A UTF-8 byte-order mark is tolerated.

    Returns:
        ``(polygons, ignore)``: float32 ``(4, 2)`` arrays and ``(N,)`` bool.

    Raises:
        DataError: unreadable file, or a malformed line (message ``file:line: …``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read annotation file {path}: {err}") from err
    polygons, ignore = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip().lstrip("\ufeff")  # a BOM may also start a concatenated line
        if not line:
            continue
        fields = line.split(",", 8)
        where = f"{path}:{number}"
        if len(fields) < 8:
            raise DataError(
                f"{where}: expected 'x1,y1,x2,y2,x3,y3,x4,y4,transcription', got {line!r}"
            )
        try:
            coords = [float(v) for v in fields[:8]]
        except ValueError as err:
            raise DataError(f"{where}: coordinates must be numbers, got {line!r}") from err
        polygons.append(check_points(np.reshape(coords, (4, 2)), where))
        transcription = fields[8].strip() if len(fields) > 8 else ""
        ignore.append(transcription == IGNORE_TEXT)
    return polygons, np.asarray(ignore, dtype=bool)


@DATASETS.register
class IcdarTxt(TextDataset):
    """ICDAR-2015 layout: images in ``img_dir``, one ``gt_<image stem>.txt`` per image in
    ``ann_dir`` (lines ``x1,y1,…,x4,y4,transcription``, ``###`` = ignore; see
    :func:`parse_icdar_txt`).

    Args:
        img_dir: folder of images (every image file inside, sorted by name).
        ann_dir: folder of annotation files.
        ann_name: annotation file name for an image, ``{stem}`` = image name without suffix.

    The other arguments are :class:`~detlab.data.datasets.text_base.TextDataset`'s.
    """

    def __init__(
        self,
        img_dir: str,
        ann_dir: str,
        ann_name: str = "gt_{stem}.txt",
        transforms: Sequence[Any] | None = None,
        img_size: int | None = None,
        resize: Literal["long_side", "fixed"] = "long_side",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        target_generator: Mapping[str, Any] | DBTargetGenerator | None = None,
        min_word_area: float = 1.0,
    ) -> None:
        super().__init__(transforms, img_size, resize, mean, std, target_generator,
                         min_word_area)
        images, annotations = _folder("IcdarTxt img_dir", img_dir), _folder("IcdarTxt ann_dir",
                                                                              ann_dir)
        files = sorted(f for f in images.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"IcdarTxt: no image files in img_dir {images}")
        missing = [f.name for f in files
                   if not (annotations / ann_name.format(stem=f.stem)).is_file()]
        if missing:
            raise DataError(
                f"IcdarTxt: {len(missing)} image(s) have no annotation file in {annotations} "
                f"(expected {ann_name!r}), e.g. {missing[0]} -> "
                f"{ann_name.format(stem=Path(missing[0]).stem)}"
            )
        self.records = [
            (f, *parse_icdar_txt(annotations / ann_name.format(stem=f.stem))) for f in files
        ]
        check_image_files(files, str(images))  # the first image decodes: before any model

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> TextSample:
        path, polygons, ignore = self.records[index]
        return TextSample(read_image(path, 3), [p.copy() for p in polygons], ignore.copy(),
                          path.stem, str(path))


@DATASETS.register
class ReceiptJson(TextDataset):
    """The receipt competition's JSON: ``{"images": {name: {"words": {id: {"points":
    [[x, y], …]}}}}}``, points in image pixels (>= 3 per word). A word is ignored (don't care)
    when it has ``"illegible": true`` or ``"transcription": "###"``; both fields are optional.

    Args:
        ann_file: the JSON file.
        img_dir: folder holding the images named by the JSON keys (default: ``ann_file``'s).

    The other arguments are :class:`~detlab.data.datasets.text_base.TextDataset`'s.
    """

    def __init__(
        self,
        ann_file: str,
        img_dir: str | None = None,
        transforms: Sequence[Any] | None = None,
        img_size: int | None = None,
        resize: Literal["long_side", "fixed"] = "long_side",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        target_generator: Mapping[str, Any] | DBTargetGenerator | None = None,
        min_word_area: float = 1.0,
    ) -> None:
        super().__init__(transforms, img_size, resize, mean, std, target_generator,
                         min_word_area)
        ann = Path(str(ann_file)).expanduser()
        if not ann.is_file():
            raise DataError(
                f"ReceiptJson: annotation file not found: {ann} (set it with "
                "data.<split>.ann_file=PATH)"
            )
        folder = _folder("ReceiptJson img_dir", img_dir) if img_dir is not None else ann.parent
        try:
            data = json.loads(ann.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"ReceiptJson: cannot read {ann} as JSON: {err}") from err
        images = data.get("images") if isinstance(data, Mapping) else None
        if not isinstance(images, Mapping) or not images:
            raise DataError(f"ReceiptJson: {ann} must hold a non-empty object under 'images'")
        self.records = [_receipt_record(ann, folder, name, entry)
                        for name, entry in sorted(images.items())]
        missing = [str(r[0]) for r in self.records if not r[0].is_file()]
        if missing:
            raise DataError(
                f"ReceiptJson: {len(missing)} image(s) listed in {ann} are not in {folder}, "
                f"e.g. {missing[0]}"
            )
        check_image_files([r[0] for r in self.records], str(ann))

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> TextSample:
        path, polygons, ignore = self.records[index]
        return TextSample(read_image(path, 3), [p.copy() for p in polygons], ignore.copy(),
                          path.name, str(path))


def _receipt_record(ann: Path, folder: Path, name: str, entry: Any
                    ) -> tuple[Path, list[np.ndarray], np.ndarray]:
    words = entry.get("words") if isinstance(entry, Mapping) else None
    if not isinstance(words, Mapping):
        raise DataError(f"{ann}: images[{name!r}] must be an object with a 'words' object")
    polygons, ignore = [], []
    for word_id, word in words.items():
        where = f"{ann}: images[{name!r}].words[{word_id!r}]"
        if not isinstance(word, Mapping) or "points" not in word:
            raise DataError(f"{where}: must be an object with 'points'")
        polygons.append(check_points(word["points"], where))
        ignore.append(bool(word.get("illegible", False))
                      or str(word.get("transcription", "")).strip() == IGNORE_TEXT)
    return folder / name, polygons, np.asarray(ignore, dtype=bool)


def _folder(what: str, value: Any) -> Path:
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise DataError(f"{what} is not a folder: {path}")
    return path
