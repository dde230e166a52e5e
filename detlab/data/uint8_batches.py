"""uint8 image transport for the training loader (``data.uint8_batches``).

A detection dataset normalizes every sample on the loader worker (``(x / 255 - mean) / std``
in float32, :meth:`~detlab.data.datasets.detection_base.DetectionDataset.normalize`) and the
batch crosses to the main process as float32: four bytes a pixel written to shared memory and
one normalization pass per sample on the worker's CPU. With uint8 batches the workers stop at
the padded uint8 image (letterbox gray included), collate pads it with zeros into a
:class:`Uint8Batch` (a quarter of the bytes, the image sizes and ``mean``/``std`` alongside),
and :func:`normalize_batch_images` makes the float batch after it reached the training device
(``DataModule.on_after_batch_transfer``, called by Lightning before ``training_step`` and every
``on_train_batch_*`` callback). Ultralytics' loader does the same (uint8 batches, ``/ 255`` in
the training step).

The normalized batch is today's float batch: the same uint8 pixels through the same float32
operations (``x / 255``, ``- mean``, ``/ std``, per channel), and collate's padding (zeros in
normalized space, not the letterbox gray) set to 0 from each image's size. On the CPU the
values come from a 256-entry table per channel computed with the dataset's own NumPy
operations: bit-identical (tests/data/test_uint8_batches.py). On other devices the three
operations run there with tensor divisors (IEEE division; a GPU run was not checked here).

Only the training loader built by a Lightning trainer yields uint8 batches (there
``on_after_batch_transfer`` runs); validation, test, predict, ``detlab show-data`` and every
loader built outside a trainer keep float batches. Pipelines that compute on normalized pixels
(``Mixup`` blends them, ``data.multi_scale`` interpolates the batch) and non-detection datasets
stay float: :func:`uint8_unsupported` names why.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import DataError
from ..structures import Batch, to_device
from .collate import Collate

__all__ = ["Uint8Batch", "Uint8Collate", "normalize_batch_images", "normalize_images",
           "raw_pixels", "raw_pixels_requested", "uint8_unsupported"]

log = logging.getLogger(__name__)
_RAW: ContextVar[bool] = ContextVar("detlab_raw_pixels", default=False)


@contextlib.contextmanager
def raw_pixels(enabled: bool = True) -> Iterator[None]:
    """Context in which detection datasets return ``(3, H, W)`` uint8 images (not normalized)
    (:class:`~detlab.data.seeding.SeededDataset` with ``uint8=True`` loads samples in it)."""
    token = _RAW.set(bool(enabled))
    try:
        yield
    finally:
        _RAW.reset(token)


def raw_pixels_requested() -> bool:
    """Whether the sample being loaded should keep uint8 pixels (:func:`raw_pixels`)."""
    return _RAW.get()


def normalize_images(images: torch.Tensor, sizes: Sequence[Sequence[int]],
                     mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(B, C, H, W)`` uint8 → float32 ``(x / 255 - mean) / std`` per channel, on the images'
    device; rows/columns beyond image ``i``'s ``sizes[i]`` ``(h, w)`` (collate's padding) are
    0, as :func:`~detlab.data.collate.collate` pads normalized images.

    On the CPU each pixel is looked up in a 256-entry table per channel that holds the result
    of the dataset's own NumPy float32 operations for that value (``cv2.LUT``): bit-identical
    by construction, and twice as fast as converting and computing (torch's uint8 → float32
    conversion alone costs more than the lookup). Elsewhere the same three float32 operations
    run on the device, every divisor a device tensor (CUDA multiplies by the reciprocal of a
    Python-number divisor instead of dividing)."""
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if images.device.type == "cpu":
        return _lookup(images, sizes, _table(mean, std))
    return _arithmetic(images, sizes, mean, std)


