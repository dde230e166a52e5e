"""Checks and repair counters shared by every annotation format.

Rules every dataset follows (``CocoDetection``, ``YoloDetection``, ``IcdarTxt``,
``ReceiptJson``, ``CTVolumeSlices``; a new format calls the same helpers):

* **reject** what cannot be right with a :class:`~detlab.errors.DataError` naming the file, the
  line or entry and the reason: malformed or non-UTF-8 text, non-numbers, NaN/inf, an image
  size that is not an int in ``[1, MAX_IMAGE_SIDE]``, a negative box width/height, a coordinate
  farther than ``FAR_FACTOR`` image sizes outside the image (a unit or format mistake, not a
  box that slightly overshoots), a file path leaving the data root (:func:`resolve_inside`),
  duplicate ids;
* **repair** what is conventionally repaired, in ORIGINAL image coordinates when the file is
  parsed, and **count** it in a :class:`DataReport`: boxes/words partly outside the image are
  clipped to it, boxes/words left with no area are dropped;
* print the counters once per split (logger ``detlab.data``: INFO when nothing was repaired,
  WARNING otherwise; a dataset built by the data module inside :func:`recipe_key` is named
  after its recipe key: ``data.train (CocoDetection instances.json): …``) and fail when more
  than ``max_bad_fraction`` of the objects were dropped or of the samples skipped
  (:meth:`DataReport.enforce`; default :data:`DEFAULT_MAX_BAD_FRACTION`).

The four counter kinds: ``skipped`` (a whole image or case left out), ``clipped`` (an object
cut to the image), ``dropped`` (an object removed as unusable), ``ignored`` (annotations left
out on purpose, e.g. categories not in ``classes``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import is_int
from ..checks import is_number as _finite_number
from ..errors import ConfigError, DataError

__all__ = [
    "DataReport",
    "DEFAULT_MAX_BAD_FRACTION",
    "FAR_FACTOR",
    "MAX_IMAGE_SIDE",
    "check_bad_fraction",
    "check_image_size",
    "check_far_coordinates",
    "clip_boxes",
    "image_size",
    "is_number",
    "parse_number",
    "read_text",
    "recipe_key",
    "require_inside",
    "resolve_inside",
]

log = logging.getLogger("detlab.data")

#: Default of ``max_bad_fraction``: building fails when more than 5 % of the objects are
#: dropped (zero area, outside the image) or 5 % of the samples are skipped.
DEFAULT_MAX_BAD_FRACTION = 0.05
#: A coordinate more than this many image widths/heights outside the image is rejected.
FAR_FACTOR = 10.0
#: Largest image width/height (px) an annotation file may state.
MAX_IMAGE_SIDE = 1 << 20
KINDS = ("skipped", "clipped", "dropped", "ignored")
_EXAMPLES = 3  # places remembered per (kind, reason) for the messages
# recipe key ("data.train") of the dataset being built, set by the data module: a dataset
# logs its report in its constructor and does not know which split it is
_RECIPE_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "detlab_data_recipe_key", default=None)


@contextlib.contextmanager
def recipe_key(key: str) -> Iterator[None]:
    """Reports created inside (by datasets being built) are named after ``key``:
    ``"CocoDetection (instances.json)"`` becomes ``"data.train (CocoDetection instances.json)"``
    in their log line and errors. Used by :meth:`detlab.data.datamodule.DataModule.dataset`."""
    token = _RECIPE_KEY.set(key)
    try:
        yield
    finally:
        _RECIPE_KEY.reset(token)


def _keyed_name(key: str, name: str) -> str:
    match = re.fullmatch(r"(\S+) \((.*)\)", name)
    return f"{key} ({match[1]} {match[2]})" if match else f"{key} ({name})"


@dataclass
class DataReport:
    """Counters of one dataset split: what was read, and what was skipped, clipped, dropped or
    ignored, with the reason and the first few places (``file:line`` / ``file: entry``).

    Attributes:
        name: the dataset and its source, e.g. ``"CocoDetection (instances.json)"``; created
            inside :func:`recipe_key` (the data module), ``"data.train (CocoDetection
            instances.json)"``.
        unit: what ``objects`` counts (``"boxes"``, ``"words"``, ``"cases"``).
        samples: images (or cases) read.
        objects: objects (boxes, words) read before any repair.
        counts: ``{(kind, reason): n}``, kind one of ``skipped clipped dropped ignored``.
        examples: ``{(kind, reason): [place, …]}`` (at most 3 each).
    """

    name: str
    unit: str = "boxes"
    samples: int = 0
    objects: int = 0
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    examples: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        key = _RECIPE_KEY.get()
        if key and not self.name.startswith(f"{key} ("):
            self.name = _keyed_name(key, self.name)

    def count(self, kind: str, reason: str, where: str = "", n: int = 1) -> None:
        """Add ``n`` to the ``kind`` counter for ``reason``; ``where`` names the place."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if n <= 0:
            return
        key = (kind, reason)
        self.counts[key] = self.counts.get(key, 0) + int(n)
        places = self.examples.setdefault(key, [])
        if where and len(places) < _EXAMPLES:
            places.append(where)

    def total(self, kind: str) -> int:
        """Sum of the ``kind`` counters over every reason."""
        return sum(n for (k, _), n in self.counts.items() if k == kind)

    def summary(self) -> str:
        """One line: ``"<name>: 3 images, 12 boxes, clipped 2 (outside image), …"``."""
        sample_unit = "cases" if self.unit == "cases" else "images"
        parts = [f"{self.samples} {sample_unit}"]
        if self.unit != "cases":
            parts.append(f"{self.objects} {self.unit}")
        for kind in KINDS:
            for (k, reason), n in sorted(self.counts.items()):
                if k == kind:
                    parts.append(f"{kind} {n} ({reason})")
        if not self.counts:
            parts.append("nothing repaired")
        return f"{self.name}: " + ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serializable) for ``detlab check-data``."""
        return {
            "name": self.name, "unit": self.unit, "samples": self.samples,
            "objects": self.objects,
            "counts": [
                {"kind": k, "reason": r, "count": n, "examples": self.examples.get((k, r), [])}
                for (k, r), n in sorted(self.counts.items())
            ],
        }

    def log(self, logger: logging.Logger | None = None) -> None:
        """Log :meth:`summary` (INFO, or WARNING when something was repaired or left out;
        the first places of each repair follow at the same level)."""
        logger = logger or log
        repaired = any(k != "ignored" for k, _ in self.counts)
        level = logging.WARNING if repaired else logging.INFO
        logger.log(level, "%s", self.summary())
        for (kind, reason), places in sorted(self.examples.items()):
            if kind != "ignored" and places:
                logger.log(level, "  %s (%s), e.g. %s", kind, reason, "; ".join(places))

    def enforce(self, max_bad_fraction: float) -> None:
        """Raise :class:`DataError` when more than ``max_bad_fraction`` of the objects were
        dropped or of the samples skipped."""
        checks = (("dropped", self.objects, self.unit), ("skipped", self.samples, "samples"))
        for kind, total, unit in checks:
            bad = self.total(kind)
            if bad and bad > max_bad_fraction * max(total, 1):
                reasons = "; ".join(
                    f"{n} {reason}" + (f" (e.g. {self.examples[(k, reason)][0]})"
                                       if self.examples.get((k, reason)) else "")
                    for (k, reason), n in sorted(self.counts.items()) if k == kind)
                raise DataError(
                    f"{self.name}: {kind} {bad} of {total} {unit} ({bad / max(total, 1):.1%}), "
                    f"more than max_bad_fraction={max_bad_fraction:g}: {reasons}. Fix the "
                    "annotations, or raise max_bad_fraction in the dataset's recipe entry"
                )


def check_bad_fraction(value: Any, owner: str) -> float:
    """``max_bad_fraction`` as a float in ``[0, 1]``, else :class:`ConfigError`."""
    if not is_number(value) or not 0 <= value <= 1:
        raise ConfigError(f"{owner}.max_bad_fraction={value!r}: expected a number in [0, 1]")
    return float(value)


def resolve_inside(root: str | Path, name: Any, where: str, allow_outside_root: bool = False
                   ) -> Path:
    """``root / name`` for a file named in an annotation file, required to stay under ``root``
    (see :func:`require_inside`).

    Raises:
        DataError: ``name`` is not a non-empty string, or its file lies outside ``root``.
    """
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise DataError(f"{where}: file name {_short(name)} must be a non-empty path")
    return require_inside(Path(root) / name, root, where, allow_outside_root, shown=name)


def require_inside(path: str | Path, root: str | Path, where: str,
                   allow_outside_root: bool = False, shown: str | None = None) -> Path:
    """``path`` unchanged if it resolves to a place under ``root``, else :class:`DataError`.

    Both are resolved (symlinks followed, ``..`` collapsed) before the check, so neither
    ``"../../x.png"``, an absolute path nor a symlink pointing out of the folder can make a
    dataset read files elsewhere. ``allow_outside_root=True`` (a recipe opt-out, for lists of
    absolute paths or symlink farms) skips the check. The message names ``where``, the path
    as written (``shown``), where it leads and the root. A path the system cannot even look up
    (a name too long, a NUL byte) is a :class:`DataError` either way.
    """
    path = Path(path)
    try:
        path.exists()  # raises for a name too long or a NUL byte, which is_file() later would
    except (OSError, ValueError) as err:
        raise DataError(f"{where}: cannot access file {_short(shown or str(path))}: "
                        f"{getattr(err, 'strerror', None) or err}") from None
    if allow_outside_root:
        return path
    base = _resolved(str(root))
    try:
        target = path.resolve()
    except (OSError, RuntimeError, ValueError) as err:  # symlink loops, NUL bytes
        raise DataError(
            f"{where}: cannot resolve file {_short(shown or str(path))}: {err}") from err
    if not target.is_relative_to(base):
        raise DataError(
            f"{where}: file {_short(shown or str(path))} resolves to {target}, outside the data "
            f"root {base}; files must stay inside it (set allow_outside_root=True on the "
            "dataset to read files elsewhere)"
        )
    return path


@functools.lru_cache(maxsize=64)
def _resolved(root: str) -> Path:
    return Path(root).resolve()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_text(path: str | Path, what: str = "annotation file", encoding: str = "utf-8") -> str:
    """The text of ``path``; :class:`DataError` naming the file (and the byte offset for
    non-UTF-8 content) when it cannot be read or decoded."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {what} {path}: {err.strerror or err}") from err
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: {what} is not valid UTF-8 (byte {data[err.start]:#04x} at offset "
            f"{err.start}); save it as UTF-8"
        ) from None


def check_image_size(width: Any, height: Any, where: str) -> tuple[int, int]:
    """``(width, height)`` as ints in ``[1, MAX_IMAGE_SIDE]``, else :class:`DataError`."""
    for key, value in (("width", width), ("height", height)):
        if not is_int(value) or not 1 <= value <= MAX_IMAGE_SIDE:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise DataError(
                f"{where}: {key} = {shown}: expected an int in [1, {MAX_IMAGE_SIDE}] px")
    return int(width), int(height)


def check_far_coordinates(xy: np.ndarray, width: float, height: float, where: str) -> None:
    """Raise :class:`DataError` when a finite ``(..., 2)`` (x, y) array has a point more than
    :data:`FAR_FACTOR` image sizes outside the ``width`` x ``height`` image."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if not len(xy):
        return
    if not np.isfinite(xy).all():
        raise DataError(f"{where}: non-finite coordinate")
    lo = -FAR_FACTOR * np.array([width, height])
    hi = (1 + FAR_FACTOR) * np.array([width, height])
    far = ((xy < lo) | (xy > hi)).any(1)
    if far.any():
        x, y = xy[np.flatnonzero(far)[0]]
        raise DataError(
            f"{where}: point ({x:.6g}, {y:.6g}) lies more than {FAR_FACTOR:g} image sizes outside "
            f"the {width:g} x {height:g} image (wrong units or a corrupt value)"
        )


def clip_boxes(boxes: np.ndarray, width: float, height: float, report: DataReport,
               places: Sequence[str], unit: str = "box") -> tuple[np.ndarray, np.ndarray]:
    """Clip ``(N, 4)`` xyxy boxes to ``[0, width] x [0, height]`` and drop those left with no
    area, counting both in ``report`` (reasons ``"outside image"``, ``"zero area"``).

    Boxes must already be checked (finite, ``x2 >= x1``, not far outside: see
    :func:`check_far_coordinates`). ``places[i]`` names box ``i`` for the examples. Returns the
    kept boxes (float64) and their indices into ``boxes``.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    was_empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    moved = (clipped != boxes).any(1)
    for i in np.flatnonzero(empty):
        reason = "zero area" if was_empty[i] else "outside image"
        report.count("dropped", reason, places[i] if i < len(places) else "")
    for i in np.flatnonzero(moved & ~empty):
        report.count("clipped", "outside image", places[i] if i < len(places) else "")
    keep = np.flatnonzero(~empty)
    return clipped[keep], keep.astype(np.int64)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header (PIL; no pixel decoding)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err
    if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
        raise DataError(f"image {path} has an unusable size {width} x {height}")
    return int(height), int(width)


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf|infinity)",
                     re.IGNORECASE | re.ASCII)


def parse_number(text: str) -> float:
    """A decimal number as written in a text annotation file (``12``, ``-0.5``, ``1e3``;
    ``nan``/``inf`` parse so the caller can say "non-finite"). Unlike ``float`` it refuses
    ``1_0``, non-ASCII digits and surrounding junk: raises ``ValueError``."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"not a decimal number: {text[:40]!r}")
    return float(text)


def is_number(value: Any) -> bool:
    """A finite JSON number (int or float, not bool; a huge int that overflows float is not)."""
    return _finite_number(value)
