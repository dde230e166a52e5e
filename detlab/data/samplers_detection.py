"""Samplers for detection training: oversample images that contain tiny objects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import ConfigError
from ..registry import SAMPLERS

__all__ = ["TinyObjectOversampler", "tiny_object_mask"]


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
