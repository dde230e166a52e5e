"""How much a split gives the model to learn: objects and pixels that survive the pipeline.

A dataset can load without an error and still hand the model nothing: DB text words that
shrink below ``min_text_size`` after the resize (every ``prob_map`` empty), boxes that leave the
letterboxed image or are smaller than the model's finest stride, masks without a lesion pixel.
:func:`count_positives` runs the split's real pipeline (``dataset[i]``) on evenly spread samples
and counts, per family:

* **text** (samples with a ``prob_map`` target): ``objects`` = words not marked ``###`` in the
  file (before clipping and resize; :class:`~detlab.data.datasets.text_base.TextDataset`) or in
  the sample; a word is *lost* when it is clipped away or when the DB target generator does not
  draw it (:func:`~detlab.data.db_targets.region_reasons`: ``below_min_text_size``,
  ``shrunk_to_nothing``, ``degenerate``); positive pixels = ``prob_map`` pixels the loss learns
  as text (``prob_map > 0.5`` where ``prob_mask > 0.5``);
* **boxes** (``boxes`` target): ``objects`` = non-ignored, non-empty boxes of the annotation file
  (``dataset.annotations(i)`` when the dataset has it, else the sample's); lost when the letterbox
  or augmentation drops them (``clipped_or_dropped``) or, with ``min_size``, when the shorter
  side at input is below it (``below_min_size``: e.g. the smallest model stride); positive pixels
  = pixels whose centre lies in a kept box (union);
* **masks** (``mask`` target): positive pixels = mask pixels > 0.5 (integer class maps: > 0),
  ``objects`` = 8-connected components per channel (none are "lost": masks are not filtered).

``total_pixels`` is the input area of the sampled images (content region for boxes, the target
map for text and masks) and :attr:`PositiveStats.fraction` = ``positive_pixels / total_pixels``
for every family.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import DataError
from .seeding import global_generators, seeding_sample

__all__ = ["PositiveStats", "UnknownTargets", "count_positives", "sample_indices"]


class UnknownTargets(DataError):
    """A sample has none of the targets :func:`count_positives` can count."""


@dataclass
class PositiveStats:
    """Counts of one split (see the module docstring for what each family counts).

    Attributes:
        split: split name (``"train"``, ``"val"`` …).
        images: images sampled.
        images_with_positives: sampled images with at least one positive pixel.
        objects: words / boxes / mask components in the sampled images' annotations.
        objects_lost: of those, how many the pipeline does not learn from.
        positive_pixels: pixels learnt as positive (text kernels, kept boxes, mask pixels).
        total_pixels: input pixels of the sampled images.
        kind: ``"text"``, ``"boxes"``, ``"masks"`` (or ``""`` for an empty split).
        dataset_size: ``len(dataset)``.
        lost_reasons: ``reason -> count`` of the lost objects, plus ``ignore``: words marked
            ``###`` / boxes flagged ignore, which are not counted in ``objects``.
        median_size_orig, median_size_input: median shorter box side of the objects, px, in
            the file's image and at network input (after resize); NaN when unknown.
        img_size: the dataset's ``img_size`` (None: not resized / unknown).
        min_size: the size limit objects were checked against (``min_text_size`` for text,
            the ``min_size`` argument for boxes), px.
    """

    split: str
    images: int = 0
    images_with_positives: int = 0
    objects: int = 0
    objects_lost: int = 0
    positive_pixels: int = 0
    total_pixels: int = 0
    kind: str = ""
    dataset_size: int = 0
    lost_reasons: dict[str, int] = field(default_factory=dict)
    median_size_orig: float = float("nan")
    median_size_input: float = float("nan")
    img_size: int | None = None
    min_size: float | None = None

    @property
    def fraction(self) -> float:
        """``positive_pixels / total_pixels`` (0.0 for an empty split)."""
        return self.positive_pixels / self.total_pixels if self.total_pixels else 0.0

    @property
    def objects_kept(self) -> int:
        """``objects - objects_lost``."""
        return self.objects - self.objects_lost

    def summary(self) -> str:
        """One line: images, objects kept/lost with reasons, positive pixels, sizes."""
        noun = {"text": "words", "boxes": "boxes", "masks": "mask regions"}.get(self.kind,
                                                                                "objects")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.lost_reasons.items())
                            if v and k != "ignore")
        ignored = self.lost_reasons.get("ignore", 0)
        line = (f"{self.split}: {self.images} images sampled of {self.dataset_size}, "
                f"{self.images_with_positives} with positives; {self.objects} {noun}, "
                f"{self.objects_kept} kept, {self.objects_lost} lost"
                + (f" ({reasons})" if reasons else "")
                + (f", {ignored} marked ignore" if ignored else "")
                + f"; positive pixels {self.positive_pixels} of {self.total_pixels} "
                f"({100.0 * self.fraction:.3g} %)")
        if math.isfinite(self.median_size_input):
            line += (f"; median {_size_noun(self.kind)} {self.median_size_orig:.1f} px in the "
                     f"image -> {self.median_size_input:.1f} px at input")
        return line

    def hint(self) -> str:
        """Which knob to change, with the numbers (empty when the sizes are unknown)."""
        if not math.isfinite(self.median_size_input) or not self.min_size:
            return ""
        orig, inp, limit = self.median_size_orig, self.median_size_input, self.min_size
        resize = f"after resize to {self.img_size}" if self.img_size else "at input"
        knob = "min_text_size" if self.kind == "text" else "min_size (smallest model stride)"
        text = (f"median {_size_noun(self.kind)} {orig:.1f} px in the image -> {inp:.1f} px "
                f"{resize}; {knob}={limit:g}")
        if inp < limit and inp > 0:
            need = math.ceil(self.img_size * limit / inp) if self.img_size else None
            change = [f"img_size >= {need}" if need else "a larger input size (img_size)"]
            if self.kind == "text":
                change.append(f"min_text_size <= {math.floor(inp)}")
            else:
                change.append("a model level with a smaller stride (e.g. P2)")
            text += ": set " + " or ".join(change)
        return text


def _size_noun(kind: str) -> str:
    return "word height" if kind == "text" else "object size (shorter side)"


def sample_indices(n: int, max_samples: int | None) -> list[int]:
    """Evenly spread, deterministic indices: all of ``range(n)``, or ``max_samples`` of them
    from ``round(linspace(0, n - 1, max_samples))``."""
    if max_samples is None or max_samples >= n:
        return list(range(n))
    if max_samples < 1:
        raise DataError(f"max_samples must be >= 1 or None, got {max_samples!r}")
    return sorted({int(i) for i in np.linspace(0, n - 1, max_samples).round()})


def count_positives(dataset: Any, split: str, max_samples: int | None = 200,
                    min_size: float | None = None) -> PositiveStats:
    """Run ``dataset``'s pipeline on up to ``max_samples`` evenly spread images and count what
    survives it (module docstring).

    Args:
        dataset: a detlab dataset (text, box detection or segmentation samples).
        split: name used in the report.
        max_samples: images to sample (None: all).
        min_size: boxes only: objects with a shorter side below this many input px count as
            lost (``below_min_size``), e.g. the model's smallest stride.

    Raises:
        UnknownTargets: (a DataError) a sample has none of the ``prob_map``, ``boxes`` or
            ``mask`` targets.
    """
    n = len(dataset)
    stats = PositiveStats(split=split, dataset_size=n, img_size=_attr(dataset, "img_size"))
    reasons: Counter[str] = Counter()
    orig_sizes: list[float] = []
    input_sizes: list[float] = []
    for index in sample_indices(n, max_samples):
        raw = None
        # Seeded like epoch 0 of training with seed 0: augmented splits give the same counts on
        # every call (check-data, the fit-start check, docs) instead of new random crops.
        with seeding_sample(0, 0, index) as seed, global_generators(seed):
            if callable(getattr(dataset, "load", None)) and callable(getattr(dataset, "prepare",
                                                                             None)):
                raw = dataset.load(index)  # TextDataset: words as in the file, then pipeline
                sample = dataset.prepare(raw)
            else:
                sample = dataset[index]
        target = sample.get("target", {}) if isinstance(sample, dict) else {}
        if "prob_map" in target:
            kind, counts = "text", _text(dataset, raw, sample, reasons, orig_sizes, input_sizes)
            stats.min_size = _attr(getattr(dataset, "targets", None), "min_text_size")
        elif "boxes" in target:
            kind, counts = "boxes", _boxes(dataset, index, sample, min_size, reasons,
                                           orig_sizes, input_sizes)
            stats.min_size = min_size
        elif "mask" in target:
            kind, counts = "masks", _masks(target["mask"])
        else:
            raise UnknownTargets(
                f"count_positives: sample {index} of split {split!r} has none of the targets "
                f"prob_map, boxes, mask (got {sorted(target)})")
        stats.kind = kind
        objects, lost, positive, total = counts
        stats.images += 1
        stats.images_with_positives += int(positive > 0)
        stats.objects += objects
        stats.objects_lost += lost
        stats.positive_pixels += positive
        stats.total_pixels += total
    stats.lost_reasons = dict(reasons)
    if input_sizes:
        stats.median_size_orig = float(np.median(orig_sizes)) if orig_sizes else float("nan")
        stats.median_size_input = float(np.median(input_sizes))
    return stats


def _attr(obj: Any, name: str) -> Any:
    """``obj.name``, looking through wrappers (``.dataset`` chain)."""
    for _ in range(8):
        if obj is None:
            return None
        if hasattr(obj, name):
            return getattr(obj, name)
        obj = getattr(obj, "dataset", None)
    return None


def _short_sides(polygons: Sequence[Any]) -> list[float]:
    out = []
    for p in polygons:
        p = np.asarray(p, dtype=np.float64).reshape(-1, 2)
        if len(p):
            span = p.max(axis=0) - p.min(axis=0)
            out.append(float(span.min()))
    return out


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _text(dataset: Any, raw: Any, sample: dict[str, Any], reasons: Counter[str],
          orig_sizes: list[float], input_sizes: list[float]) -> tuple[int, int, int, int]:
    target = sample["target"]
    polygons = list(target.get("polygons", []))
    ignore = _numpy(target.get("ignore", np.zeros(len(polygons), bool))).astype(bool).reshape(-1)
    prob = _numpy(target["prob_map"]) > 0.5
    if "prob_mask" in target:
        prob &= _numpy(target["prob_mask"]) > 0.5
    in_sample = int((~ignore).sum())
    if raw is not None:
        raw_ignore = np.asarray(raw.ignore, bool).reshape(-1)
        objects = int((~raw_ignore).sum())
        orig_sizes += _short_sides([p for p, f in zip(raw.polygons, raw_ignore) if not f])
        reasons["ignore"] += int(raw_ignore.sum())
    else:
        objects = in_sample
        reasons["ignore"] += int(ignore.sum())
    if objects > in_sample:
        reasons["clipped_away"] += objects - in_sample
    input_sizes += _short_sides([p for p, f in zip(polygons, ignore) if not f])
    generator = getattr(dataset, "targets", None) or _attr(dataset, "targets")
    explain = getattr(generator, "explain", None)
    kept = in_sample
    if callable(explain):
        why = [r for r, f in zip(explain(polygons, ignore), ignore) if not f]
        kept = why.count("kept")
        reasons.update(r for r in why if r != "kept")
    elif in_sample and not prob.any():
        reasons["not_drawn"] += in_sample
        kept = 0
    return objects, objects - kept, int(prob.sum()), int(prob.size)


def _boxes(dataset: Any, index: int, sample: dict[str, Any], min_size: float | None,
           reasons: Counter[str], orig_sizes: list[float], input_sizes: list[float]
           ) -> tuple[int, int, int, int]:
    target, meta = sample["target"], sample.get("meta", {})
    boxes = _numpy(target["boxes"]).astype(np.float64).reshape(-1, 4)
    ignore = _numpy(target.get("ignore", np.zeros(len(boxes), bool))).astype(bool).reshape(-1)
    if len(ignore) != len(boxes):
        ignore = np.zeros(len(boxes), bool)
    reasons["ignore"] += int(ignore.sum())
    boxes = boxes[~ignore]
    wh = boxes[:, 2:] - boxes[:, :2]
    present = (wh > 0).all(axis=1)
    side = wh.min(axis=1) if len(wh) else np.zeros(0)
    small = present & (side < min_size) if min_size else np.zeros(len(boxes), bool)
    kept_boxes = boxes[present & ~small]
    objects = int(present.sum())
    annotations = getattr(dataset, "annotations", None)
    if callable(annotations):
        ann = annotations(index)
        ann_boxes = np.asarray(ann.boxes, np.float64).reshape(-1, 4)[~np.asarray(ann.ignore,
                                                                                 bool)]
        if getattr(ann, "normalized", False) and "orig_size" in meta:
            h, w = meta["orig_size"]
            ann_boxes = ann_boxes * np.array([w, h, w, h], np.float64)
        ann_wh = ann_boxes[:, 2:] - ann_boxes[:, :2]
        ann_ok = (ann_wh > 0).all(axis=1)
        objects = max(int(ann_ok.sum()), objects)
        orig_sizes += [float(v) for v in ann_wh[ann_ok].min(axis=1)] if ann_ok.any() else []
    if objects > int(present.sum()):
        reasons["clipped_or_dropped"] += objects - int(present.sum())
    reasons["below_min_size"] += int(small.sum())
    input_sizes += [float(v) for v in side[present]]
    image = sample.get("image")
    size = meta.get("input_size") or (tuple(image.shape[-2:]) if image is not None else None)
    if size is None:
        raise DataError("count_positives: a box sample needs meta['input_size'] or an image")
    canvas_h, canvas_w = (int(v) for v in (image.shape[-2:] if image is not None else size))
    canvas = np.zeros((canvas_h, canvas_w), bool)
    for x1, y1, x2, y2 in kept_boxes:
        # pixel (row i, col j) is inside when its centre (j + 0.5, i + 0.5) is in the box
        c0, c1 = (max(0, math.ceil(v - 0.5)) for v in (x1, x2))
        r0, r1 = (max(0, math.ceil(v - 0.5)) for v in (y1, y2))
        canvas[r0:r1, c0:c1] = True
    h, w = (int(v) for v in size)
    return objects, objects - len(kept_boxes), int(canvas.sum()), h * w


def _masks(mask: Any) -> tuple[int, int, int, int]:
    arr = _numpy(mask)
    positive = arr > 0.5 if np.issubdtype(arr.dtype, np.floating) else arr > 0
    planes = positive.reshape(-1, *positive.shape[-2:])
    objects = 0
    for plane in planes:
        if plane.any():
            count, _ = cv2.connectedComponents(plane.astype(np.uint8), connectivity=8)
            objects += count - 1  # label 0 is the background
    return objects, 0, int(positive.sum()), int(positive.size)
