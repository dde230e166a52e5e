"""``MosaicDataset``: four images tiled around a random center (YOLOv4, arXiv:2004.10934).

Each of the four images is resized to fit ``img_size x img_size`` (the letterbox scale, so
objects keep the size they have at validation; this matters for tiny objects), then placed
around a center ``(cx, cy)`` drawn in ``center_range * img_size``: image 0 ends at the center
(top-left), image 1 starts right of it (top-right), image 2 below-left, image 3 below-right.
The output canvas is ``img_size x img_size``; parts falling outside are cut, uncovered area is
gray. Boxes are shifted and clipped to the visible part of their image; a box that is cut is
dropped when its visible area is below ``min_area`` px² or below ``min_visibility`` of the box
(slivers). Uncut boxes are always kept, however tiny.

The mosaic image then goes through the wrapped dataset's own pipeline
(:meth:`DetectionDataset.make_sample`: transforms, padding, normalization). Its ``orig_boxes``
are the mosaic boxes (the mosaic is its own "original"); mosaics are for training only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..registry import DATASETS
from .datasets.detection_base import Annotations, DetectionDataset
from .letterbox import resize_keep_ratio
from .seeding import base_seed

__all__ = ["MosaicDataset"]


@DATASETS.register
class MosaicDataset(Dataset):
    """Wraps a detection dataset; with probability ``p`` a sample is a 4-image mosaic.

    Deterministic: the mosaic decision, partner images and center are drawn from
    ``np.random.default_rng([seed, epoch, index])``; ``seed=None`` (default) takes the run's
    ``train.seed`` (:mod:`detlab.data.seeding`), and the wrapped dataset's transforms are seeded
    per sample in the training loader too. :meth:`set_epoch` changes the draw each epoch and switches mosaic
    off for the last ``close_mosaic_epochs`` of ``max_epochs`` (as YOLOv8 does, so the model
    ends on un-tiled images). The epoch lives in shared memory, so a call in the main process
    reaches DataLoader workers, persistent ones included.

    Args:
        dataset: a :class:`DetectionDataset` or its config (``dict(type="CocoDetection", …)``).
        p: probability that a sample is a mosaic.
        img_size: mosaic side in px; default the wrapped dataset's ``img_size``.
        center_range: center position range as fractions of ``img_size`` (both axes).
        min_area: drop a cut box whose visible area is below this (px²).
        min_visibility: drop a cut box keeping less than this fraction of its area.
        close_mosaic_epochs, max_epochs: no mosaic from epoch ``max_epochs -
            close_mosaic_epochs`` on (needs :meth:`set_epoch` calls each epoch).
        seed: base seed; ``None``: ``train.seed`` in training (0 elsewhere).
    """

    def __init__(
        self,
        dataset: DetectionDataset | dict[str, Any],
        p: float = 1.0,
        img_size: int | None = None,
        center_range: Sequence[float] = (0.25, 0.75),
        min_area: float = 2.0,
        min_visibility: float = 0.25,
        close_mosaic_epochs: int = 0,
        max_epochs: int | None = None,
        seed: int | None = None,
    ) -> None:
        if isinstance(dataset, dict):
            dataset = DATASETS.build(dataset, key="MosaicDataset.dataset")
        if not isinstance(dataset, DetectionDataset):
            raise ConfigError(
                f"MosaicDataset.dataset must be a detection dataset (with load_raw/make_sample), "
                f"got {type(dataset).__name__}"
            )
        img_size = dataset.img_size if img_size is None else img_size
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
            raise ConfigError(
                f"MosaicDataset.img_size={img_size!r}: expected a positive int (the wrapped "
                "dataset has img_size=None, so set it here)"
            )
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"MosaicDataset.p={p!r}: expected a probability in [0, 1]")
        lo, hi = (float(v) for v in center_range)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(
                f"MosaicDataset.center_range={tuple(center_range)!r}: expected 0 <= lo <= hi <= 1"
            )
        if min_area < 0 or not 0.0 <= min_visibility <= 1.0:
            raise ConfigError(
                f"MosaicDataset: min_area={min_area!r} must be >= 0 and "
                f"min_visibility={min_visibility!r} in [0, 1]"
            )
        if close_mosaic_epochs < 0 or (close_mosaic_epochs and max_epochs is None):
            raise ConfigError(
                f"MosaicDataset.close_mosaic_epochs={close_mosaic_epochs!r} needs to be >= 0 and, "
                "when > 0, max_epochs (the run length) set too"
            )
        self.dataset = dataset
        self.p = float(p)
        self.img_size = img_size
        self.center_range = (lo, hi)
        self.min_area = float(min_area)
        self.min_visibility = float(min_visibility)
        self.close_mosaic_epochs = int(close_mosaic_epochs)
        self.max_epochs = max_epochs
        self.seed = None if seed is None else int(seed)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    # -- dataset API ----------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        """The wrapped dataset's class names."""
        return self.dataset.class_names

    def __len__(self) -> int:
        return len(self.dataset)

    def object_areas(self, index: int) -> np.ndarray:
        """Relative object areas of the wrapped dataset's image ``index`` (for samplers)."""
        return self.dataset.object_areas(index)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (changes the mosaics; closes mosaic near the end of training)."""
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        """The epoch set by :meth:`set_epoch` (shared with the loader workers)."""
        return int(self._epoch[0])

    def mosaic_enabled(self) -> bool:
        """False during the last ``close_mosaic_epochs`` epochs."""
        if not self.close_mosaic_epochs or self.max_epochs is None:
            return True
        return self.epoch < self.max_epochs - self.close_mosaic_epochs

    def __getitem__(self, index: int) -> dict[str, Any]:
        seed = base_seed() if self.seed is None else self.seed
        rng = np.random.default_rng([seed, self.epoch, int(index)])
        if not self.mosaic_enabled() or rng.random() >= self.p:
            return self.dataset[index]
        partners = rng.integers(0, len(self.dataset), 3)
        indices = [int(index), *(int(j) for j in partners)]
        lo, hi = self.center_range
        cx = int(round(rng.uniform(lo, hi) * self.img_size))
        cy = int(round(rng.uniform(lo, hi) * self.img_size))
        image, ann = self.build_mosaic(indices, (cy, cx))
        return self.dataset.make_sample(image, ann, extra_meta={"sources": indices})

    def build_mosaic(
        self, indices: Sequence[int], center: tuple[int, int]
    ) -> tuple[np.ndarray, Annotations]:
        """Tile images ``indices`` (4) around ``center`` (cy, cx) px on a square canvas.

        Returns the ``(S, S, 3)`` uint8 canvas and its annotations (pixel boxes on the canvas).
        """
        size = self.img_size
        cy, cx = center
        canvas = np.full((size, size, 3), int(self.dataset.pad_value), np.uint8)
        boxes, labels, ignore = [], [], []
        g = self.dataset.geometry
        # the dataset's own resize is this one: take it (and data.cache) instead of decoding
        same_resize = g.resize == "long_side" and g.img_size == size
        for quadrant, j in enumerate(indices):
            if same_resize:
                raw, img_boxes, _, _, ann = self.dataset.load_resized(j)
            else:
                raw, ann = self.dataset.load_raw(j)
                raw, img_boxes, _ = resize_keep_ratio(raw, ann.boxes, size,
                                                      self.dataset.scale_up)
            h, w = raw.shape[:2]
            # Top-left corner of the image on the canvas, per quadrant.
            x0 = cx - w if quadrant in (0, 2) else cx
            y0 = cy - h if quadrant in (0, 1) else cy
            # Visible part of the image, in canvas coordinates.
            vx0, vy0 = max(x0, 0), max(y0, 0)
            vx1, vy1 = min(x0 + w, size), min(y0 + h, size)
            if vx1 <= vx0 or vy1 <= vy0:
                continue
            canvas[vy0:vy1, vx0:vx1] = raw[vy0 - y0:vy1 - y0, vx0 - x0:vx1 - x0]
            shifted = img_boxes + np.array([x0, y0, x0, y0], np.float32)
            keep, clipped = self._clip(shifted, (vx0, vy0, vx1, vy1))
            boxes.append(clipped[keep])
            labels.append(ann.labels[keep])
            ignore.append(ann.ignore[keep])
        mosaic_ann = Annotations(
            image_id=f"mosaic:{indices[0]}:{self.epoch}",
            path=f"mosaic of {list(indices)}",
            boxes=np.concatenate(boxes or [np.zeros((0, 4), np.float32)]).astype(np.float32),
            labels=np.concatenate(labels or [np.zeros(0, np.int64)]).astype(np.int64),
            ignore=np.concatenate(ignore or [np.zeros(0, bool)]).astype(bool),
            size=(size, size),
            source="MosaicDataset",
        )
        return canvas, mosaic_ann

    def _clip(
        self, boxes: np.ndarray, window: tuple[int, int, int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boolean keep mask and boxes clipped to ``window`` (x0, y0, x1, y1).

        Only boxes that the window cuts are tested against ``min_area``/``min_visibility``: a
        fully visible tiny object is kept whatever its size.
        """
        x0, y0, x1, y1 = window
        clipped = boxes.copy()
        clipped[:, 0::2] = clipped[:, 0::2].clip(x0, x1)
        clipped[:, 1::2] = clipped[:, 1::2].clip(y0, y1)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        cut = (clipped != boxes).any(axis=1)
        sliver = (visible < self.min_area) | (visible < self.min_visibility * area)
        nonempty = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        return nonempty & ~(cut & sliver), clipped
