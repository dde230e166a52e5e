"""Text detection datasets from files: ICDAR-2015 txt annotations and the receipt competition's
JSON layout. Both are parsed (and checked) when the dataset is built, so a bad annotation fails
before training starts; images are read on access (only their size is read at build time).
The pipeline (augmentation, clipping, resize, DB targets) is
:mod:`detlab.data.datasets.text_base`.

Checks at build time (rules in :mod:`detlab.data.validation`): malformed or non-UTF-8 files,
non-finite or far-outside coordinates (more than ``FAR_FACTOR`` image sizes), image files
outside their folder raise :class:`~detlab.errors.DataError` naming ``file:line`` or the entry.
Words partly outside the image are clipped to it in the file's pixels and words left with less
than ``min_word_area`` dropped, both counted in ``data_report()``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import shapely

from ...errors import DataError
from ...registry import DATASETS
from ..db_targets import DBTargetGenerator
from ..file_checks import check_image_files
from ..validation import (
    DEFAULT_MAX_BAD_FRACTION,
    DataReport,
    check_bad_fraction,
    check_far_coordinates,
    image_size,
    parse_number,
    read_text,
    require_inside,
    resolve_inside,
)
from .image_files import IMAGE_SUFFIXES, read_image
from .text_base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TextDataset,
    TextSample,
    check_points,
    clip_polygons,
)

__all__ = ["IcdarTxt", "ReceiptJson", "parse_icdar_txt"]

IGNORE_TEXT = "###"


def parse_icdar_txt(path: str | Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Words of one ICDAR-2015 annotation file.

    Each non-empty line is ``x1,y1,x2,y2,x3,y3,x4,y4,transcription`` (the transcription may
    contain commas; ``###`` marks a don't-care word). A UTF-8 byte-order mark is tolerated.
    A line whose first nine fields are numbers followed by more text is rejected: that is an
    extra (or shifted) coordinate, not a numeric transcription.

    Returns:
        ``(polygons, ignore)``: float32 ``(4, 2)`` arrays and ``(N,)`` bool.

    Raises:
        DataError: unreadable file, or a malformed line (message ``file:line: …``).
    """
    path = Path(path)
    text = read_text(path, "annotation file", encoding="utf-8-sig")
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
            coords = [parse_number(v) for v in fields[:8]]
        except ValueError as err:
            raise DataError(f"{where}: coordinates must be numbers, got {line!r}") from err
        rest = fields[8].split(",", 1) if len(fields) > 8 else []
        if len(rest) == 2 and _is_float(rest[0]):
            raise DataError(f"{where}: 9 numbers before the transcription in {line!r}; expected "
                            "exactly 8 coordinates x1,y1,...,x4,y4")
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
        allow_outside_root: accept image or annotation files that are symlinks leading out of
            their folder.
        max_bad_fraction: largest fraction of words that may be dropped (less than
            ``min_word_area`` left inside the image) before building fails.

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
        allow_outside_root: bool = False,
        max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    ) -> None:
        super().__init__(transforms, img_size, resize, mean, std, target_generator,
                         min_word_area)
        max_bad_fraction = check_bad_fraction(max_bad_fraction, "IcdarTxt")
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
        self._report = DataReport(f"IcdarTxt ({annotations})", "words")
        self.records = []
        for f in files:
            ann = annotations / ann_name.format(stem=f.stem)
            require_inside(f, images, f"IcdarTxt img_dir {images}", allow_outside_root)
            require_inside(ann, annotations, f"IcdarTxt ann_dir {annotations}",
                           allow_outside_root)
            polygons, ignore = parse_icdar_txt(ann)
            places = [f"{ann}: word {i + 1}" for i in range(len(polygons))]
            self.records.append(_checked_words(f, polygons, ignore, places, self.min_word_area,
                                               self._report))
        check_image_files(files, str(images))  # the first image decodes: before any model
        self._report.samples = len(self.records)
        self._report.log()
        self._report.enforce(max_bad_fraction)

    def data_report(self) -> DataReport:
        """What was read, clipped and dropped when the annotation files were parsed."""
        return self._report

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
        allow_outside_root: accept image names (absolute, ``..``, symlinks) that lead outside
            ``img_dir``.
        max_bad_fraction: largest fraction of words that may be dropped (less than
            ``min_word_area`` left inside the image) before building fails.

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
        allow_outside_root: bool = False,
        max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    ) -> None:
        super().__init__(transforms, img_size, resize, mean, std, target_generator,
                         min_word_area)
        max_bad_fraction = check_bad_fraction(max_bad_fraction, "ReceiptJson")
        ann = Path(str(ann_file)).expanduser()
        if not ann.is_file():
            raise DataError(
                f"ReceiptJson: annotation file not found: {ann} (set it with "
                "data.<split>.ann_file=PATH)"
            )
        folder = _folder("ReceiptJson img_dir", img_dir) if img_dir is not None else ann.parent
        text = read_text(ann, "ReceiptJson annotation file", encoding="utf-8-sig")
        try:
            data = json.loads(text, object_pairs_hook=_unique_keys(ann))
        except (json.JSONDecodeError, RecursionError) as err:
            raise DataError(f"ReceiptJson: cannot read {ann} as JSON: {err}") from err
        images = data.get("images") if isinstance(data, Mapping) else None
        if not isinstance(images, Mapping) or not images:
            raise DataError(f"ReceiptJson: {ann} must hold a non-empty object under 'images'")
        self._report = DataReport(f"ReceiptJson ({ann.name})", "words")
        self.records = []
        for name, entry in sorted(images.items()):
            where = f"{ann}: images[{name!r}]"
            path = resolve_inside(folder, name, where, allow_outside_root)
            if not path.is_file():
                raise DataError(f"ReceiptJson: image {name!r} listed in {ann} is not in "
                                f"{folder} ({path})")
            polygons, ignore, places = _receipt_words(where, entry)
            self.records.append(_checked_words(path, polygons, ignore, places,
                                               self.min_word_area, self._report))
        check_image_files([r[0] for r in self.records], str(ann))
        self._report.samples = len(self.records)
        self._report.log()
        self._report.enforce(max_bad_fraction)

    def data_report(self) -> DataReport:
        """What was read, clipped and dropped when the JSON file was parsed."""
        return self._report

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> TextSample:
        path, polygons, ignore = self.records[index]
        return TextSample(read_image(path, 3), [p.copy() for p in polygons], ignore.copy(),
                          path.name, str(path))


