"""``SyntheticDigits``: house-number-like digits on cluttered backgrounds (SVHN stand-in)."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from ...errors import ConfigError
from ...registry import DATASETS
from ..geometry import UNSET, InputGeometry
from .detection_base import IMAGENET_MEAN, IMAGENET_STD, Annotations, DetectionDataset
from .synthetic_shapes import _size_pair, sample_rng

__all__ = ["SyntheticDigits", "FONTS"]

# Every Hershey face OpenCV has; italic variants are added with cv2.FONT_ITALIC.
FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
)
_GLYPH_HEIGHT = 48  # px of the cached master glyphs, resized to each digit's size


@functools.lru_cache(maxsize=4096)
def _glyph(digit: int, font: int, thickness: int) -> np.ndarray:
    """Tight bool mask of one digit drawn ~``_GLYPH_HEIGHT`` px tall (cached: pure function)."""
    scale = cv2.getFontScaleFromHeight(font & 0xF, _GLYPH_HEIGHT, thickness)
    (w, h), base = cv2.getTextSize(str(digit), font, scale, thickness)
    pad = thickness + 8
    canvas = np.zeros((h + base + 2 * pad, w + 2 * pad), np.uint8)
    cv2.putText(canvas, str(digit), (pad, pad + h), font, scale, 255, thickness, cv2.LINE_AA)
    ys, xs = np.nonzero(canvas >= 128)
    return canvas[ys.min():ys.max() + 1, xs.min():xs.max() + 1] >= 128


def _contrast_color(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """An RGB colour whose luminance differs from ``background``'s by at least 70."""
    weights = np.array([0.299, 0.587, 0.114])
    bg_lum = float(background @ weights)
    for _ in range(20):
        color = rng.uniform(0, 255, 3)
        if abs(float(color @ weights) - bg_lum) >= 70:
            return color
    return np.full(3, 0.0 if bg_lum > 127 else 255.0)


