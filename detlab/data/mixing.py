"""Sample-mixing augmentations for detection training: :class:`Mixup` and :class:`CopyPaste`.

Both wrap a dataset that returns detection samples (a detection dataset, or
:class:`~detlab.data.crops.ObjectCrops` / :class:`~detlab.data.mosaic.MosaicDataset` around
one) and work on its finished samples, so they stack with crops and mosaic::

    data["train"] = dict(type="CopyPaste", p=0.5,
                         dataset=dict(type="Mixup", p=0.1,
                                      dataset=dict(type="ObjectCrops", dataset=train_cfg)))

Every draw (whether to mix, the partner, the ratio, the pasted objects and their positions)
comes from :meth:`~detlab.data.wrappers.SampleWrapper.rng`, so ``train.seed`` fixes it.

Coordinates keep the :class:`~detlab.structures.Batch` contract: the result has the primary
sample's meta (``scale``, ``pad`` …); added boxes are in input pixels and their ``orig_boxes``
are ``(boxes - pad) / scale`` with the primary's numbers, so ``input = orig * scale + pad``
holds for every box (the added objects are placed in the primary's original frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from ..checks import is_int
from ..errors import ConfigError
from ..registry import DATASETS
from .wrappers import SampleWrapper

__all__ = ["Mixup", "CopyPaste", "mix_samples", "to_original"]

_BOX_KEYS = {"boxes", "labels", "ignore", "orig_boxes"}


def to_original(boxes: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
    """``(N, 4)`` input-pixel boxes mapped to the original frame of ``meta``:
    ``(boxes - (left, top)) / (sx, sy)``."""
    sy, sx = (float(v) for v in meta.get("scale", (1.0, 1.0)))
    top, left = (float(v) for v in meta.get("pad", (0.0, 0.0)))
    return (boxes - boxes.new_tensor([left, top, left, top])) / boxes.new_tensor([sx, sy, sx, sy])


def _check_box_target(target: dict[str, Any], owner: str) -> None:
    extra = set(target) - _BOX_KEYS
    if extra:
        raise ConfigError(f"{owner} mixes box targets only; the samples also have "
                          f"{sorted(extra)} (masks/polygons are not mixed)")


def mix_samples(a: dict[str, Any], b: dict[str, Any], ratio: float,
                fill: torch.Tensor) -> dict[str, Any]:
    """YOLO mixup of two samples: ``ratio * a + (1 - ratio) * b`` on a canvas of the larger
    height and width (both images at the top-left, the rest ``fill``, a ``(3,)`` normalized
    gray), boxes of both concatenated; ``a``'s meta (module docstring)."""
    _check_box_target(a["target"], "Mixup")
    _check_box_target(b["target"], "Mixup")
    ia, ib = a["image"], b["image"]
    h, w = max(ia.shape[1], ib.shape[1]), max(ia.shape[2], ib.shape[2])
    canvas_a = fill.view(-1, 1, 1).expand(ia.shape[0], h, w).clone()
    canvas_b = canvas_a.clone()
    canvas_a[:, :ia.shape[1], :ia.shape[2]] = ia
    canvas_b[:, :ib.shape[1], :ib.shape[2]] = ib
    ta, tb = a["target"], b["target"]
    target = {
        "boxes": torch.cat([ta["boxes"], tb["boxes"]]),
        "labels": torch.cat([ta["labels"], tb["labels"]]),
        "ignore": torch.cat([ta["ignore"], tb["ignore"]]),
        "orig_boxes": torch.cat([ta["orig_boxes"], to_original(tb["boxes"], a["meta"])]),
    }
    return {"image": canvas_a * ratio + canvas_b * (1.0 - ratio), "target": target,
            "meta": dict(a["meta"])}


def _normalized_gray(base: Any) -> torch.Tensor:
    return torch.from_numpy((base.pad_value / 255.0 - base.mean) / base.std).float()


@DATASETS.register
class Mixup(SampleWrapper):
    """With probability ``p``, blend a sample with a random other one (YOLO style: ratio drawn
    from ``Beta(alpha, alpha)``, ~0.5 for the default 32; the boxes of both are kept).

    Args:
        dataset: the wrapped dataset or its config (module docstring).
        p: probability that a sample is mixed.
        alpha: parameter of the symmetric Beta distribution of the ratio (> 0).
        seed: base seed; ``None``: ``train.seed`` in training (0 elsewhere).

    ``meta["mixup"]``: ``None``, or ``{"partner": index, "ratio": r}`` (the weight of this
    sample's image).
    """

    def __init__(self, dataset: Any, p: float = 0.15, alpha: float = 32.0,
                 seed: int | None = None) -> None:
        super().__init__(dataset, seed)
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"Mixup.p={p!r}: expected a probability in [0, 1]")
        if not float(alpha) > 0:
            raise ConfigError(f"Mixup.alpha={alpha!r}: expected a number > 0")
        self.p, self.alpha = float(p), float(alpha)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        mix = rng.random() < self.p
        partner = int(rng.integers(len(self.dataset)))
        ratio = float(rng.beta(self.alpha, self.alpha))
        sample = self.dataset[index]
        if not mix:
            return {**sample, "meta": {**sample["meta"], "mixup": None}}
        out = mix_samples(sample, self.dataset[partner], ratio, _normalized_gray(self.base))
        out["meta"]["mixup"] = {"partner": partner, "ratio": ratio}
        return out


