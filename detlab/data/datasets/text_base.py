"""Shared pipeline of the text detection datasets: image + word polygons -> DB training sample.

A subclass implements :meth:`TextDataset.load` (one :class:`TextSample`: RGB image in [0, 1],
word polygons in its pixels, ``###`` flags) and ``__len__``; :meth:`TextDataset.prepare` does
the rest, in this order:

1. **augmentation** — albumentations (:func:`~detlab.data.transforms.build_transforms` with
   ``task="text"``): every polygon's vertices are flattened into one keypoint list and regrouped
   afterwards, so flips, rotations, perspective and crops move the words with the text;
2. **clipping** — a word that (partly) leaves the image is intersected with the image
   rectangle ``[0, w-1] x [0, h-1]`` (shapely; the largest piece if it splits). It is dropped
   when less than ``min_word_area`` px² is left (nothing to learn or to mask). Thin slivers
   that survive are not learnt as text: the DB target generator masks out words whose box is
   shorter than its ``min_text_size``, so they count neither as text nor as background;
3. **resize** — ``resize="long_side"`` scales the long side to ``img_size`` keeping the aspect
   ratio; ``"fixed"`` stretches to ``img_size`` x ``img_size``; ``img_size=None`` keeps the
   size. The exact per-axis ``scale`` ``(sy, sx)`` is recorded (``input = orig * scale``, no
   offset: ``pad = (0, 0)``); collate pads the batch bottom/right;
4. **normalization** ``(x - mean) / std`` per channel;
5. **DB targets** — :class:`~detlab.data.db_targets.DBTargetGenerator` at input resolution.
   They are computed here, in the data pipeline, not in the head: the loader workers (2 on
   the target machine) compute them in parallel with the training step, and a 1024 px image
   with 100 words takes ~25 ms of one core (``tools/bench_db.py``).

Sample: ``image`` float32 ``(3, H, W)``; ``target``: ``polygons`` list of float32 ``(K, 2)``
(input pixels), ``ignore`` bool ``(N,)``, ``orig_polygons`` (same words in "original" pixels:
the image after augmentation, before resize — for validation sets without augmentation, the
file's pixels), ``prob_map``, ``prob_mask``, ``thresh_map``, ``thresh_mask`` float32 ``(H, W)``;
``meta``: ``image_id``, ``path``, ``orig_size`` (h, w) and ``input_size`` (H, W), ``scale``,
``pad``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import shapely
import torch
from shapely.geometry import Polygon, box
from torch.utils.data import Dataset

from ...errors import ConfigError, DataError
from ..db_targets import DBTargetGenerator
from ..geometry import InputGeometry
from ..transforms import build_transforms

__all__ = [
    "TextSample", "TextDataset", "clip_polygons", "check_points", "IMAGENET_MEAN", "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TextSample:
    """One image and its words before the pipeline.

    Attributes:
        image: ``(H, W, 3)`` float32 RGB in [0, 1].
        polygons: word outlines, float32 ``(K, 2)`` (x, y) pixels, K >= 3.
        ignore: ``(N,)`` bool, True for ``###`` / illegible words.
        image_id: unique id of the image in the dataset.
        path: file path (or ``synthetic://…``) for overlays and reports.
    """

    image: np.ndarray
    polygons: list[np.ndarray]
    ignore: np.ndarray
    image_id: str
    path: str


def clip_polygons(
    polygons: Sequence[np.ndarray], ignore: np.ndarray, height: int, width: int,
    min_word_area: float = 1.0,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Clip words to ``[0, width-1] x [0, height-1]``; drop those left with < ``min_word_area``
    px² (see the module docstring). Words entirely inside are returned unchanged."""
    frame = box(0.0, 0.0, width - 1.0, height - 1.0)
    kept, flags = [], []
    for poly, flag in zip(polygons, ignore):
        p = np.asarray(poly, dtype=np.float64)
        inside = (p[:, 0] >= 0).all() and (p[:, 0] <= width - 1).all() and (
            (p[:, 1] >= 0).all() and (p[:, 1] <= height - 1).all())
        if not inside:
            shape = Polygon(p)
            if not shape.is_valid:
                shape = shapely.make_valid(shape)
            piece = shape.intersection(frame)
            parts = [g for g in getattr(piece, "geoms", [piece]) if isinstance(g, Polygon)]
            if not parts:
                continue
            best = max(parts, key=lambda g: g.area)
            p = np.asarray(best.exterior.coords, dtype=np.float64)[:-1]
        if len(p) < 3 or Polygon(p).area < min_word_area:
            continue
        kept.append(p.astype(np.float32))
        flags.append(bool(flag))
    return kept, np.asarray(flags, dtype=bool)


class TextDataset(Dataset):
    """Base class of the text datasets (pipeline in the module docstring).

    Args:
        transforms: albumentations configs (applied with polygons as keypoints).
        img_size: target size of the resize in pixels, or ``None`` to keep the size.
        resize: ``"long_side"`` (keep aspect ratio) or ``"fixed"`` (square, stretched).
        mean, std: per-channel normalization of the [0, 1] RGB values.
        target_generator: ``DBTargetGenerator`` keyword arguments (``shrink_ratio``,
            ``thresh_min``, ``thresh_max``, ``min_text_size``) or an instance; ``None`` gives
            the DB defaults.
        min_word_area: clipped words with less area than this (px²) are dropped.
    """

    def __init__(
        self,
        transforms: Sequence[Any] | None = None,
        img_size: int | None = None,
        resize: Literal["long_side", "fixed"] = "long_side",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        target_generator: Mapping[str, Any] | DBTargetGenerator | None = None,
        min_word_area: float = 1.0,
    ) -> None:
        name = type(self).__name__
        if img_size is not None and (
            isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 16
        ):
            raise ConfigError(f"{name}: img_size must be None or an int >= 16, got {img_size!r}")
        if resize not in ("long_side", "fixed"):
            raise ConfigError(f"{name}: resize must be 'long_side' or 'fixed', got {resize!r}")
        mean_arr, std_arr = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        if mean_arr.shape != (3,) or std_arr.shape != (3,) or not (std_arr > 0).all():
            raise ConfigError(
                f"{name}: mean and std must be 3 numbers (RGB), std > 0; got mean={mean!r}, "
                f"std={std!r}"
            )
        if not isinstance(min_word_area, (int, float)) or min_word_area < 0:
            raise ConfigError(f"{name}: min_word_area must be >= 0 px², got {min_word_area!r}")
        if target_generator is None:
            target_generator = DBTargetGenerator()
        elif isinstance(target_generator, Mapping):
            try:
                target_generator = DBTargetGenerator(**target_generator)
            except TypeError as err:
                raise ConfigError(f"{name}: target_generator: {err}") from err
        if not callable(target_generator):
            raise ConfigError(f"{name}: target_generator must be a dict of DBTargetGenerator "
                              f"arguments or a callable, got {target_generator!r}")
        self.transform = build_transforms(transforms, task="text", key="transforms")
        self.img_size, self.resize = img_size, resize
        # The one input geometry, shared with `detlab predict` (input_spec); the collate pads.
        self.geometry = InputGeometry(img_size=img_size, resize=resize, pad="none")
        self.mean, self.std = mean_arr, std_arr
        self.targets = target_generator
        self.min_word_area = float(min_word_area)

    def load(self, index: int) -> TextSample:  # pragma: no cover - abstract
        """Image and words of sample ``index`` before the pipeline."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return self.prepare(self.load(index % len(self)))

    # -- pipeline -----------------------------------------------------------------------------
    def prepare(self, sample: TextSample) -> dict[str, Any]:
        """Augment, clip, resize, normalize and build DB targets (module docstring)."""
        image, polygons, ignore = sample.image, list(sample.polygons), sample.ignore
        if self.transform is not None:
            image, polygons = self._augment(image, polygons)
        h, w = image.shape[:2]
        polygons, ignore = clip_polygons(polygons, ignore, h, w, self.min_word_area)
        image, sy, sx = self._resize(image)
        nh, nw = image.shape[:2]
        scaled = [(p * np.array([sx, sy], np.float32)).astype(np.float32) for p in polygons]
        maps = self.targets(scaled, ignore, nh, nw)
        image = (image - self.mean) / self.std
        target = {
            "polygons": scaled,
            "ignore": torch.from_numpy(ignore.copy()),
            "orig_polygons": polygons,
            **{k: torch.from_numpy(v) for k, v in maps.items()},
        }
        meta = {
            "image_id": sample.image_id, "path": sample.path, "orig_size": (h, w),
            "input_size": (nh, nw), "scale": (sy, sx), "pad": (0, 0),
        }
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))
        return {"image": tensor, "target": target, "meta": meta}

    def _augment(self, image: np.ndarray, polygons: list[np.ndarray]
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
        if not polygons:
            out = self.transform(image=image, keypoints=np.zeros((0, 2), np.float32))
            return np.asarray(out["image"], dtype=np.float32), []
        counts = [len(p) for p in polygons]
        points = np.concatenate(polygons).astype(np.float32)
        out = self.transform(image=image, keypoints=points)
        moved = np.asarray(out["keypoints"], dtype=np.float32).reshape(-1, 2)
        if len(moved) != len(points):  # only a transform that drops keypoints can do this
            raise ConfigError(
                f"{type(self).__name__}: the transforms returned {len(moved)} of {len(points)} "
                "polygon vertices; use transforms that keep keypoints (remove_invisible=False)"
            )
        return np.asarray(out["image"], dtype=np.float32), np.split(moved, np.cumsum(counts)[:-1])

    def _resize(self, image: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Resized image and the exact per-axis scale ``(sy, sx)`` (:attr:`geometry`; cv2
        ``INTER_AREA`` when shrinking keeps thin strokes (text) from aliasing away)."""
        image, _, (sy, sx) = self.geometry.resize_image(image)
        return image, sy, sx

    @classmethod
    def input_spec_from_config(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """:meth:`input_spec` of a dataset config without reading its files (``predict`` on a
        machine without the training data): the base's arguments, the subclass's defaults."""
        params = inspect.signature(cls.__init__).parameters
        keys = ("img_size", "resize", "mean", "std")
        args = {k: cfg[k] if k in cfg else params[k].default for k in keys
                if k in cfg or (k in params and params[k].default is not inspect.Parameter.empty)}
        spec_only = cls.__new__(cls)
        TextDataset.__init__(spec_only, None, **args)
        return spec_only.input_spec()

    def input_spec(self) -> dict[str, Any]:
        """How a plain image file becomes this dataset's network input: the
        :class:`~detlab.data.datasets.image_files.ImageFiles` arguments that ``detlab predict``
        uses (RGB read to [0, 1], resized as float, normalized; no padding)."""
        return {"channels": 3, "mean": tuple(float(v) for v in self.mean),
                "std": tuple(float(v) for v in self.std),
                "geometry": self.geometry.to_config(), "pixels": "float"}


def check_points(points: Any, where: str) -> np.ndarray:
    """``points`` as float32 ``(K, 2)`` with K >= 3 finite vertices, else DataError at ``where``.

    A list (parsed JSON) must hold ``[x, y]`` pairs of real numbers: strings and booleans,
    which numpy would silently turn into numbers, are refused."""
    if isinstance(points, (list, tuple)):
        for i, point in enumerate(points):
            if not isinstance(point, (list, tuple)) or not all(
                    isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
                    for v in point):
                shown = repr(point) if len(repr(point)) <= 40 else repr(point)[:37] + "..."
                raise DataError(f"{where}: point {i} = {shown}: expected [x, y] numbers")
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise DataError(f"{where}: points must be numbers [[x, y], ...]: {err}") from err
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 3:
        raise DataError(f"{where}: a word needs >= 3 (x, y) points, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: non-finite coordinates")
    far = np.abs(arr).max(1) > _MAX_COORD
    if far.any():  # float32 would make it inf, and no image is that large
        i = int(np.flatnonzero(far)[0])
        raise DataError(f"{where}: point {i} = ({arr[i, 0]:.6g}, {arr[i, 1]:.6g}) is far outside "
                        f"any image (|coordinate| > {_MAX_COORD:g})")
    return arr.astype(np.float32)


_MAX_COORD = 1e9
