"""What the sample-level training wrappers (:class:`~detlab.data.crops.ObjectCrops`,
:class:`~detlab.data.mixing.Mixup`, :class:`~detlab.data.mixing.CopyPaste`) share: the wrapped
dataset's attributes, the epoch, and a seeded generator per sample.

Randomness follows :mod:`detlab.data.seeding`: a wrapper draws from
``np.random.default_rng([seed, epoch, index, salt])`` with ``seed=None`` meaning the run's
``train.seed`` (:func:`~detlab.data.seeding.base_seed`), so ``train.seed`` fixes every crop
window, partner and mixing ratio whatever ``num_workers`` is. ``salt`` differs per wrapper
class, so stacked wrappers do not make correlated draws.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..checks import is_int
from ..errors import ConfigError
from ..registry import DATASETS
from .datasets.detection_base import DetectionDataset
from .seeding import SharedEpoch, base_seed

__all__ = ["SampleWrapper", "base_detection_dataset"]


def base_detection_dataset(dataset: Any) -> DetectionDataset:
    """The first :class:`DetectionDataset` in the ``.dataset`` chain of ``dataset`` (itself
    included); raises :class:`ConfigError` when there is none."""
    current = dataset
    for _ in range(8):
        if isinstance(current, DetectionDataset):
            return current
        current = getattr(current, "dataset", None)
        if current is None:
            break
    raise ConfigError(f"{type(dataset).__name__} wraps no detection dataset (CocoDetection, "
                      "YoloDetection, VocDetection, SyntheticHelmets …)")


class SampleWrapper(SharedEpoch, Dataset):
    """Base of the seeded sample wrappers: delegates ``len``, ``class_names``, ``img_size``,
    ``object_areas`` (samplers) and ``annotations`` to the wrapped dataset; keeps the epoch in
    shared memory (DataLoader workers see ``set_epoch`` calls) and forwards it inward.

    Args:
        dataset: the wrapped dataset, or its config dict (built from the registry).
        seed: base seed; ``None``: ``train.seed`` in training (0 elsewhere).
    """

    def __init__(self, dataset: Any, seed: int | None = None) -> None:
        name = type(self).__name__
        if isinstance(dataset, dict):
            dataset = DATASETS.build(dataset, key=f"{name}.dataset")
        self.dataset = dataset
        self.base = base_detection_dataset(dataset)
        if seed is not None and not is_int(seed):
            raise ConfigError(f"{name}.seed={seed!r}: expected an int or None")
        self.seed = seed
        self._salt = zlib.crc32(name.encode())
        self._init_epoch()

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def class_names(self) -> list[str]:
        """The wrapped dataset's class names."""
        return self.base.class_names

    @property
    def img_size(self) -> int | None:
        """The wrapped dataset's letterbox size."""
        return getattr(self.dataset, "img_size", self.base.img_size)

    def object_areas(self, index: int) -> np.ndarray:
        """Relative object areas of image ``index`` of the wrapped dataset (for samplers)."""
        return self.dataset.object_areas(index)

    def annotations(self, index: int) -> Any:
        """Annotations of image ``index`` of the wrapped detection dataset (for samplers)."""
        return self.base.annotations(index)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` this epoch (module docstring)."""
        seed = base_seed() if self.seed is None else self.seed
        return np.random.default_rng([int(seed), self.epoch, int(index), self._salt])
