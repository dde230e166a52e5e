"""Samplers for detection training: oversample images that contain tiny objects
(:class:`TinyObjectOversampler`), rare classes (:class:`ClassAwareSampler`), or both
(:class:`SizeClassSampler`).

Each draws ``num_samples`` image indices per epoch with probability proportional to a
per-image weight, from a generator seeded by ``seed + epoch`` (the data module passes
``train.seed``), and reports what it expects (:meth:`ClassAwareSampler.expected_box_fraction`),
so a recipe can state "helmet_off goes from 8 % to ~35 % of the boxes seen".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import ConfigError
from ..registry import SAMPLERS

__all__ = ["TinyObjectOversampler", "ClassAwareSampler", "SizeClassSampler",
           "tiny_object_mask", "image_class_counts", "class_image_weights"]


def tiny_object_mask(dataset: Any, area_threshold: float = 0.001) -> np.ndarray:
    """``(len(dataset),)`` bool: image has an object with box area / image area below
    ``area_threshold``. Uses ``dataset.object_areas(i)`` (annotations only, no decoding)."""
    if not hasattr(dataset, "object_areas"):
        raise ConfigError(
            f"{type(dataset).__name__} has no object_areas(i) method, which tiny-object "
            "sampling needs (detlab detection datasets provide it)"
        )
    return np.array(
        [bool((np.asarray(dataset.object_areas(i)) < area_threshold).any())
         for i in range(len(dataset))],
        dtype=bool,
    )


@SAMPLERS.register
class TinyObjectOversampler(Sampler[int]):
    """Draw images with tiny objects ``weight`` times as often as the others.

    An image is "tiny" when one of its (non-ignored) objects covers less than
    ``area_threshold`` of the image area (0.1 % = the evaluator's ``AP_rel_tiny`` bucket).
    Indices are drawn with probability proportional to ``weight`` (tiny) or 1 (other), from a
    generator seeded by ``seed + epoch``; :meth:`set_epoch` (called by Lightning each epoch)
    gives a new draw per epoch and the same draw on every DDP rank.

    Args:
        dataset: a dataset with ``object_areas(i)`` (given by the data module).
        weight: sampling weight of a tiny image relative to 1 for the others (>= 0).
        area_threshold: relative area below which an object is tiny, in (0, 1].
        num_samples: indices per epoch (default ``len(dataset)``).
        replacement: draw with replacement (without, each image at most once per epoch and
            the weights only change the order).
        seed: base seed.
    """

    def __init__(
        self,
        dataset: Any,
        weight: float = 4.0,
        area_threshold: float = 0.001,
        num_samples: int | None = None,
        replacement: bool = True,
        seed: int = 0,
    ) -> None:
        if not float(weight) >= 0:
            raise ConfigError(f"TinyObjectOversampler.weight={weight!r}: expected a number >= 0")
        if not 0 < float(area_threshold) <= 1:
            raise ConfigError(
                f"TinyObjectOversampler.area_threshold={area_threshold!r}: expected a fraction "
                "of the image area in (0, 1]"
            )
        self.is_tiny = tiny_object_mask(dataset, float(area_threshold))
        n = len(self.is_tiny)
        if n == 0:
            raise ConfigError("TinyObjectOversampler got an empty dataset")
        self.num_samples = n if num_samples is None else int(num_samples)
        if self.num_samples < 1 or (not replacement and self.num_samples > n):
            raise ConfigError(
                f"TinyObjectOversampler.num_samples={num_samples!r}: expected >= 1 (and <= "
                f"{n} without replacement)"
            )
        self.weights = torch.where(torch.from_numpy(self.is_tiny), float(weight), 1.0).double()
        if self.weights.sum() <= 0:
            raise ConfigError(
                "TinyObjectOversampler: weight=0 and every image has tiny objects; nothing "
                "to sample"
            )
        self.replacement = bool(replacement)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's draw."""
        self.epoch = int(epoch)

    @property
    def tiny_fraction(self) -> float:
        """Fraction of images with at least one tiny object."""
        return float(self.is_tiny.mean())

    def expected_tiny_fraction(self) -> float:
        """Expected fraction of drawn indices that are tiny images (with replacement)."""
        w = self.weights.numpy()
        return float(w[self.is_tiny].sum() / w.sum())

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        weights = self.weights
        if not self.replacement:
            # Without replacement a zero weight cannot be drawn; keep those images last.
            weights = weights.clamp_min(1e-12)
        drawn = torch.multinomial(weights, self.num_samples, self.replacement,
                                  generator=generator)
        return iter(drawn.tolist())


def _annotated(dataset: Any) -> Any:
    """``dataset`` or the first dataset it wraps (``.dataset`` chain) with ``annotations(i)``."""
    current = dataset
    for _ in range(8):
        if current is None:
            break
        if callable(getattr(current, "annotations", None)):
            return current
        inner = getattr(current, "dataset", None)
        # only wrappers that keep the indices (same length): a Subset's image i is not its
        # dataset's image i
        if inner is not None and len(inner) != len(current):
            break
        current = inner
    raise ConfigError(
        f"{type(dataset).__name__} has no annotations(i) method, which class-aware sampling "
        "needs (detlab detection datasets and their wrappers provide it)"
    )


def image_class_counts(dataset: Any, num_classes: int | None = None) -> np.ndarray:
    """``(len(dataset), C)`` int64: non-ignored boxes of each class per image, from
    ``dataset.annotations(i)`` (no image decoding). ``C`` defaults to ``len(class_names)``
    (at least the largest label + 1)."""
    source = _annotated(dataset)
    labels = []
    for i in range(len(dataset)):
        ann = source.annotations(i)
        labels.append(np.asarray(ann.labels, np.int64)[~np.asarray(ann.ignore, bool)])
    found = max((int(lab.max()) + 1 for lab in labels if len(lab)), default=0)
    named = len(getattr(dataset, "class_names", None) or [])
    c = max(found, named if num_classes is None else int(num_classes), 1)
    return np.stack([np.bincount(lab, minlength=c) for lab in labels]) if labels else \
        np.zeros((0, c), np.int64)


def class_image_weights(counts: np.ndarray, power: float = 1.0, empty_weight: float = 1.0,
                        reduce: str = "max") -> tuple[np.ndarray, np.ndarray]:
    """Per-class and per-image weights from ``counts`` (images x classes).

    Class ``c`` gets ``w_c = (n_max / n_c) ** power`` (``n_c`` its boxes in the dataset,
    ``n_max`` the most frequent class's: that class has weight 1; a class without boxes 0).
    An image gets the largest (``reduce="max"``, LVIS repeat-factor style: one rare object is
    enough) or the box-weighted mean (``"mean"``) of the weights of the classes it holds, and
    ``empty_weight`` when it holds none. Returns ``(class_weights (C,), image_weights (N,))``.
    """
    if reduce not in ("max", "mean"):
        raise ConfigError(f"class-aware sampler reduce={reduce!r}: expected 'max' or 'mean'")
    totals = counts.sum(axis=0).astype(np.float64)
    present = totals > 0
    class_w = np.zeros_like(totals)
    class_w[present] = (totals.max() / totals[present]) ** float(power)
    has = counts > 0
    if reduce == "max":
        image_w = np.where(has, class_w[None, :], 0.0).max(axis=1, initial=0.0)
    else:
        n = counts.sum(axis=1)
        image_w = (counts * class_w[None, :]).sum(axis=1) / np.maximum(n, 1)
    image_w = np.where(has.any(axis=1), image_w, float(empty_weight))
    return class_w, image_w


class _WeightedImages(Sampler[int]):
    """Draws indices with probability proportional to ``weights`` (seed + epoch)."""

    def _setup(self, weights: np.ndarray, num_samples: int | None, replacement: bool,
               seed: int) -> None:
        name = type(self).__name__
        n = len(weights)
        if n == 0:
            raise ConfigError(f"{name} got an empty dataset")
        self.num_samples = n if num_samples is None else int(num_samples)
        if self.num_samples < 1 or (not replacement and self.num_samples > n):
            raise ConfigError(f"{name}.num_samples={num_samples!r}: expected >= 1 (and <= {n} "
                              "without replacement)")
        if not weights.sum() > 0:
            raise ConfigError(f"{name}: every image has weight 0; nothing to sample")
        self.weights = torch.from_numpy(np.asarray(weights, np.float64))
        self.replacement = bool(replacement)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's draw."""
        self.epoch = int(epoch)

    def probabilities(self) -> np.ndarray:
        """``(N,)`` probability of each image per draw (with replacement)."""
        w = self.weights.numpy()
        return w / w.sum()

    def expected_box_fraction(self) -> np.ndarray:
        """``(C,)`` expected share of each class among the boxes of the drawn images (with
        replacement), to compare with the dataset's ``counts.sum(0) / counts.sum()``."""
        boxes = self.probabilities() @ self.counts
        return boxes / max(boxes.sum(), 1e-12)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        weights = self.weights if self.replacement else self.weights.clamp_min(1e-12)
        drawn = torch.multinomial(weights, self.num_samples, self.replacement,
                                  generator=generator)
        return iter(drawn.tolist())


def _check_number(owner: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{owner}.{key}={value!r}: expected a number >= 0")
    return float(value)


@SAMPLERS.register
class ClassAwareSampler(_WeightedImages):
    """Draw images holding rare classes more often (helmet_off: 8 % of the boxes).

    Image weights are :func:`class_image_weights` of the dataset's box counts: the rarest class
    present in an image sets its weight (``reduce="max"``), ``(n_max / n_c) ** power``.

    Args:
        dataset: a dataset with ``annotations(i)`` (or wrapping one; given by the data module).
        power: ``1``: inverse frequency; ``0.5``: its square root (milder); ``0``: uniform.
        reduce: ``"max"`` or ``"mean"`` of the class weights in an image.
        empty_weight: weight of an image without objects (the most frequent class has 1).
        num_samples: indices per epoch (default ``len(dataset)``).
        replacement: draw with replacement (without: the weights only change the order).
        seed: base seed (``train.seed`` from the data module).
    """

    def __init__(self, dataset: Any, power: float = 1.0, reduce: str = "max",
                 empty_weight: float = 1.0, num_samples: int | None = None,
                 replacement: bool = True, seed: int = 0) -> None:
        power = _check_number("ClassAwareSampler", "power", power)
        empty_weight = _check_number("ClassAwareSampler", "empty_weight", empty_weight)
        self.counts = image_class_counts(dataset)
        self.class_weights, weights = class_image_weights(self.counts, power, empty_weight,
                                                          reduce)
        self._setup(weights, num_samples, replacement, seed)


@SAMPLERS.register
class SizeClassSampler(_WeightedImages):
    """Size- and class-aware sampling in one: image weight = ``combine`` of the
    :class:`TinyObjectOversampler` weight (``tiny_weight`` for an image with an object below
    ``area_threshold`` of the image area, else 1) and the :class:`ClassAwareSampler` weight.

    ``combine="product"``: the factors compound (a tiny helmet_off image gets both, e.g. 4 x
    11.5 = 46); ``"max"``: the larger one (an image is boosted for its strongest reason only,
    so tiny rare images are not oversampled twice). With ``tiny_weight=1`` both equal
    :class:`ClassAwareSampler`; with ``power=0`` both equal :class:`TinyObjectOversampler`.

    Args:
        dataset: a dataset with ``object_areas(i)`` and ``annotations(i)``.
        tiny_weight, area_threshold: as ``weight``/``area_threshold`` of
            :class:`TinyObjectOversampler`.
        power, reduce, empty_weight: as in :class:`ClassAwareSampler`.
        combine: ``"product"`` or ``"max"``.
        num_samples, replacement, seed: as in :class:`ClassAwareSampler`.
    """

    def __init__(self, dataset: Any, tiny_weight: float = 4.0, area_threshold: float = 0.001,
                 power: float = 1.0, reduce: str = "max", empty_weight: float = 1.0,
                 combine: str = "product", num_samples: int | None = None,
                 replacement: bool = True, seed: int = 0) -> None:
        owner = "SizeClassSampler"
        tiny_weight = _check_number(owner, "tiny_weight", tiny_weight)
        power = _check_number(owner, "power", power)
        empty_weight = _check_number(owner, "empty_weight", empty_weight)
        if combine not in ("product", "max"):
            raise ConfigError(f"{owner}.combine={combine!r}: expected 'product' or 'max'")
        if not 0 < float(area_threshold) <= 1:
            raise ConfigError(f"{owner}.area_threshold={area_threshold!r}: expected a "
                              "fraction of the image area in (0, 1]")
        self.is_tiny = tiny_object_mask(dataset, float(area_threshold))
        self.counts = image_class_counts(dataset)
        self.class_weights, class_w = class_image_weights(self.counts, power, empty_weight,
                                                          reduce)
        size_w = np.where(self.is_tiny, tiny_weight, 1.0)
        self.combine = combine
        weights = size_w * class_w if combine == "product" else np.maximum(size_w, class_w)
        self._setup(weights, num_samples, replacement, seed)