@DATASETS.register
class CopyPaste(SampleWrapper):
    """With probability ``p``, paste objects cut from other images into a sample, rare classes
    favoured: an object of class ``c`` is drawn with weight ``count(c) ** -power`` (``power=1``:
    every class equally often, whatever its share of the boxes; ``0``: as often as it occurs).

    A pasted patch is the object's box cut from the original image, resized by the sample's
    ``meta["scale"]`` (the object keeps the size it would have in this sample's frame) and put
    at a random place inside the sample's content (not the padding) where it covers at most
    ``max_occlusion`` of any box already there; after ``tries`` misses it is skipped and
    counted. Its box (with ``ignore=False``) is added to the target.

    Args:
        dataset: the wrapped dataset or its config (module docstring).
        p: probability that a sample gets pasted objects.
        num_objects: ``(low, high)`` objects pasted per sample (uniform), or one int.
        power: exponent of the inverse class frequency (``>= 0``).
        max_occlusion: largest covered fraction of an existing box, in ``[0, 1]``.
        tries: random positions tried per object.
        seed: base seed; ``None``: ``train.seed`` in training (0 elsewhere).

    ``meta["copy_paste"]``: ``None``, or ``{"pasted": [(image index, object index), …],
    "skipped": n}``. :attr:`class_weights` are the per-class draw probabilities.
    """

    def __init__(self, dataset: Any, p: float = 0.5, num_objects: int | Sequence[int] = (1, 3),
                 power: float = 1.0, max_occlusion: float = 0.0, tries: int = 20,
                 seed: int | None = None) -> None:
        super().__init__(dataset, seed)
        pair = (num_objects, num_objects) if is_int(num_objects) else num_objects
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"CopyPaste.p={p!r}: expected a probability in [0, 1]")
        ok = isinstance(pair, Sequence) and len(pair) == 2 and all(is_int(v) for v in pair)
        lo, hi = pair if ok else (0, 0)
        if not (ok and 1 <= lo <= hi):
            raise ConfigError(f"CopyPaste.num_objects={num_objects!r}: expected an int >= 1 "
                              "or (low, high) with 1 <= low <= high")
        if not float(power) >= 0:
            raise ConfigError(f"CopyPaste.power={power!r}: expected a number >= 0")
        if not 0.0 <= float(max_occlusion) <= 1.0:
            raise ConfigError(f"CopyPaste.max_occlusion={max_occlusion!r}: expected [0, 1]")
        if not is_int(tries) or tries < 1:
            raise ConfigError(f"CopyPaste.tries={tries!r}: expected a positive int")
        self.p, self.num_objects = float(p), (lo, hi)
        self.power, self.max_occlusion, self.tries = float(power), float(max_occlusion), tries
        # (image, object, label) of every non-ignored object, from the annotations only.
        rows = []
        for i in range(len(self.base)):
            ann = self.base.annotations(i)
            b = ann.boxes.reshape(-1, 4)
            real = ~ann.ignore & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            rows += [(i, int(k), int(ann.labels[k])) for k in np.flatnonzero(real)]
        if not rows:
            raise ConfigError(f"CopyPaste: {type(self.base).__name__} has no object to paste")
        self.objects = np.asarray(rows, np.int64)
        counts = np.bincount(self.objects[:, 2], minlength=max(self.base.num_classes, 1))
        weights = counts[self.objects[:, 2]].astype(np.float64) ** -self.power
        self.object_probs = weights / weights.sum()
        self.class_weights = np.bincount(self.objects[:, 2], weights=self.object_probs,
                                         minlength=len(counts))

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        paste = rng.random() < self.p
        count = int(rng.integers(self.num_objects[0], self.num_objects[1] + 1))
        picks = rng.choice(len(self.objects), size=count, p=self.object_probs)
        sample = self.dataset[index]
        if not paste:
            return {**sample, "meta": {**sample["meta"], "copy_paste": None}}
        _check_box_target(sample["target"], "CopyPaste")
        return self._paste(sample, [tuple(self.objects[k, :2]) for k in picks], rng)

    def _paste(self, sample: dict[str, Any], picks: list[tuple[int, int]],
               rng: np.random.Generator) -> dict[str, Any]:
        image = sample["image"].clone()
        meta, target = sample["meta"], sample["target"]
        sy, sx = (float(v) for v in meta.get("scale", (1.0, 1.0)))
        top, left = (int(round(float(v))) for v in meta.get("pad", (0, 0)))
        ih, iw = meta.get("input_size", tuple(image.shape[1:]))
        boxes, labels = [target["boxes"].reshape(-1, 4)], [target["labels"]]
        occupied = target["boxes"].reshape(-1, 4).numpy().astype(np.float64)
        pasted, skipped, loaded = [], 0, {}
        for img_index, obj in picks:
            if img_index not in loaded:
                loaded[img_index] = self.base.load_raw(int(img_index))
            raw, ann = loaded[img_index]
            patch, box = _cut_patch(raw, ann.boxes[obj], sy, sx)
            ph, pw = patch.shape[:2]
            spot = _free_spot(rng, (top, left, ih, iw), (ph, pw), box, occupied,
                              self.max_occlusion, self.tries)
            if spot is None:
                skipped += 1
                continue
            py, px = spot
            image[:, py:py + ph, px:px + pw] = self.base.image_tensor(patch)
            placed = box + np.array([px, py, px, py])
            occupied = np.vstack([occupied, placed])
            boxes.append(torch.tensor(placed, dtype=torch.float32).view(1, 4))
            labels.append(torch.tensor([int(ann.labels[obj])], dtype=torch.int64))
            pasted.append((int(img_index), int(obj)))
        new = torch.cat(boxes[1:]) if pasted else torch.zeros(0, 4)
        out_target = {
            "boxes": torch.cat(boxes), "labels": torch.cat(labels),
            "ignore": torch.cat([target["ignore"], torch.zeros(len(pasted), dtype=torch.bool)]),
            "orig_boxes": torch.cat([target["orig_boxes"].reshape(-1, 4),
                                     to_original(new, meta)]),
        }
        info = {"pasted": pasted, "skipped": skipped}
        return {**sample, "image": image, "target": out_target,
                "meta": {**meta, "copy_paste": info}}