def _receipt_words(where: str, entry: Any) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    words = entry.get("words") if isinstance(entry, Mapping) else None
    if not isinstance(words, Mapping):
        raise DataError(f"{where} must be an object with a 'words' object")
    polygons, ignore, places = [], [], []
    for word_id, word in words.items():
        place = f"{where}.words[{word_id!r}]"
        if not isinstance(word, Mapping) or "points" not in word:
            raise DataError(f"{place}: must be an object with 'points'")
        illegible = word.get("illegible", False)
        if illegible not in (True, False):  # 0 and 1 compare equal to False and True
            raise DataError(f"{place}: 'illegible' must be true or false, got {illegible!r}")
        transcription = word.get("transcription", "")
        if transcription is not None and not isinstance(transcription, str):
            raise DataError(f"{place}: 'transcription' must be a string, got "
                            f"{type(transcription).__name__}")
        polygons.append(check_points(word["points"], place))
        ignore.append(bool(illegible) or (transcription or "").strip() == IGNORE_TEXT)
        places.append(place)
    return polygons, np.asarray(ignore, dtype=bool), places


def _checked_words(path: Path, polygons: list[np.ndarray], ignore: np.ndarray,
                   places: list[str], min_word_area: float, report: DataReport
                   ) -> tuple[Path, list[np.ndarray], np.ndarray]:
    """Reject far-outside words; clip the others to the image (its size from the file header)
    and drop those left with < ``min_word_area`` px², counting both in ``report``."""
    height, width = image_size(path)
    report.objects += len(polygons)
    kept, flags, seen = [], [], set()
    for poly, flag, place in zip(polygons, ignore, places):
        check_far_coordinates(poly, width, height, place)
        key = poly.astype(np.float32).tobytes()
        if key in seen:  # the same outline twice is one word: a second GT would be a miss
            report.count("dropped", "duplicate word", place)
            continue
        seen.add(key)
        try:
            out, out_flags = clip_polygons([poly], np.asarray([flag]), height, width,
                                           min_word_area)
        except shapely.errors.GEOSException as err:  # degenerate geometry GEOS cannot cut
            raise DataError(f"{place}: polygon {poly.tolist()} cannot be clipped: {err}") from err
        if not out:
            inside = (poly >= 0).all() and (poly[:, 0] <= width - 1).all() and (
                poly[:, 1] <= height - 1).all()
            report.count("dropped", "area < min_word_area" if inside else
                         "outside image or area < min_word_area", place)
            continue
        if out[0].shape != poly.shape or not np.array_equal(out[0], poly):
            report.count("clipped", "outside image", place)
        kept.append(out[0])
        flags.append(bool(out_flags[0]))
    return path, kept, np.asarray(flags, dtype=bool)


def _unique_keys(path: Path) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise DataError(f"ReceiptJson: {path} repeats the key {key!r} in one object")
            out[key] = value
        return out

    return hook


def _is_float(text: str) -> bool:
    try:
        parse_number(text)
    except ValueError:
        return False
    return True


def _folder(what: str, value: Any) -> Path:
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise DataError(f"{what} is not a folder: {path}")
    return path