def _arithmetic(images: torch.Tensor, sizes: Sequence[Sequence[int]],
                mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """:func:`normalize_images` off the CPU: the float32 operations on the device."""
    out = images.to(torch.float32)
    out.div_(_channel_tensor((255.0,) * out.shape[1], out.device))
    out.sub_(_channel_tensor(mean, out.device))
    out.div_(_channel_tensor(std, out.device))
    height, width = out.shape[-2:]
    for i, (h, w) in enumerate(sizes):
        if h < height:
            out[i, :, h:, :] = 0
        if w < width:
            out[i, :, :h, w:] = 0
    return out


@functools.lru_cache(maxsize=16)
def _table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(C, 256)`` float32: value ``v`` of channel ``c`` normalized with the operations of
    :meth:`~detlab.data.datasets.detection_base.DetectionDataset.normalize`."""
    table = np.repeat(np.arange(256, dtype=np.float32)[None], len(mean), axis=0)
    table /= np.float32(255.0)
    table -= np.asarray(mean, np.float32)[:, None]
    table /= np.asarray(std, np.float32)[:, None]
    return table


def _lookup(images: torch.Tensor, sizes: Sequence[Sequence[int]], table: np.ndarray
            ) -> torch.Tensor:
    """:func:`normalize_images` on the CPU: each image's content through ``table``, zeros
    around it."""
    pixels = np.ascontiguousarray(images.numpy())
    batch, channels, height, width = pixels.shape
    if len(table) != channels:
        raise DataError(f"uint8 batch of {channels} channels, but mean/std give {len(table)}")
    padded = any(h < height or w < width for h, w in sizes)
    out = (np.zeros if padded else np.empty)(pixels.shape, np.float32)
    for i, (h, w) in enumerate(sizes):
        for c in range(channels):
            out[i, c, :h, :w] = cv2.LUT(pixels[i, c, :h, :w], table[c])
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=16)
def _channel_tensor(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """``(1, C, 1, 1)`` float32 ``values`` on ``device``, made once (not a host-to-device copy
    per batch)."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


@dataclass
class Uint8Batch(Batch):
    """A training :class:`~detlab.structures.Batch` whose ``images`` are ``(B, 3, H, W)``
    uint8, zero-padded; :meth:`normalized` is the float batch the model trains on.

    Attributes:
        sizes: ``(h, w)`` of each image before collate padded it (letterbox padding included).
        mean, std: per-channel normalization of ``x / 255`` (the dataset's float32 values).
    """

    sizes: list[tuple[int, int]] = field(default_factory=list)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def to(self, device: torch.device | str) -> Uint8Batch:
        """A copy with every tensor on ``device`` (still uint8: normalize there)."""
        return Uint8Batch(images=self.images.to(device, non_blocking=True),
                          targets=to_device(self.targets, device), meta=self.meta,
                          sizes=self.sizes, mean=self.mean, std=self.std)

    def normalized(self) -> Batch:
        """The plain float32 :class:`~detlab.structures.Batch` (same device)."""
        return Batch(images=normalize_images(self.images, self.sizes, self.mean, self.std),
                     targets=self.targets, meta=self.meta)


def normalize_batch_images(batch: Any) -> Any:
    """``batch.normalized()`` for a :class:`Uint8Batch`, anything else unchanged: the one call
    a consumer of training batches outside Lightning needs."""
    return batch.normalized() if isinstance(batch, Uint8Batch) else batch


class Uint8Collate(Collate):
    """:class:`~detlab.data.collate.Collate` of uint8 samples into a :class:`Uint8Batch`."""

    def __init__(self, size_divisor: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__(size_divisor)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __call__(self, samples: list[dict[str, Any]]) -> Batch:
        if any(s["image"].dtype != torch.uint8 for s in samples):
            return self._float_batch(samples)
        sizes = [(int(s["image"].shape[-2]), int(s["image"].shape[-1])) for s in samples]
        batch = super().__call__(samples)
        return Uint8Batch(images=batch.images, targets=batch.targets, meta=batch.meta,
                          sizes=sizes, mean=self.mean, std=self.std)

    def _float_batch(self, samples: list[dict[str, Any]]) -> Batch:
        """A plain float batch when a sample came out float (a recipe transform that makes
        floats, e.g. ``ToFloat``: the dataset normalized it itself): the uint8 ones are
        normalized here, with the same numbers, and it is logged once per process."""
        global _WARNED
        if not _WARNED:
            _WARNED = True
            log.warning("data.uint8_batches: a training sample has a float image (a transform "
                        "that makes floats?); such batches are normalized on the loader "
                        "workers (same numbers, not the uint8 speed-up)")
        fixed = []
        for s in samples:
            image = s["image"]
            if image.dtype == torch.uint8:
                image = normalize_images(image[None], [tuple(image.shape[-2:])], self.mean,
                                         self.std)[0]
            fixed.append({**s, "image": image})
        return super().__call__(fixed)


_WARNED = False


def uint8_unsupported(dataset: Any, multi_scale: Any = None) -> str | None:
    """Why the training ``dataset`` cannot produce uint8 batches, or ``None`` when it can: a
    chain of ``MosaicDataset`` / ``ObjectCrops`` / ``CopyPaste`` around a detection dataset,
    without ``data.multi_scale``."""
    from .crops import ObjectCrops
    from .datasets.detection_base import DetectionDataset
    from .mixing import CopyPaste, Mixup
    from .mosaic import MosaicDataset

    if multi_scale is not None:
        return "data.multi_scale resizes the normalized batch"
    current = dataset
    for _ in range(8):
        if isinstance(current, DetectionDataset):
            return None
        if isinstance(current, Mixup):
            return "data.train uses Mixup, which blends normalized images"
        if not isinstance(current, (MosaicDataset, ObjectCrops, CopyPaste)):
            break
        current = current.dataset
    return (f"data.train ({type(dataset).__name__}) is not a detection dataset (or "
            "MosaicDataset / ObjectCrops / CopyPaste around one)")