def _cut_patch(raw: np.ndarray, box: np.ndarray, sy: float, sx: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """The pixels around ``box`` (xyxy, original px) resized by ``(sy, sx)``, and the box in
    the patch's coordinates."""
    h, w = raw.shape[:2]
    ix1, iy1 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    ix2, iy2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    patch = raw[iy1:iy2, ix1:ix2]
    ph, pw = max(1, int(round((iy2 - iy1) * sy))), max(1, int(round((ix2 - ix1) * sx)))
    fy, fx = ph / (iy2 - iy1), pw / (ix2 - ix1)
    if (ph, pw) != patch.shape[:2]:
        interp = cv2.INTER_AREA if ph * pw < patch.shape[0] * patch.shape[1] else cv2.INTER_LINEAR
        patch = cv2.resize(patch, (pw, ph), interpolation=interp)
    inner = np.array([(max(box[0], 0) - ix1) * fx, (max(box[1], 0) - iy1) * fy,
                      (min(box[2], w) - ix1) * fx, (min(box[3], h) - iy1) * fy])
    return np.ascontiguousarray(patch), inner.clip(0, [pw, ph, pw, ph])


def _free_spot(rng: np.random.Generator, content: tuple[int, int, int, int],
               patch: tuple[int, int], box: np.ndarray, occupied: np.ndarray,
               max_occlusion: float, tries: int) -> tuple[int, int] | None:
    """Top-left ``(y, x)`` of a patch inside ``content`` (top, left, h, w) covering at most
    ``max_occlusion`` of each ``occupied`` box, and whose own box is not covered more."""
    top, left, ih, iw = content
    ph, pw = patch
    if ph > ih or pw > iw:
        return None
    area = (occupied[:, 2] - occupied[:, 0]) * (occupied[:, 3] - occupied[:, 1])
    own = (box[2] - box[0]) * (box[3] - box[1])
    for _ in range(tries):
        y = int(rng.integers(top, top + ih - ph + 1))
        x = int(rng.integers(left, left + iw - pw + 1))
        ix = (np.minimum(occupied[:, 2], x + pw) - np.maximum(occupied[:, 0], x)).clip(0)
        iy = (np.minimum(occupied[:, 3], y + ph) - np.maximum(occupied[:, 1], y)).clip(0)
        inter = ix * iy
        if not len(inter) or ((inter <= max_occlusion * area + 1e-9).all()
                              and (inter <= max_occlusion * max(own, 1e-9) + 1e-9).all()):
            return y, x
    return None
