"""Synthetic receipts: rendered text lines on paper, with exact word quadrilaterals.

Each image shows a strip of receipt paper (off-white, with an illumination gradient, 0-2 folds
and sensor noise) on a darker table, composed in grey levels and tinted once. Text lines are
rendered with OpenCV's Hershey fonts (six faces, random size, stroke thickness, ink darkness):
item lines with a right-aligned price and plain lines of 1-4 tokens (store words, prices,
dates, codes); about ``_DISTRACTOR_PROBABILITY`` of the lines are rules or barcodes (ink that
is not text, not annotated). Each line is rendered upright on its own canvas, rotated by a
small random angle and pasted under the previous one, so lines never overlap.

Word boxes are exact: each word's ink bounding box on the line canvas (from its pixels, not
from font metrics), grown by ``_WORD_PAD`` px for the bilinear spread of the rotation, is
mapped with the same affine transform as the pixels. About ``ignore_fraction`` of the words are
printed faint (faded thermal print) and marked ``###`` (ignore).

Everything depends only on ``(seed, split, index)``. Rendering takes about 5 / 8 / 16 ms of
one core at 192 / 320 / 512 px (measured on a loaded machine: an upper bound).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import cv2
import numpy as np

from ...errors import ConfigError
from ...registry import DATASETS
from ..db_targets import DBTargetGenerator
from .text_base import IMAGENET_MEAN, IMAGENET_STD, TextDataset, TextSample

__all__ = ["SyntheticReceipts"]

_SPLITS = ("train", "val", "test")
_DEFAULT_NUM_SAMPLES = {"train": 1000, "val": 100, "test": 100}
_FACES = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
          cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL)
# Cap height in pixels of each face at font scale 1 (thickness 1): scale = height / this.
_CAP_HEIGHT = {f: cv2.getTextSize("H", f, 1.0, 1)[0][1] for f in _FACES}
_WORD_PAD = 1.0  # px added around each word's ink box
_DISTRACTOR_PROBABILITY = 0.12  # lines that are rules or barcodes: ink that is not text
_NOISE_STREAM = 0x7E5  # separates the noise bank's random stream from the per-image ones
_VOCAB = (
    "TOTAL SUBTOTAL TAX CASH CHANGE VISA CARD ITEM QTY MILK BREAD EGGS COFFEE TEA APPLE RICE "
    "SUGAR WATER BUTTER CHEESE SOAP PASTA JUICE THANK YOU STORE MARKET TEL DATE TIME RECEIPT "
    "DISCOUNT BALANCE AMOUNT PAID MEMBER POINTS CHICKEN ORANGE BANANA TOMATO ONION SALT"
).split()


@DATASETS.register
class SyntheticReceipts(TextDataset):
    """Deterministic synthetic receipt images with word polygons (no download needed).

    Sample ``i`` depends only on ``(seed, split, i)``; it goes through the shared text
    pipeline (:mod:`~detlab.data.datasets.text_base`): optional augmentation, resize,
    normalization, DB targets. ``meta``: ``image_id`` ``"{split}-{i}"``, ``path``
    ``"synthetic://receipts/{split}/{i}"``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (independent random streams).
        num_samples: images in the split (default 1000 for train, 100 otherwise).
        image_size: side of the square rendered image in pixels.
        seed: base seed.
        text_height: range of cap heights as fractions of ``image_size``.
        max_angle: lines are rotated by up to this many degrees either way.
        ignore_fraction: probability that a word is printed faint and marked ``###``.

    The other arguments are :class:`~detlab.data.datasets.text_base.TextDataset`'s.
    """

    def __init__(
        self,
        split: Literal["train", "val", "test"] = "train",
        num_samples: int | None = None,
        image_size: int = 320,
        seed: int = 0,
        text_height: Sequence[float] = (0.03, 0.06),
        max_angle: float = 4.0,
        ignore_fraction: float = 0.05,
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
        if split not in _SPLITS:
            raise ConfigError(f"SyntheticReceipts: split must be one of {_SPLITS}, got {split!r}")
        num_samples = _DEFAULT_NUM_SAMPLES[split] if num_samples is None else num_samples
        for name, value, low in (("num_samples", num_samples, 1), ("image_size", image_size, 64),
                                 ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"SyntheticReceipts: {name} must be an int >= {low}, got "
                                  f"{value!r}")
        try:
            lo, hi = (float(v) for v in text_height)
        except (TypeError, ValueError):
            lo = hi = float("nan")
        if not 0 < lo <= hi <= 0.25:
            raise ConfigError("SyntheticReceipts: text_height must be (low, high) fractions of "
                              f"image_size with 0 < low <= high <= 0.25, got {text_height!r}")
        if not (isinstance(max_angle, (int, float)) and 0 <= max_angle <= 30):
            raise ConfigError(f"SyntheticReceipts: max_angle must be in [0, 30] degrees, got "
                              f"{max_angle!r}")
        if not (isinstance(ignore_fraction, (int, float)) and 0 <= ignore_fraction <= 1):
            raise ConfigError(f"SyntheticReceipts: ignore_fraction must be in [0, 1], got "
                              f"{ignore_fraction!r}")
        self.split, self.num_samples, self.image_size, self.seed = (
            split, num_samples, image_size, seed)
        self.text_height = (float(lo), float(hi))
        self.max_angle, self.ignore_fraction = float(max_angle), float(ignore_fraction)

    def __len__(self) -> int:
        return self.num_samples

    def load(self, index: int) -> TextSample:
        image, polygons, ignore, _ = self.render(index)
        return TextSample(image, polygons, ignore, f"{self.split}-{index}",
                          f"synthetic://receipts/{self.split}/{index}")

    def render(self, index: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
        """Image ``(S, S, 3)`` float32 in [0, 1], word quads (float32 ``(4, 2)``), ignore flags
        ``(N,)`` and the text's ink coverage ``(S, S)`` float32 in [0, 1] (before blur and
        noise; rules and barcodes excluded)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng((self.seed, _SPLITS.index(self.split), index))
        size = self.image_size
        paper, (x0, x1) = _paper(rng, size)
        ink = np.zeros((size, size), np.float32)  # text only
        clutter = np.zeros((size, size), np.float32)  # rules and barcodes
        polygons: list[np.ndarray] = []
        ignore: list[bool] = []
        margin = rng.uniform(0.03, 0.08) * (x1 - x0)
        left, right = x0 + margin, x1 - margin
        y = rng.uniform(0.0, 0.05) * size
        misses = 0
        while misses < 20:
            height = rng.uniform(*self.text_height) * size
            if rng.random() < _DISTRACTOR_PROBABILITY:
                line, is_text = _render_distractor(rng, height, right - left), False
            else:
                line = _render_line(rng, _line_words(rng), height, right - left,
                                    self.ignore_fraction)
                is_text = True
            if line is None:  # nothing fitted the paper's width
                misses += 1
                continue
            alpha, boxes, faint = line
            angle = math.radians(rng.uniform(-self.max_angle, self.max_angle))
            # Lay out by the rotated ink extent (not the padded canvas): dense, no overlaps.
            bx = np.array(boxes)
            (ix0, iy0), (ix1, iy1) = bx[:, :2].min(axis=0), bx[:, 2:].max(axis=0)
            ink_corners = np.array([[ix0, iy0], [ix1, iy0], [ix1, iy1], [ix0, iy1]])
            rotated = ink_corners @ _rotation(angle, (0.0, 0.0), (0.0, 0.0))[:, :2].T
            (rx0, ry0), (rx1, ry1) = rotated.min(axis=0), rotated.max(axis=0)
            if y + (ry1 - ry0) > size:
                break
            dx = left - rx0 + rng.uniform(0, max(0.0, (right - left) - (rx1 - rx0)))
            matrix = _rotation(angle, (0.0, 0.0), (dx, y - ry0))
            _paste(ink if is_text else clutter, alpha, matrix)
            for (bx0, by0, bx1, by1), f in zip(boxes, faint if is_text else []):
                corners = np.array([[bx0, by0], [bx1, by0], [bx1, by1], [bx0, by1]], np.float64)
                polygons.append((corners @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32))
                ignore.append(f)
            y += (ry1 - ry0) + rng.uniform(0.1, 0.6) * height
        # Grey-level composition, then one RGB tint: 1 channel is 3x less memory traffic.
        ink_level = np.float32(rng.uniform(0.0, 0.25))
        image = ink_level - paper
        image *= np.maximum(ink, clutter)
        image += paper
        if rng.random() < 0.5:  # slight defocus
            image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 0.9))
        image += np.float32(rng.uniform(0.005, 0.03)) * self._noise(rng)
        np.clip(image, 0.0, 1.0, out=image)
        tint = rng.uniform(0.9, 1.0, 3).astype(np.float32)
        return image[..., None] * tint, polygons, np.asarray(ignore, bool), ink

    def _noise(self, rng: np.random.Generator) -> np.ndarray:
        """``(S, S)`` unit Gaussian noise: a random window of a ``(2S, 2S)`` bank drawn once
        per dataset object (drawing S² normals per image would cost more than the rendering)."""
        size = self.image_size
        if getattr(self, "_noise_bank", None) is None:
            bank_rng = np.random.default_rng((self.seed, _SPLITS.index(self.split), _NOISE_STREAM))
            self._noise_bank = bank_rng.standard_normal((2 * size, 2 * size), dtype=np.float32)
        oy, ox = (int(v) for v in rng.integers(0, size, 2))
        return self._noise_bank[oy : oy + size, ox : ox + size]

    def __repr__(self) -> str:
        return (f"SyntheticReceipts(split={self.split!r}, num_samples={self.num_samples}, "
                f"image_size={self.image_size}, seed={self.seed})")


