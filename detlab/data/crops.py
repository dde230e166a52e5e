"""``ObjectCrops``: train on full-resolution crops around objects, mixed with full frames.

Tiny objects on large frames (19x35 px heads on 1920x1080 CCTV) shrink to a few pixels when the
frame is letterboxed to the network size. Cropping a window of the network size out of the
ORIGINAL frame keeps them at full resolution; a share of full frames keeps the model used to
the letterboxed view it sees at validation.

For a crop sample, one object is drawn uniformly among the image's non-ignored objects that fit
in the window, then the window's top-left corner is drawn so that this object lies wholly
inside it and the window inside the frame (``jitter`` scales the offset from the window
centred on the object, 0 = centred, 1 = anywhere the object stays inside). So every crop of an
image with objects holds at least one whole object. Other boxes the window cuts are clipped to
it and kept, or dropped when less than ``min_visibility`` of their area (or fewer than
``min_area`` px²) stays visible; both are counted in ``meta["crop"]``. An image without an
object that fits is given as a full frame (``meta["crop"]["window"] is None``).

A frame smaller than the window along an axis is taken whole along it. The crop then goes
through the wrapped dataset's own pipeline (:meth:`DetectionDataset.make_sample`: letterbox,
recipe transforms, padding, normalization), so with ``size`` equal to the dataset's ``img_size``
the letterbox leaves the crop at scale 1. Like a mosaic, the crop is its own original image:
``orig_size``/``orig_boxes``/``scale``/``pad`` refer to the crop, and ``meta["crop"]["window"]``
``(x0, y0, x1, y1)`` places it in the frame (frame = crop + (x0, y0)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..checks import is_int
from ..errors import ConfigError
from ..registry import DATASETS
from .datasets.detection_base import Annotations
from .wrappers import SampleWrapper

__all__ = ["ObjectCrops", "crop_annotations", "draw_window"]


def draw_window(box: Sequence[float], frame: tuple[int, int], size: tuple[int, int],
                jitter: float, rng: np.random.Generator) -> tuple[int, int, int, int] | None:
    """Integer window ``(x0, y0, x1, y1)`` of ``size`` (h, w) inside ``frame`` (h, w) holding
    ``box`` (xyxy px) whole, or ``None`` when none exists (box larger than the window)."""
    corner = []
    for lo_edge, hi_edge, side, extent in ((box[0], box[2], size[1], frame[1]),
                                           (box[1], box[3], size[0], frame[0])):
        side = min(side, extent)
        lo = max(math.ceil(hi_edge - side), 0)       # window end must reach the box end
        hi = min(math.floor(lo_edge), extent - side)  # window start at or before box start
        if lo > hi:
            return None
        centred = min(max(round((lo_edge + hi_edge - side) / 2), lo), hi)
        target = rng.uniform(lo, hi)
        corner.append((min(max(round(centred + jitter * (target - centred)), lo), hi), side))
    (x0, w), (y0, h) = corner
    return x0, y0, x0 + w, y0 + h


def crop_annotations(ann: Annotations, window: tuple[int, int, int, int],
                     min_visibility: float, min_area: float
                     ) -> tuple[Annotations, int, int]:
    """``ann`` (pixel boxes) inside ``window``: boxes shifted to window coordinates, cut ones
    clipped; a cut box keeping less than ``min_visibility`` of its area or ``min_area`` px²
    is dropped (ignore regions are kept while non-empty). Returns ``(annotations, clipped,
    dropped)``."""
    x0, y0, x1, y1 = window
    boxes = ann.boxes.reshape(-1, 4).astype(np.float32)
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(x0, x1)
    clipped[:, 1::2] = clipped[:, 1::2].clip(y0, y1)
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    visible = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1]).clip(0)
    inside = visible > 0
    cut = inside & (clipped != boxes).any(axis=1)
    sliver = cut & ~ann.ignore & ((visible < min_visibility * area) | (visible < min_area))
    keep = inside & ~sliver
    out = Annotations(
        image_id=ann.image_id, path=ann.path,
        boxes=(clipped[keep] - np.array([x0, y0, x0, y0], np.float32)).astype(np.float32),
        labels=ann.labels[keep], ignore=ann.ignore[keep], size=(y1 - y0, x1 - x0),
        source=ann.source,
    )
    counted = ~ann.ignore
    return out, int((cut & keep & counted).sum()), int((sliver & counted).sum())


@DATASETS.register
class ObjectCrops(SampleWrapper):
    """Wraps a detection dataset: with probability ``ratio`` a sample is a crop of ``size``
    around one of its objects (original pixels), else the full frame (module docstring).

    Args:
        dataset: a detection dataset (CocoDetection, YoloDetection, VocDetection,
            SyntheticHelmets …) or its config dict.
        size: crop side in original px, an int or ``(h, w)``; ``None``: the wrapped dataset's
            ``img_size`` (then the letterbox keeps crops at scale 1).
        ratio: share of crop samples in ``[0, 1]`` (the rest are full frames).
        jitter: ``0``: window centred on the chosen object; ``1``: anywhere the object stays
            whole inside it; in between, scaled towards the centred window.
        min_visibility: a box cut by the window is dropped below this visible fraction.
        min_area: a box cut by the window is dropped below this visible area (px²).
        seed: base seed; ``None``: ``train.seed`` in training (0 elsewhere).

    ``meta["crop"]`` of every sample: ``window`` (x0, y0, x1, y1) in the frame or ``None``
    (full frame), ``clipped`` and ``dropped`` (boxes cut by the window).
    """

    def __init__(self, dataset: Any, size: int | Sequence[int] | None = None,
                 ratio: float = 0.7, jitter: float = 1.0, min_visibility: float = 0.5,
                 min_area: float = 2.0, seed: int | None = None) -> None:
        super().__init__(dataset, seed)
        if self.base is not self.dataset:
            raise ConfigError(
                f"ObjectCrops crops the original frames, so it wraps the detection dataset "
                f"itself, not {type(self.dataset).__name__}; put Mixup/CopyPaste outside it")
        size = self.base.img_size if size is None else size
        if size is None:
            raise ConfigError("ObjectCrops.size=None takes the wrapped dataset's img_size, "
                              "which is None too; set size (px)")
        sizes = (size, size) if is_int(size) else size
        try:
            h, w = (int(v) for v in sizes)
            valid = all(is_int(v) for v in sizes)
        except (TypeError, ValueError):
            valid = False
        if not valid or h < 1 or w < 1:
            raise ConfigError(f"ObjectCrops.size={size!r}: expected a positive int or (h, w)")
        for key, value in (("ratio", ratio), ("jitter", jitter),
                           ("min_visibility", min_visibility)):
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"ObjectCrops.{key}={value!r}: expected a number in [0, 1]")
        if not float(min_area) >= 0:
            raise ConfigError(f"ObjectCrops.min_area={min_area!r}: expected px² >= 0")
        self.size = (h, w)
        self.ratio = float(ratio)
        self.jitter = float(jitter)
        self.min_visibility = float(min_visibility)
        self.min_area = float(min_area)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        if rng.random() >= self.ratio:
            return self._full(index)
        image, ann = self.base.load_raw(index)
        frame = image.shape[:2]
        boxes = ann.boxes.reshape(-1, 4)
        real = ~ann.ignore & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        candidates = rng.permutation(np.flatnonzero(real))
        for obj in candidates:  # first object (in random order) that fits in the window
            window = draw_window(ann.boxes[obj], frame, self.size, self.jitter, rng)
            if window is not None:
                break
        else:
            return self._full(index, image, ann)
        x0, y0, x1, y1 = window
        cropped, clipped, dropped = crop_annotations(ann, window, self.min_visibility,
                                                     self.min_area)
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        info = {"window": window, "clipped": clipped, "dropped": dropped}
        return self.base.make_sample(crop, cropped, extra_meta={"crop": info})

    def _full(self, index: int, image: np.ndarray | None = None,
              ann: Annotations | None = None) -> dict[str, Any]:
        if image is None:
            image, ann = self.base.load_raw(index)
        info = {"window": None, "clipped": 0, "dropped": 0}
        return self.base.make_sample(image, ann, extra_meta={"crop": info})
