"""``SyntheticShapes``: a deterministic box-detection dataset drawn on the fly (tests, demos)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from ...errors import ConfigError
from ...registry import DATASETS
from ..geometry import UNSET, InputGeometry
from .detection_base import IMAGENET_MEAN, IMAGENET_STD, Annotations, DetectionDataset

__all__ = ["SyntheticShapes", "sample_rng"]


def sample_rng(owner: Any, index: int, stream: str) -> np.random.Generator:
    """Random stream of sample ``index`` of a synthetic dataset ``owner`` (which has ``seed``,
    ``split`` and ``num_samples``): a pure function of (seed, split, index, stream), so layout and
    pixels can be drawn independently and any sample re-rendered alone."""
    if not 0 <= index < owner.num_samples:
        raise IndexError(
            f"{type(owner).__name__} index {index} out of range [0, {owner.num_samples})"
        )
    return np.random.default_rng(
        [owner.seed, zlib.crc32(owner.split.encode()), index, zlib.crc32(stream.encode())]
    )

# Saturated colors stand out from the gray background in at least one channel.
_PALETTE = np.array(
    [[230, 40, 40], [40, 200, 40], [50, 80, 240], [240, 220, 30], [220, 40, 220], [30, 220, 230]],
    np.float32,
)


@DATASETS.register
class SyntheticShapes(DetectionDataset):
    """Filled rectangles, ellipses and triangles (labels 0, 1, 2) on a noisy gray background.

    Every sample is a pure function of ``(seed, split, index)``. Object sides are drawn
    log-uniformly in ``[min_size, max_size]`` px, so most objects are small and many tiny, as in
    CCTV helmet data. Objects never overlap (1 px gap), and each box is the tight pixel-edge box
    of the drawn pixels (``[x_min, y_min, x_max + 1, y_max + 1]``), so boxes are exact. Color
    does not depend on the class: only the shape does. Some images have no objects.

    Args:
        num_samples: dataset length.
        image_size: original image size, int (square) or ``(h, w)``.
        seed, split: select the random stream (``"train"`` and ``"val"`` differ).
        max_objects: at most this many objects per image (0 .. max_objects, uniform).
        min_size, max_size: object side range in px (``max_size`` default: short side / 3).
        transforms, geometry, mean, std: see
            :class:`~detlab.data.datasets.detection_base.DetectionDataset`.
        img_size, stride, scale_up, pad_value: shorthand for ``geometry`` (same class);
            ``img_size=None`` (the default) keeps ``image_size``.
    """

    default_img_size = None  # keep image_size unless told
    class_names = ["rectangle", "ellipse", "triangle"]

    def __init__(
        self,
        num_samples: int = 64,
        image_size: int | Sequence[int] = 128,
        seed: int = 0,
        split: str = "train",
        transforms: Sequence[Any] | None = None,
        img_size: int | None = UNSET,
        max_objects: int = 6,
        min_size: int = 4,
        max_size: int | None = None,
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
        max_size = min(self.height, self.width) // 3 if max_size is None else max_size
        for arg, value, low in (("num_samples", num_samples, 1), ("max_objects", max_objects, 0),
                                ("min_size", min_size, 1), ("max_size", max_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"SyntheticShapes.{arg}={value!r}: expected an int >= {low}")
        if not min_size <= max_size <= min(self.height, self.width):
            raise ConfigError(
                f"SyntheticShapes: need min_size <= max_size <= image side, got "
                f"min_size={min_size}, max_size={max_size}, image_size={image_size!r}"
            )
        self.num_samples = num_samples
        self.seed = int(seed)
        self.split = str(split)
        self.max_objects = max_objects
        self.min_size, self.max_size = min_size, max_size

    def __len__(self) -> int:
        return self.num_samples

    def annotations(self, index: int) -> Annotations:
        shapes = self._layout(index)
        boxes = np.asarray([s["box"] for s in shapes], np.float32).reshape(-1, 4)
        labels = np.asarray([s["label"] for s in shapes], np.int64)
        return Annotations(
            image_id=index, path=f"synthetic://{self.split}/{index}", boxes=boxes,
            labels=labels, ignore=np.zeros(len(labels), bool), size=(self.height, self.width),
            source=f"SyntheticShapes(seed={self.seed}, split={self.split!r})",
        )

    def load_image(self, ann: Annotations) -> np.ndarray:
        index = int(ann.image_id)
        rng = self._rng(index, "pixels")
        gray = rng.uniform(70, 180)
        noise = rng.normal(0.0, 12.0, (self.height, self.width, 3))
        image = np.full((self.height, self.width, 3), gray, np.float32) + noise
        for shape in self._layout(index):
            y0, x0 = shape["origin"]
            mask = shape["mask"]
            region = image[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
            region[mask] = shape["color"] + rng.normal(0.0, 6.0, (int(mask.sum()), 3))
        return np.clip(image, 0, 255).astype(np.uint8)

    # -- layout ---------------------------------------------------------------------------------
    def _rng(self, index: int, stream: str) -> np.random.Generator:
        return sample_rng(self, index, stream)

    def _layout(self, index: int) -> list[dict[str, Any]]:
        """Shapes of image ``index``: label, origin (y, x), bool mask patch, color, box."""
        rng = self._rng(index, "layout")
        wanted = int(rng.integers(0, self.max_objects + 1))
        shapes: list[dict[str, Any]] = []
        taken: list[tuple[int, int, int, int]] = []
        log_lo, log_hi = np.log(self.min_size), np.log(self.max_size + 1)
        for _ in range(wanted * 10):  # rejection sampling for non-overlapping placement
            if len(shapes) == wanted:
                break
            h = min(int(np.exp(rng.uniform(log_lo, log_hi))), self.max_size)
            w = int(np.clip(h * np.exp(rng.uniform(-0.5, 0.5)), self.min_size, self.max_size))
            label = int(rng.integers(0, 3))
            color = _PALETTE[rng.integers(0, len(_PALETTE))] * rng.uniform(0.8, 1.0)
            y0 = int(rng.integers(0, self.height - h + 1))
            x0 = int(rng.integers(0, self.width - w + 1))
            if any(x0 <= bx1 and bx0 <= x0 + w and y0 <= by1 and by0 <= y0 + h
                   for bx0, by0, bx1, by1 in taken):  # boxes expanded by a 1 px gap
                continue
            mask = _draw(label, h, w, rng)
            ys, xs = np.nonzero(mask)
            if len(ys) == 0:
                continue
            taken.append((x0, y0, x0 + w, y0 + h))
            box = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
            shapes.append({"label": label, "origin": (y0, x0), "mask": mask,
                           "color": color.astype(np.float32), "box": box})
        return shapes


def _draw(label: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Bool ``(h, w)`` mask of one shape filling its patch (0 rectangle, 1 ellipse, 2 triangle)."""
    canvas = np.zeros((h, w), np.uint8)
    if label == 0:
        canvas[:] = 1
    elif label == 1:
        shift = 4  # sub-pixel center/axes so even-sized ellipses stay centered
        center = (int((w - 1) / 2 * 16), int((h - 1) / 2 * 16))
        axes = (int((w - 1) / 2 * 16), int((h - 1) / 2 * 16))
        cv2.ellipse(canvas, center, axes, 0, 0, 360, 1, thickness=-1, shift=shift)
    else:
        apex = int(rng.integers(0, w))
        pts = np.array([[apex, 0], [0, h - 1], [w - 1, h - 1]], np.int32)
        cv2.fillPoly(canvas, [pts], 1)
    return canvas.astype(bool)


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        pair = (size, size)
    else:
        try:
            pair = tuple(int(v) for v in size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ConfigError(f"SyntheticShapes.image_size={size!r}: expected int or (h, w)") \
                from None
    if len(pair) != 2 or min(pair) < 8:
        raise ConfigError(f"SyntheticShapes.image_size={size!r}: expected int or (h, w) >= 8")
    return pair[0], pair[1]