def _paper(rng: np.random.Generator, size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """``(S, S)`` grey background: a paper strip ``[x0, x1)`` on a darker table."""
    # Shading is a sum of a row and a column profile: one broadcast pass over the strip.
    ys = (np.arange(size, dtype=np.float32)[:, None] + 0.5) / size
    xs = (np.arange(size, dtype=np.float32)[None, :] + 0.5) / size
    image = np.full((size, size), rng.uniform(0.15, 0.5), np.float32)
    width = rng.uniform(0.65, 1.0) * size
    x0 = int(round(rng.uniform(0, size - width)))
    x1 = int(round(x0 + width))
    row = 1.0 + rng.uniform(-0.12, 0.12) * (ys - 0.5)
    for _ in range(int(rng.integers(0, 3))):  # folds: a brightness step and a crease line
        y_fold = rng.uniform(0.1, 0.9)
        row = row - rng.uniform(0.02, 0.06) * (ys > y_fold)
        row = row - rng.uniform(0.03, 0.08) * np.exp(-((ys - y_fold) * size / 1.2) ** 2)
    col = rng.uniform(-0.12, 0.12) * (xs[:, x0:x1] - 0.5)
    strip = image[:, x0:x1]
    np.add(row.astype(np.float32), col.astype(np.float32), out=strip)
    strip *= np.float32(rng.uniform(0.82, 1.0))
    return image, (float(x0), float(x1))


def _token(rng: np.random.Generator) -> str:
    kind = rng.random()
    if kind < 0.45:
        word = _VOCAB[int(rng.integers(len(_VOCAB)))]
        return word if rng.random() < 0.6 else word.capitalize()
    if kind < 0.7:
        return f"{rng.uniform(0.1, 300):.2f}"
    if kind < 0.8:
        day, month, year = (int(v) for v in rng.integers((1, 1, 10), (29, 13, 30)))
        return f"{day:02d}/{month:02d}/20{year}"
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    return "".join(letters[int(i)] for i in rng.integers(0, len(letters), rng.integers(2, 9)))


def _line_words(rng: np.random.Generator) -> list[tuple[str, bool]]:
    """Words of one line; the bool marks a word that starts a right-aligned group."""
    kind = rng.random()
    if kind < 0.5:  # item line: name words ... price
        words = [(_token(rng), False) for _ in range(int(rng.integers(1, 4)))]
        return words + [(f"{rng.uniform(0.1, 99):.2f}", True)]
    return [(_token(rng), False) for _ in range(int(rng.integers(1, 5)))]


def _render_line(
    rng: np.random.Generator, words: list[tuple[str, bool]], height: float, max_width: float,
    ignore_fraction: float,
) -> tuple[np.ndarray, list[tuple[float, ...]], list[bool]] | None:
    """Upright line canvas (float32 coverage in [0, 1]), word boxes (x0, y0, x1, y1) in its
    pixels and faint flags; words that do not fit in ``max_width`` are dropped."""
    face = _FACES[int(rng.integers(len(_FACES)))]
    scale = height / _CAP_HEIGHT[face]
    thickness = int(rng.integers(1, max(1, round(height / 10)) + 1))
    gap = rng.uniform(0.4, 1.0) * height  # one to two spaces
    sizes = [cv2.getTextSize(w, face, scale, thickness)[0] for w, _ in words]
    widths = [s[0] for s in sizes]
    pad = int(math.ceil(height * 0.6 + thickness + 2))
    while words and sum(widths) + gap * (len(words) - 1) + 2 * pad > max_width:
        words, widths = words[:-1], widths[:-1]
    if not words:
        return None
    natural = sum(widths) + gap * (len(words) - 1)
    split = next((i for i, (_, right) in enumerate(words) if right), None)
    extra = 0.0
    if split is not None and split > 0:  # push the price to the right edge
        extra = rng.uniform(0.3, 1.0) * (max_width - 2 * pad - natural)
    canvas_w = int(math.ceil(natural + extra)) + 2 * pad
    canvas_h = int(math.ceil(height * 2.0)) + 2 * pad
    alpha = np.zeros((canvas_h, canvas_w), np.float32)
    baseline = pad + int(round(height * 1.2))
    boxes, faint = [], []
    x = float(pad)
    word = np.zeros((canvas_h, canvas_w), np.uint8)  # one word at a time, cleared after use
    for i, ((text, _), width) in enumerate(zip(words, widths)):
        if i == split and i > 0:
            x += extra
        cv2.putText(word, text, (int(round(x)), baseline), face, scale, 255, thickness,
                    cv2.LINE_AA)
        x += width + gap
        bx, by, bw, bh = cv2.boundingRect(word)
        if bw == 0 or bh == 0:
            continue
        is_faint = bool(rng.random() < ignore_fraction)
        strength = rng.uniform(0.2, 0.4) if is_faint else 1.0
        ink = word[by : by + bh, bx : bx + bw]
        region = alpha[by : by + bh, bx : bx + bw]
        np.maximum(region, ink * np.float32(strength / 255.0), out=region)
        ink[:] = 0
        # Pixel centres are at integer coordinates: the ink spans [bx - 0.5, bx + bw - 0.5].
        boxes.append((bx - 0.5 - _WORD_PAD, by - 0.5 - _WORD_PAD,
                      bx + bw - 0.5 + _WORD_PAD, by + bh - 0.5 + _WORD_PAD))
        faint.append(is_faint)
    return (alpha, boxes, faint) if boxes else None


def _render_distractor(
    rng: np.random.Generator, height: float, max_width: float
) -> tuple[np.ndarray, list[tuple[float, ...]], list[bool]]:
    """A solid/dashed rule or a barcode, in the layout of :func:`_render_line` (its one box is
    the ink extent, used for layout only: distractors are not words)."""
    pad = int(math.ceil(height * 0.6 + 2))
    if rng.random() < 0.5:  # rule
        width, tall = rng.uniform(0.4, 1.0) * (max_width - 2 * pad), int(rng.integers(1, 3))
    else:  # barcode
        width = rng.uniform(0.3, 0.6) * (max_width - 2 * pad)
        tall = int(height * rng.uniform(1.5, 3))
    width = max(4, int(width))
    alpha = np.zeros((tall + 2 * pad, width + 2 * pad), np.float32)
    if tall <= 2:
        dash = int(rng.integers(2, 7)) if rng.random() < 0.5 else width
        for x in range(0, width, 2 * dash if dash < width else width):
            alpha[pad : pad + tall, pad + x : pad + min(x + dash, width)] = 1.0
    else:
        bars = rng.random(width) < 0.5
        alpha[pad : pad + tall, pad : pad + width][:, bars] = 1.0
    ys, xs = np.nonzero(alpha)
    if len(xs) == 0:
        alpha[pad, pad] = 1.0
        ys, xs = np.array([pad]), np.array([pad])
    box = (xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5)
    return alpha, [box], [False]


def _rotation(angle: float, center: tuple[float, float], target: tuple[float, float]
              ) -> np.ndarray:
    """2x3 affine: rotate by ``angle`` (radians, counter-clockwise on screen) about
    ``center`` of the source, then move ``center`` to ``target``."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])
    offset = np.asarray(target) - rot @ np.asarray(center)
    return np.concatenate([rot, offset[:, None]], axis=1)


def _paste(ink: np.ndarray, alpha: np.ndarray, matrix: np.ndarray) -> None:
    """Warp ``alpha`` with ``matrix`` into ``ink`` (max-composited), only over its window."""
    h, w = alpha.shape
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64) @ matrix[:, :2].T
    corners += matrix[:, 2]
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, ink.shape[1]), min(y1, ink.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    local = matrix.copy()
    local[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(alpha, local, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    region = ink[y0:y1, x0:x1]
    np.maximum(region, warped, out=region)
