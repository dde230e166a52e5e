"""Turn dataset samples into a padded :class:`~detlab.structures.Batch`.

Every detlab dataset returns samples of the form::

    {
        "image": Tensor (C, H, W) float32, already normalized,
        "target": dict   # any of boxes (N,4) xyxy px, labels (N,), polygons, ignore (N,), mask
                         # (C, H, W) float tensor, in the same (input) coordinates as "image"
        "meta": dict     # image_id, path, orig_size (h, w), input_size (h, w), scale (sy, sx),
                         # optional pad (top, left)
    }

``collate`` pads images bottom/right with zeros to the largest size in the batch, rounded up to
``size_divisor`` so every backbone stride divides it. Dense targets are padded the same way:
every ``(H, W)`` or ``(C, H, W)`` tensor whose key is ``mask`` or ends with ``_map`` or ``_mask``
(e.g. the DB targets ``prob_map``, ``prob_mask``, ``thresh_map``, ``thresh_mask``), so zero
also means "masked out" in the padding. Keys starting with ``orig_`` (``orig_mask``) are at the
original resolution and are left alone.

Inside a DataLoader worker the targets list is a :class:`PackedTargets`: pickling it (the
worker -> main process queue) concatenates each key's per-image tensors into one tensor, and
unpickling gives back a plain ``list`` of dicts whose tensors are views of those. Every tensor
crosses the process boundary as a shared-memory segment of its own, so a batch of 8 images
with 4 target tensors each cost 33 segments; packed it costs 5 (this was most of a 1-worker
loader's time at 192 px, tools/bench_data.py). A packed tensor of at most
``BY_VALUE_BYTES`` (boxes, labels: a few hundred bytes) travels inside the pickle as a NumPy
array instead: a shared-memory segment costs the worker a ``shm`` file and the main process a
socket round trip to fetch its descriptor, far more than copying a kilobyte.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..structures import Batch

__all__ = ["collate", "Collate", "pad_to", "PackedTargets", "BY_VALUE_BYTES"]

#: a packed target tensor up to this size is pickled by value, not through shared memory
BY_VALUE_BYTES = 1 << 16


def pad_to(t: torch.Tensor, height: int, width: int, value: float = 0.0) -> torch.Tensor:
    """Pad the last two dims of ``t`` at the bottom/right to ``(height, width)``."""
    h, w = t.shape[-2:]
    if h == height and w == width:
        return t
    return F.pad(t, (0, width - w, 0, height - h), value=value)


def _is_dense(key: str, value: Any) -> bool:
    """Whether target ``key`` is a map at input resolution that must be padded with the image."""
    return (
        isinstance(value, torch.Tensor)
        and value.ndim in (2, 3)
        and not key.startswith("orig_")
        and (key == "mask" or key.endswith(("_map", "_mask")))
    )


def collate(samples: list[dict[str, Any]], size_divisor: int = 32) -> Batch:
    """Stack samples into a :class:`Batch`, padding to a multiple of ``size_divisor``."""
    if not samples:
        raise ValueError("collate() got an empty list of samples")
    hs = [s["image"].shape[-2] for s in samples]
    ws = [s["image"].shape[-1] for s in samples]
    height = int(math.ceil(max(hs) / size_divisor) * size_divisor)
    width = int(math.ceil(max(ws) / size_divisor) * size_divisor)
    images = _stack_padded([s["image"] for s in samples], height, width)
    targets = []
    for s in samples:
        target = dict(s.get("target", {}))
        for key, value in target.items():
            if _is_dense(key, value):
                target[key] = pad_to(value, height, width)
        targets.append(target)
    meta = [dict(s.get("meta", {})) for s in samples]
    for m, h, w in zip(meta, hs, ws):
        m.setdefault("input_size", (h, w))
    if torch.utils.data.get_worker_info() is not None:
        targets = PackedTargets(targets)  # few shared-memory segments on the way out
    return Batch(images=images, targets=targets, meta=meta)


def _stack_padded(images: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """``(B, C, height, width)``: each image at the top-left, zeros elsewhere (as ``pad_to`` +
    ``torch.stack``). Written straight into the output, and in a loader worker into shared
    memory, as torch's default collate does: the batch then crosses to the main process without
    the copy pickling would make (a 39 MB copy per batch of 8 at 640 px in float32)."""
    first = images[0]
    if any(im.dtype != first.dtype or im.shape[:-2] != first.shape[:-2] for im in images):
        return torch.stack([pad_to(im, height, width) for im in images])
    shape = (len(images), *first.shape[:-2], height, width)
    if torch.utils.data.get_worker_info() is not None:
        numel = int(torch.Size(shape).numel())
        storage = first._typed_storage()._new_shared(numel, device=first.device)
        out = first.new(storage).resize_(shape)
    else:
        out = first.new_empty(shape)
    for i, im in enumerate(images):
        h, w = im.shape[-2:]
        out[i, ..., :h, :w] = im
        if h < height:
            out[i, ..., h:, :] = 0
        if w < width:
            out[i, ..., :h, w:] = 0
    return out


def _packable(targets: list[dict[str, Any]], key: str) -> bool:
    values = [t[key] for t in targets]
    if not all(isinstance(v, torch.Tensor) and v.ndim >= 1 for v in values):
        return False
    first = values[0]
    return all(v.dtype == first.dtype and v.shape[1:] == first.shape[1:] for v in values)


def _unpack(keys: list[str], flat: list[torch.Tensor | np.ndarray], counts: list[list[int]],
            rest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The plain list of target dicts :class:`PackedTargets` was (views of ``flat``; a NumPy
    array in ``flat`` is a small tensor that was pickled by value)."""
    out = [dict(r) for r in rest]
    for key, tensor, sizes in zip(keys, flat, counts):
        if isinstance(tensor, np.ndarray):
            tensor = torch.from_numpy(tensor)
        for target, part in zip(out, torch.split(tensor, sizes)):
            target[key] = part
    return out


def _by_value(t: torch.Tensor) -> torch.Tensor | np.ndarray:
    """``t`` as a NumPy array (pickled by value) when it is a small CPU tensor NumPy can
    hold, else ``t`` itself (shared memory)."""
    if t.device.type != "cpu" or t.requires_grad or t.numel() * t.element_size() > BY_VALUE_BYTES:
        return t
    try:
        return t.numpy()
    except (TypeError, RuntimeError):  # a dtype NumPy has no type for (bfloat16 …)
        return t


class PackedTargets(list):
    """A batch's ``targets`` list that pickles each key's tensors as one concatenated tensor
    (keys whose tensors share dtype and trailing shape in every image; others as they are) and
    unpickles to a plain ``list`` of dicts in the original key order (module docstring)."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        targets = list(self)
        common = set(targets[0]) if targets else set()
        for t in targets[1:]:
            common &= set(t)
        keys = [k for k in (targets[0] if targets else {}) if k in common
                and _packable(targets, k)]
        flat = [_by_value(torch.cat([t[k] for t in targets])) for k in keys]
        counts = [[int(t[k].shape[0]) for t in targets] for k in keys]
        order = [list(t) for t in targets]
        rest = [{k: (None if k in keys else t[k]) for k in o} for t, o in zip(targets, order)]
        return _unpack, (keys, flat, counts, rest)


class Collate:
    """Picklable ``collate`` with a fixed ``size_divisor`` (DataLoader workers need pickling)."""

    def __init__(self, size_divisor: int = 32) -> None:
        self.size_divisor = size_divisor

    def __call__(self, samples: list[dict[str, Any]]) -> Batch:
        return collate(samples, self.size_divisor)
