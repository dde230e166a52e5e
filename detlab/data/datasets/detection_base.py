"""What every box-detection dataset shares: image reading, letterbox, augmentation, targets.

A detection dataset only parses its annotation format into :class:`Annotations`; this module
turns ``(image, Annotations)`` into detlab's sample dict (see :mod:`detlab.data.collate`)::

    image   float32 (3, H, W), (x / 255 - mean) / std (uint8 (3, H, W) in a training loader
            with ``data.uint8_batches``: :mod:`detlab.data.uint8_batches`)
    target  boxes (N, 4) float32 xyxy px in INPUT coordinates, labels (N,) int64,
            ignore (N,) bool (COCO crowd regions), orig_boxes (N, 4) float32 xyxy px in the
            ORIGINAL image, taken from the annotation file before any augmentation
    meta    image_id, path, orig_size (h, w), input_size (h, w) of the resized image before
            padding, scale (sy, sx), pad (top, left); without geometric augmentation
            input = orig * scale + pad exactly

Pipeline of :meth:`DetectionDataset.make_sample`: resize keeping the ratio to ``img_size``
(the dataset's :class:`~detlab.data.geometry.InputGeometry`, also used by ``detlab predict``
through :meth:`DetectionDataset.input_spec`) → recipe transforms (albumentations, boxes
follow) → pad to a multiple of ``stride`` → normalize. Augmenting before padding keeps gray
bands out of flips and crops, so ``pad`` is the true padding.

``orig_boxes`` are the annotations of the objects that survive augmentation, never moved by it.
The evaluator maps ground truth with them, which is only meaningful where the image is not
geometrically augmented (validation/test). Under geometric augmentation ``meta["scale"]`` and
``meta["pad"]`` describe only the letterbox step; training code must use ``boxes``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import ConfigError, DataError
from ..geometry import LETTERBOX_SHORTHAND, UNSET, InputGeometry, letterbox_geometry
from ..transforms import build_transforms
from ..uint8_batches import raw_pixels_requested

__all__ = [
    "Annotations",
    "DetectionDataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "read_rgb",
    "check_files_exist",
]

# OpenCV >= 4.10 decodes straight to RGB: the same pixels as BGR + cvtColor, without a pass
# over the full-size image (a tenth of a 640x480 PNG's decode).
_IMREAD_RGB: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Annotations:
    """One image's annotations as parsed from a file.

    Attributes:
        image_id: unique, hashable id (COCO id, relative path …).
        path: image file.
        boxes: ``(N, 4)`` xyxy, float32 pixels, or float64 fractions of the image width/height
            when ``normalized`` (YOLO labels; converted once the image size is known).
        labels: ``(N,)`` int64 in ``[0, num_classes)``.
        ignore: ``(N,)`` bool, True for crowd/ignore regions.
        size: ``(h, w)`` the annotation file states, checked against the decoded image.
        source: file the annotations come from, for error messages.
    """

    image_id: Any
    path: str
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    size: tuple[int, int] | None = None
    normalized: bool = False
    source: str = ""

    def relative_areas(self) -> np.ndarray:
        """``(M,)`` box area / image area of the non-ignored, non-empty boxes (no decoding)."""
        boxes = self.boxes[~self.ignore]
        areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
        if not self.normalized:
            if self.size is None:
                raise DataError(
                    f"image {self.image_id!r}: relative areas need the image size in the "
                    "annotations"
                )
            areas = areas / float(self.size[0] * self.size[1])
        return areas[areas > 0].astype(np.float64)


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB (grayscale is repeated, alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    # imdecode from bytes: cv2.imread cannot open non-ASCII paths on every platform.
    data = np.fromfile(str(path), np.uint8)
    image = cv2.imdecode(data, _IMREAD_RGB or cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DataError(f"cannot decode image file {path}")
    return image if _IMREAD_RGB else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_files_exist(paths: Sequence[str | Path], source: str) -> None:
    """Raise :class:`DataError` naming the first missing files (``check_files=True``)."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:5])
        if len(missing) > 5:
            shown += f" … ({len(missing)} in all)"
        raise DataError(f"image file(s) listed in {source} not found: {shown}")