@DATASETS.register
class SyntheticDigits(DetectionDataset):
    """House numbers: rows of digits 0–9 (label = digit) on plates over a cluttered background.

    Every sample is a pure function of ``(seed, split, index)``. Each image holds 1 ..
    ``max_numbers`` numbers of 1 .. ``max_digits`` digits side by side. A number's digit height
    is drawn log-uniformly in ``digit_height`` px (most digits small, as in SVHN); each digit is
    drawn with ``cv2.putText`` in one of the 8 Hershey faces (upright or italic) at a stroke
    thickness that survives the resize, then stretched so its height/width is its natural
    glyph ratio times ``stretch`` (SVHN digits are tall and narrow: "1" far more than "0").
    Colours are random with a luminance contrast >= 70 between digits and plate; lines and
    rectangles in other colours clutter the background. Digits are pasted with a hard mask and
    each box is the tight pixel-edge box of the pasted pixels (``[x_min, y_min, x_max + 1,
    y_max + 1]``), so boxes are exact. Numbers never overlap.

    Args:
        num_samples: dataset length.
        image_size: original image size, int (square) or ``(h, w)``.
        seed, split: select the random stream (``"train"`` and ``"val"`` differ).
        max_numbers, max_digits: numbers per image and digits per number (>= 1).
        digit_height: ``(min, max)`` digit height in px.
        stretch: ``(min, max)`` extra height/width factor on top of the glyph's own ratio.
        transforms, geometry, mean, std: see
            :class:`~detlab.data.datasets.detection_base.DetectionDataset`.
        img_size, stride, scale_up, pad_value: shorthand for ``geometry`` (same class);
            ``img_size=None`` (the default) keeps ``image_size``.
    """

    default_img_size = None  # keep image_size unless told
    class_names = [str(d) for d in range(10)]

    def __init__(
        self,
        num_samples: int = 512,
        image_size: int | Sequence[int] = 128,
        seed: int = 0,
        split: str = "train",
        transforms: Sequence[Any] | None = None,
        img_size: int | None = UNSET,
        max_numbers: int = 2,
        max_digits: int = 4,
        digit_height: Sequence[float] = (10, 40),
        stretch: Sequence[float] = (1.1, 1.8),
        stride: int | None = UNSET,
        scale_up: bool = UNSET,
        pad_value: float = UNSET,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        geometry: Mapping[str, Any] | InputGeometry | None = None,
    ) -> None:
        super().__init__(transforms, geometry, mean, std, img_size=img_size, stride=stride,
                         scale_up=scale_up, pad_value=pad_value)
        self.height, self.width = _size_pair(image_size)
        for arg, value in (("num_samples", num_samples), ("max_numbers", max_numbers),
                           ("max_digits", max_digits)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SyntheticDigits.{arg}={value!r}: expected an int >= 1")
        self.digit_height = _range("digit_height", digit_height, 6.0)
        self.stretch = _range("stretch", stretch, 0.25)
        if self.digit_height[1] > min(self.height, self.width) - 4:
            raise ConfigError(
                f"SyntheticDigits: digit_height max {self.digit_height[1]} must fit in the image "
                f"(image_size={image_size!r}, 2 px margin)"
            )
        self.num_samples = num_samples
        self.seed = int(seed)
        self.split = str(split)
        self.max_numbers, self.max_digits = max_numbers, max_digits

    def __len__(self) -> int:
        return self.num_samples

    def annotations(self, index: int) -> Annotations:
        digits = [d for number in self._layout(index) for d in number["digits"]]
        boxes = np.asarray([d["box"] for d in digits], np.float32).reshape(-1, 4)
        labels = np.asarray([d["label"] for d in digits], np.int64)
        return Annotations(
            image_id=index, path=f"synthetic-digits://{self.split}/{index}", boxes=boxes,
            labels=labels, ignore=np.zeros(len(labels), bool), size=(self.height, self.width),
            source=f"SyntheticDigits(seed={self.seed}, split={self.split!r})",
        )

    def load_image(self, ann: Annotations) -> np.ndarray:
        index = int(ann.image_id)
        rng = self._rng(index, "pixels")
        h, w = self.height, self.width
        top, bottom = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
        ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        image = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (h, w, 3)).copy()
        for _ in range(int(rng.integers(0, 5))):  # clutter: lines and outlined boxes
            color = tuple(float(c) for c in rng.uniform(0, 255, 3))
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if rng.random() < 0.5:
                cv2.line(image, p1, p2, color, int(rng.integers(1, 4)))
            else:
                cv2.rectangle(image, p1, p2, color, int(rng.integers(1, 3)))
        for number in self._layout(index):
            x0, y0, x1, y1 = number["plate"]
            image[y0:y1, x0:x1] = number["plate_color"]
            for d in number["digits"]:
                y, x = d["origin"]
                mask = d["mask"]
                image[y:y + mask.shape[0], x:x + mask.shape[1]][mask] = number["color"]
        image += rng.normal(0.0, 8.0, image.shape)
        return np.clip(image, 0, 255).astype(np.uint8)

    # -- layout ---------------------------------------------------------------------------------
    def _rng(self, index: int, stream: str) -> np.random.Generator:
        return sample_rng(self, index, stream)

    def _layout(self, index: int) -> list[dict[str, Any]]:
        """Numbers of image ``index``: plate box and colour, digit colour, and per digit its
        label, origin (y, x), bool mask and box (x1, y1, x2, y2)."""
        rng = self._rng(index, "layout")
        wanted = int(rng.integers(1, self.max_numbers + 1))
        numbers: list[dict[str, Any]] = []
        lo, hi = (math.log(v) for v in self.digit_height)
        for _ in range(wanted * 10):  # rejection sampling for non-overlapping plates
            if len(numbers) == wanted:
                break
            height = int(round(math.exp(rng.uniform(lo, hi))))
            font = int(FONTS[rng.integers(len(FONTS))])
            font |= cv2.FONT_ITALIC * int(rng.random() < 0.2)
            # Master-glyph stroke >= ~1.6 px after the resize to `height`, so strokes survive.
            thin = max(1, math.ceil(1.6 * _GLYPH_HEIGHT / height))
            thickness = int(rng.integers(thin, max(thin, _GLYPH_HEIGHT // 6) + 1))
            stretch = rng.uniform(*self.stretch)
            masks = []
            for label in rng.integers(0, 10, int(rng.integers(1, self.max_digits + 1))):
                glyph = _glyph(int(label), font, thickness)
                gw = max(1, int(round(height * glyph.shape[1] / glyph.shape[0] / stretch)))
                coverage = cv2.resize(glyph.astype(np.float32), (gw, height),
                                      interpolation=cv2.INTER_AREA)
                mask = coverage >= 0.5
                if mask.any():
                    masks.append((int(label), mask))
            if not masks:
                continue
            gap = max(1, int(round(height * rng.uniform(0.05, 0.25))))
            row_w = sum(m.shape[1] for _, m in masks) + gap * (len(masks) - 1)
            margin = max(2, height // 5)
            plate_w, plate_h = row_w + 2 * margin, height + 2 * margin
            if plate_w > self.width or plate_h > self.height:
                continue
            px = int(rng.integers(0, self.width - plate_w + 1))
            py = int(rng.integers(0, self.height - plate_h + 1))
            plate = (px, py, px + plate_w, py + plate_h)
            if any(px < q[2] and q[0] < plate[2] and py < q[3] and q[1] < plate[3]
                   for q in (n["plate"] for n in numbers)):
                continue
            plate_color = rng.uniform(0, 255, 3)
            digits, x = [], px + margin
            for label, mask in masks:
                y = py + margin + int(rng.integers(0, max(1, height - mask.shape[0]) + 1) // 2)
                ys, xs = np.nonzero(mask)
                box = (x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1)
                digits.append({"label": label, "origin": (y, x), "mask": mask, "box": box})
                x += mask.shape[1] + gap
            numbers.append({"plate": plate, "plate_color": plate_color,
                            "color": _contrast_color(rng, plate_color), "digits": digits})
        return numbers


def _range(arg: str, value: Sequence[float], low: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"SyntheticDigits.{arg}={value!r}: expected (min, max)") from None
    if not low <= a <= b:
        raise ConfigError(f"SyntheticDigits.{arg}={value!r}: expected {low:g} <= min <= max")
    return a, b
