"""Multi-scale training: every batch is resized to a size drawn from a list (YOLOv2,
arXiv:1612.08242 §2 "Multi-Scale Training").

The resize happens on the padded :class:`~detlab.structures.Batch` (one ``F.interpolate`` for
the whole batch), inside the collate function, so it runs in DataLoader workers and needs no
dataset or sampler cooperation; :func:`rescale_batch` is also usable on the GPU (e.g. in a
``on_after_batch_transfer`` hook) where CPU workers are the bottleneck.

Consistency: the padded batch of ``(H, W)`` is resized with one factor ``size / max(H, W)`` to
``(h', w')`` (long side = the drawn size, no aspect distortion), then padded bottom/right to
multiples of ``size_divisor``. With ``fy = h'/H``, ``fx = w'/W`` (the exact pixel-edge factors
of ``align_corners=False``; equal up to rounding) every target and meta entry follows:
``boxes`` and ``polygons`` scale by ``(fx, fy)``, masks are resized with ``nearest-exact``, ``meta["scale"]`` becomes
``(sy * fy, sx * fx)``, ``meta["pad"]`` ``(top * fy, left * fx)`` and ``meta["input_size"]``
the rescaled unpadded size, so ``input = orig * scale + pad`` still holds. ``orig_boxes`` are
original-image coordinates and do not change.

Sizes above the base size (``multi_scale=(1.0, 1.2)`` with ``img_size=1280`` draws up to
1536): upsampling a 1280 tensor to 1536 adds pixels but no detail, which is not what training
at 1536 means for tiny objects. So :func:`train_multi_scale` (the data module's entry point)
makes the training dataset letterbox at the LARGEST size (``InputGeometry.img_size`` of every
dataset in its ``.dataset`` chain, and a ``MosaicDataset`` canvas, set to it) and every batch
is resized DOWN (antialiased) to its drawn size: a 1536 batch is the frame letterboxed at
1536, a 1280 batch that frame shrunk to 1280. Ranges with ``high <= 1`` are unchanged (the
dataset letterboxes at ``img_size``). Validation keeps ``img_size``. Cost: each training sample
is decoded/augmented at the largest size (CPU and worker memory ``(top / img_size)²``), and
the network's activation memory grows with the batch's pixel count, ``(size / img_size)²``
(x1.44 at 1536 over 1280): plan the batch size for the largest size.

Randomness: in the training loader every sample carries ``sample_seed`` (a function of
``train.seed``, epoch and index: :mod:`detlab.data.seeding`) and the size is drawn from the
first sample's, so it does not depend on workers or on a ``--resume``. Without it, ``seed`` gives
a private generator for single-process use (every worker would repeat the same sequence), and
otherwise torch's global generator is used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..structures import Batch
from .collate import collate, pad_to

__all__ = ["MultiScaleCollate", "multi_scale_sizes", "rescale_batch", "train_multi_scale",
           "letterbox_at"]

log = logging.getLogger(__name__)


def multi_scale_sizes(
    img_size: int, scale_range: Sequence[float] = (0.5, 1.5), size_divisor: int = 32
) -> list[int]:
    """Every multiple of ``size_divisor`` in ``[lo * img_size, hi * img_size]``.

    >>> multi_scale_sizes(640, (0.5, 1.5))[:3], multi_scale_sizes(640, (0.5, 1.5))[-1]
    ([320, 352, 384], 960)
    """
    try:
        lo, hi = (float(v) for v in scale_range)
    except (TypeError, ValueError):
        raise ConfigError(f"multi_scale={scale_range!r}: expected (low, high) factors") from None
    if not 0 < lo <= hi:
        raise ConfigError(f"multi_scale={scale_range!r}: expected 0 < low <= high")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise ConfigError(f"multi-scale img_size={img_size!r}: expected a positive int")
    first = max(1, math.ceil(lo * img_size / size_divisor))
    last = math.floor(hi * img_size / size_divisor)
    sizes = [k * size_divisor for k in range(first, last + 1)]
    if not sizes:
        raise ConfigError(
            f"multi_scale={scale_range!r} of img_size={img_size} holds no multiple of "
            f"{size_divisor}"
        )
    return sizes


def rescale_batch(batch: Batch, size: int, size_divisor: int = 32) -> Batch:
    """Resize a padded batch so its long side is ``size`` (see the module docstring).

    Args:
        batch: images ``(B, C, H, W)`` with targets/meta in input coordinates.
        size: new long side in px (rounded to a multiple of ``size_divisor``).
        size_divisor: both sides of the result are multiples of this.

    Returns:
        A new :class:`Batch` (the input is not modified) on the same device.
    """
    h, w = batch.images.shape[-2:]
    factor = size / max(h, w)
    # One factor for both axes (no aspect distortion); the short side is then padded up to a
    # multiple of size_divisor instead of being stretched to one.
    new_h, new_w = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    if (new_h, new_w) == (h, w):
        return batch
    fy, fx = new_h / h, new_w / w
    images = F.interpolate(
        batch.images, size=(new_h, new_w), mode="bilinear", align_corners=False,
        antialias=new_h < h or new_w < w,
    )
    out_h = math.ceil(new_h / size_divisor) * size_divisor
    out_w = math.ceil(new_w / size_divisor) * size_divisor
    images = pad_to(images, out_h, out_w)
    targets = [_rescale_target(t, fy, fx, (new_h, new_w), (out_h, out_w)) for t in batch.targets]
    meta = [_rescale_meta(m, fy, fx) for m in batch.meta]
    return Batch(images=images, targets=targets, meta=meta)


class MultiScaleCollate:
    """Collate, then resize the batch to a random size from ``sizes`` (picklable).

    Args:
        sizes: candidate long sides in px, e.g. ``multi_scale_sizes(640, (0.5, 1.5))``.
        size_divisor: padding and resized sides are multiples of this (largest model stride).
        seed: private generator seed; ``None`` uses torch's (per-worker seeded) generator.
    """

    def __init__(self, sizes: Sequence[int], size_divisor: int = 32,
                 seed: int | None = None) -> None:
        sizes = list(sizes)
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < size_divisor
                            or s % size_divisor for s in sizes):
            raise ConfigError(
                f"MultiScaleCollate.sizes={sizes!r}: expected positive multiples of "
                f"size_divisor={size_divisor}"
            )
        self.sizes = sizes
        self.size_divisor = int(size_divisor)
        self._rng = random.Random(seed) if seed is not None else None

    @classmethod
    def from_range(cls, img_size: int, scale_range: Sequence[float] = (0.5, 1.5),
                   size_divisor: int = 32, seed: int | None = None) -> MultiScaleCollate:
        """Sizes from a recipe range: ``multi_scale=(0.5, 1.5)`` of ``img_size``."""
        return cls(multi_scale_sizes(img_size, scale_range, size_divisor), size_divisor, seed)

    def draw_size(self, sample_seed: int | None = None) -> int:
        """One size from :attr:`sizes`, uniformly (from ``sample_seed`` when given)."""
        if sample_seed is not None:
            rng = np.random.default_rng([int(sample_seed), 2])
            return self.sizes[int(rng.integers(len(self.sizes)))]
        if self._rng is not None:
            return self._rng.choice(self.sizes)
        return self.sizes[int(torch.randint(len(self.sizes), (1,)).item())]

    def __call__(self, samples: list[dict[str, Any]]) -> Batch:
        batch = collate(samples, self.size_divisor)
        seed = samples[0].get("sample_seed") if samples else None
        return rescale_batch(batch, self.draw_size(seed), self.size_divisor)


def letterbox_at(dataset: Any, size: int) -> int:
    """Make ``dataset`` and every dataset in its ``.dataset`` chain produce samples at long
    side ``size``: an :class:`~detlab.data.geometry.InputGeometry` gets ``img_size=size``, a
    plain ``img_size`` attribute (``MosaicDataset``'s canvas) is set; delegating properties
    (sample wrappers) are left alone. Returns how many datasets were changed."""
    from .geometry import InputGeometry

    changed, current = 0, dataset
    for _ in range(8):
        if current is None:
            break
        geometry = getattr(current, "geometry", None)
        if isinstance(geometry, InputGeometry) and geometry.img_size is not None:
            current.geometry = dataclasses.replace(geometry, img_size=int(size))
        own = not isinstance(getattr(type(current), "img_size", None), property)
        if own and isinstance(getattr(current, "img_size", None), int):
            current.img_size = int(size)
            changed += 1
        current = getattr(current, "dataset", None)
    return changed


def train_multi_scale(dataset: Any, scale_range: Sequence[float],
                      size_divisor: int = 32) -> MultiScaleCollate:
    """The training collate of ``data.multi_scale=scale_range`` over ``dataset``'s
    ``img_size``; when the largest size is above it, ``dataset`` is set to letterbox at the
    largest size (:func:`letterbox_at`, module docstring). Idempotent: the base size is
    remembered on the dataset, so calling it again (another ``size_divisor``) starts from
    the recipe's ``img_size``."""
    base = getattr(dataset, "_multi_scale_base", None) or getattr(dataset, "img_size", None)
    if base is None:
        raise ConfigError(
            f"data.multi_scale={scale_range!r} scales the train dataset's img_size, but "
            f"{type(dataset).__name__} has img_size=None; set data.train.img_size")
    collate = MultiScaleCollate.from_range(int(base), scale_range, size_divisor)
    top = max(collate.sizes)
    if top > base or getattr(dataset, "_multi_scale_base", None) is not None:
        if not letterbox_at(dataset, max(top, int(base))):
            log.warning("data.multi_scale: %s exposes no img_size to enlarge; batches above "
                        "%d px are upsampled from it", type(dataset).__name__, base)
        dataset._multi_scale_base = int(base)
    return collate


def _rescale_target(target: dict[str, Any], fy: float, fx: float, new_size: tuple[int, int],
                    out_size: tuple[int, int]) -> dict[str, Any]:
    out = dict(target)
    boxes = target.get("boxes")
    if boxes is not None and len(boxes):
        out["boxes"] = boxes * boxes.new_tensor([fx, fy, fx, fy])
    if target.get("polygons") is not None:
        out["polygons"] = [np.asarray(p, np.float32) * np.array([fx, fy], np.float32)
                           for p in target["polygons"]]
    mask = target.get("mask")
    if isinstance(mask, torch.Tensor):
        dtype = mask.dtype
        m = mask.float()[(None,) * (4 - mask.dim())]
        m = F.interpolate(m, size=new_size, mode="nearest-exact")
        m = pad_to(m, *out_size)
        out["mask"] = m.reshape(*mask.shape[:-2], *out_size).to(dtype)
    return out


def _rescale_meta(meta: dict[str, Any], fy: float, fx: float) -> dict[str, Any]:
    out = dict(meta)
    sy, sx = (float(v) for v in meta.get("scale", (1.0, 1.0)))
    top, left = (float(v) for v in meta.get("pad", (0.0, 0.0)))
    out["scale"] = (sy * fy, sx * fx)
    out["pad"] = (top * fy, left * fx)
    if "input_size" in meta:
        ih, iw = meta["input_size"]
        out["input_size"] = (int(round(ih * fy)), int(round(iw * fx)))
    return out