class DetectionDataset(Dataset):
    """Base of box-detection datasets; subclasses implement ``__len__`` and :meth:`annotations`.

    Args:
        transforms: recipe list of albumentations configs, applied to the resized uint8 RGB
            image with its boxes (``build_transforms(task="detection")``). Do not add
            ``Normalize``: the dataset normalizes with ``mean``/``std``.
        geometry: the input geometry, one component shared with ``detlab predict``
            (:meth:`input_spec`): an :class:`~detlab.data.geometry.InputGeometry` or a dict of
            its fields, e.g. ``geometry=dict(img_size=640, stride=32, scale_up=True,
            pad_value=114)``; unset fields take the letterbox defaults (long side
            ``default_img_size``, pad each side to a multiple of 32 with gray 114, centred).
        mean, std: per-channel normalization of ``x / 255``.
        img_size, stride, scale_up, pad_value: documented shorthand for ``geometry``, kept
            for recipes (``data.train.img_size=320``): ``img_size`` is the letterbox long side
            (``None`` keeps the original resolution), ``stride=None`` pads to ``img_size x
            img_size``; giving one of them together with ``geometry`` is a ConfigError
            (:func:`~detlab.data.geometry.letterbox_geometry`).

    Attributes:
        image_cache: an optional :class:`~detlab.data.cache.ImageCache` of the decoded,
            resized, un-augmented images (``data.cache``; set by the data module).
    """

    class_names: list[str] = []
    #: letterbox long side when neither ``geometry`` nor ``img_size`` says (``None``: keep)
    default_img_size: int | None = 640

    def __init__(
        self,
        transforms: Sequence[Any] | None = None,
        geometry: InputGeometry | Mapping[str, Any] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        img_size: Any = UNSET,
        stride: Any = UNSET,
        scale_up: Any = UNSET,
        pad_value: Any = UNSET,
    ) -> None:
        name = type(self).__name__
        geometry = self.input_geometry(geometry, img_size=img_size, stride=stride,
                                       scale_up=scale_up, pad_value=pad_value)
        if not 0 <= float(geometry.pad_value) <= 255:
            raise ConfigError(f"{name}.pad_value={geometry.pad_value!r}: expected a gray level "
                              "in [0, 255]")
        self.mean = _channel_values(mean, "mean", name)
        self.std = _channel_values(std, "std", name)
        if (self.std <= 0).any():
            raise ConfigError(f"{name}.std={tuple(std)!r}: every value must be > 0")
        # The one input geometry of this dataset, shared with `detlab predict` (input_spec);
        # the flat attributes are views of it (samplers, mosaic, multi-scale read them).
        self.geometry = geometry
        self.img_size = geometry.img_size
        self.stride = geometry.stride if geometry.pad == "stride" else None
        self.scale_up = geometry.scale_up
        self.pad_value = float(geometry.pad_value)
        self.transforms = build_transforms(transforms, task="detection",
                                           key=f"{name}.transforms")
        self.image_cache: Any = None

    @classmethod
    def input_geometry(cls, geometry: InputGeometry | Mapping[str, Any] | None = None,
                       **shorthand: Any) -> InputGeometry:
        """The :class:`~detlab.data.geometry.InputGeometry` of ``geometry`` or of the flat
        shorthand (``img_size``, ``stride``, ``scale_up``, ``pad_value``; ``UNSET``: not
        given), with this class's ``default_img_size``."""
        return letterbox_geometry(cls.__name__, geometry, cls.default_img_size, **shorthand)

    # -- what a format implements ---------------------------------------------------------------
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def annotations(self, index: int) -> Annotations:  # pragma: no cover - abstract
        """Parse the annotations of image ``index`` (no image decoding)."""
        raise NotImplementedError

    def load_image(self, ann: Annotations) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB image of ``ann`` (read from ``ann.path``)."""
        return read_rgb(ann.path)

    # -- shared ---------------------------------------------------------------------------------
    @classmethod
    def input_spec_from_config(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """:meth:`input_spec` of a dataset config without reading its files (``predict`` on a
        machine without the training data): its geometry (or shorthand) and normalization,
        the subclass's defaults for what it leaves out."""
        params = inspect.signature(cls.__init__).parameters
        norm = {k: cfg[k] if k in cfg else params[k].default for k in ("mean", "std")
                if k in cfg or (k in params and params[k].default is not inspect.Parameter.empty)}
        geometry = cls.input_geometry(cfg.get("geometry"),
                                      **{k: cfg[k] for k in LETTERBOX_SHORTHAND if k in cfg})
        spec_only = cls.__new__(cls)
        DetectionDataset.__init__(spec_only, None, geometry, **norm)
        return spec_only.input_spec()

    def input_spec(self) -> dict[str, Any]:
        """How a plain image file becomes this dataset's network input: the
        :class:`~detlab.data.datasets.image_files.ImageFiles` arguments (``channels``,
        ``mean``, ``std``, ``geometry``, ``pixels``) that ``detlab predict`` uses."""
        return {"channels": 3, "mean": tuple(float(v) for v in self.mean),
                "std": tuple(float(v) for v in self.std),
                "geometry": self.geometry.to_config(), "pixels": "uint8"}

    @property
    def num_classes(self) -> int:
        """Number of classes (labels are ``0 .. num_classes - 1``)."""
        return len(self.class_names)

    def object_areas(self, index: int) -> np.ndarray:
        """``(M,)`` relative areas (box / image area) of image ``index``'s non-ignored objects,
        from the annotations only (cheap: used by samplers over the whole dataset)."""
        return self.annotations(index).relative_areas()

    def load_raw(self, index: int) -> tuple[np.ndarray, Annotations]:
        """Original ``(H, W, 3)`` uint8 RGB image and its annotations with pixel boxes."""
        ann = self.annotations(index)
        image = self.load_image(ann)
        return image, self.pixel_annotations(ann, image.shape[:2])

    def pixel_annotations(self, ann: Annotations, size: Sequence[int]) -> Annotations:
        """``ann`` checked against the decoded image's ``size`` (h, w), with pixel boxes."""
        h, w = int(size[0]), int(size[1])
        if ann.size is not None and tuple(ann.size) != (h, w):
            raise DataError(
                f"image {ann.path} is {h}x{w} (h x w) but {ann.source or 'its annotations'} "
                f"says {ann.size[0]}x{ann.size[1]}"
            )
        if ann.normalized:
            boxes = ann.boxes.astype(np.float64) * np.array([w, h, w, h], np.float64)
            ann = Annotations(ann.image_id, ann.path, boxes.astype(np.float32), ann.labels,
                              ann.ignore, (h, w), False, ann.source)
        return ann

    def load_resized(self, index: int
                     ) -> tuple[np.ndarray, np.ndarray, tuple[float, float], tuple[int, int],
                                Annotations]:
        """Image ``index`` after the geometry's resize, before augmentation (from
        ``image_cache`` when set): ``(image, boxes in it, scale (sy, sx), original (h, w),
        annotations with pixel boxes in the original image)``."""
        if self.image_cache is not None:
            resized, orig = self.image_cache.get(self, index)
            ann = self.pixel_annotations(self.annotations(index), orig)
            scale = (resized.shape[0] / orig[0], resized.shape[1] / orig[1])
            return resized, self.geometry.scale_boxes(ann.boxes, scale), scale, orig, ann
        image, ann = self.load_raw(index)
        resized, boxes, scale = self.geometry.resize_image(image, ann.boxes)
        return resized, boxes, scale, (int(image.shape[0]), int(image.shape[1])), ann

    def __getitem__(self, index: int) -> dict[str, Any]:
        resized, boxes, scale, orig, ann = self.load_resized(index)
        return self._finish(resized, boxes, scale, orig, ann)

    def make_sample(
        self, image: np.ndarray, ann: Annotations, extra_meta: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Letterbox, augment and normalize ``image`` (H, W, 3) uint8 with pixel-box ``ann``."""
        orig = (int(image.shape[0]), int(image.shape[1]))
        resized, boxes, scale = self.geometry.resize_image(image, ann.boxes)
        return self._finish(resized, boxes, scale, orig, ann, extra_meta)

    def _finish(self, resized: np.ndarray, boxes: np.ndarray, scale: tuple[float, float],
                orig: tuple[int, int], ann: Annotations,
                extra_meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Augment, pad and normalize the resized image with its resized boxes."""
        # Clip to the image and drop empty boxes first: albumentations rejects x2 <= x1.
        boxes, keep = _clip_nonempty(boxes, resized.shape[0], resized.shape[1])
        if self.transforms is not None:
            out = self.transforms(image=resized, bboxes=boxes, labels=keep)
            resized = out["image"]
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
            # Transforms may drop boxes: the label field carries each survivor's row index.
            keep = np.asarray(out["labels"], np.int64).reshape(-1)
        input_h, input_w = resized.shape[:2]
        padded, boxes, pad = self.geometry.pad_image(resized, boxes)
        meta = {
            "image_id": ann.image_id, "path": ann.path, "orig_size": orig,
            "input_size": (input_h, input_w), "scale": scale, "pad": pad,
        }
        meta.update(extra_meta or {})
        return {
            "image": self.image_tensor(padded),
            "target": {
                "boxes": torch.from_numpy(boxes.astype(np.float32)),
                "labels": torch.from_numpy(ann.labels[keep].astype(np.int64)),
                "ignore": torch.from_numpy(ann.ignore[keep].astype(bool)),
                "orig_boxes": torch.from_numpy(ann.boxes[keep].astype(np.float32)),
            },
            "meta": meta,
        }

    def image_tensor(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 → the sample's ``(3, H, W)`` image: normalized (:meth:`normalize`),
        or uint8 channels-first when the training loader normalizes on the device
        (``data.uint8_batches``, :mod:`detlab.data.uint8_batches`)."""
        if raw_pixels_requested() and image.dtype == np.uint8:
            return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return self.normalize(image)

    def normalize(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 (or float in [0, 1]) → ``(3, H, W)`` float32 normalized."""
        # Channels first while still uint8 (a quarter of the bytes to move), then the same
        # float32 operations as (x / 255 - mean) / std, in place: bit-identical, fewer copies.
        chw = np.ascontiguousarray(image.transpose(2, 0, 1))
        arr = chw.astype(np.float32)
        if image.dtype == np.uint8:
            arr /= np.float32(255.0)
        arr -= self.mean[:, None, None]
        arr /= self.std[:, None, None]
        return torch.from_numpy(arr)


def _clip_nonempty(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    boxes = boxes.reshape(-1, 4).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    return boxes[keep], keep.astype(np.int64)


def _channel_values(values: Sequence[float], arg: str, owner: str) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in values], np.float32)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}.{arg}={values!r}: expected 3 numbers (R, G, B)") from None
    if arr.shape != (3,):
        raise ConfigError(f"{owner}.{arg}={tuple(values)!r}: expected 3 numbers (R, G, B)")
    return arr
