"""Same seed, same run: every random draw of a training sample is a function of
``(train.seed, epoch, index)``.

albumentations 2.x seeds each ``Compose`` from OS entropy, and DataLoader workers, the shuffle
order and multi-scale sizes otherwise depend on torch's global generator, whose state after a
``--resume`` differs from an uninterrupted run. Here:

* :class:`SeededDataset` (the data module wraps the training dataset in it) runs
  ``dataset[index]`` inside :func:`seeding_sample`: every ``Compose`` built by
  :func:`~detlab.data.transforms.build_transforms` that is called for this sample re-seeds
  itself (each transform of the pipeline with its own seed: albumentations'
  ``set_random_seed`` gives every child the *same* seed, which would make two ``p=0.5``
  transforms fire together); Python's, NumPy's and torch's global generators are seeded with
  the sample seed too (in the main process their state is restored afterwards, so data
  loading never shifts the training step's randomness). The sample dict gets
  ``"sample_seed"`` (used by :class:`~detlab.data.multiscale.MultiScaleCollate`).
* :class:`~detlab.data.mosaic.MosaicDataset` with ``seed=None`` uses ``train.seed``.
* the shuffle order comes from :class:`~detlab.data.samplers.EpochShuffleSampler`
  (``(seed, epoch)``), samplers that take a ``seed`` get ``train.seed`` when the recipe sets
  none.

So the result depends neither on ``num_workers`` nor on persistent workers, and an epoch
replayed after ``--resume`` sees exactly the samples of the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .uint8_batches import raw_pixels

__all__ = [
    "SeededDataset", "derive_seed", "seeding_sample", "next_transform_seed", "base_seed",
    "seed_transform_tree", "global_generators", "SharedEpoch",
]


@dataclass
class _Sample:
    base: int
    epoch: int
    index: int
    calls: int = 0


_CURRENT: ContextVar[_Sample | None] = ContextVar("detlab_sample_seed", default=None)


def derive_seed(*keys: int) -> int:
    """A 32-bit seed from integer keys (``numpy.random.SeedSequence``: well mixed, so
    neighbouring keys give unrelated streams)."""
    entropy = [int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@contextlib.contextmanager
def seeding_sample(base: int, epoch: int, index: int) -> Iterator[int]:
    """Context in which transforms draw from seeds of sample ``index`` of ``epoch``; yields
    the sample seed."""
    token = _CURRENT.set(_Sample(int(base), int(epoch), int(index)))
    try:
        yield derive_seed(base, epoch, index)
    finally:
        _CURRENT.reset(token)


def next_transform_seed() -> int | None:
    """Seed for the next transform pipeline call of the current sample (a different one for
    each call within the sample), or ``None`` outside :func:`seeding_sample`."""
    cur = _CURRENT.get()
    if cur is None:
        return None
    cur.calls += 1
    return derive_seed(cur.base, cur.epoch, cur.index, 1, cur.calls)


def base_seed(default: int = 0) -> int:
    """``train.seed`` of the sample being loaded, ``default`` outside :func:`seeding_sample`."""
    cur = _CURRENT.get()
    return default if cur is None else cur.base


def seed_transform_tree(transform: Any, seed: int) -> None:
    """Give an albumentations transform (and, for a ``Compose``/``OneOf``…, each child
    recursively) its own generators derived from ``seed``."""
    children = list(getattr(transform, "transforms", None) or [])
    seeds = np.random.SeedSequence(int(seed)).generate_state(1 + len(children))
    own = int(seeds[0])
    transform.seed = own
    transform.random_generator = np.random.default_rng(own)
    transform.py_random = random.Random(own)
    for child, s in zip(children, seeds[1:]):
        if hasattr(child, "random_generator"):
            seed_transform_tree(child, int(s))


@contextlib.contextmanager
def global_generators(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's global generators; restore them afterwards in the
    main process (a worker's generators are its own)."""
    in_worker = get_worker_info() is not None
    if not in_worker:
        saved = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    # The CPU generator only: data loading does not use CUDA, and torch.manual_seed would also
    # queue a lazy CUDA seeding call with a formatted stack trace per sample (~1 ms in a
    # loader's deep stack, and a list that grows with every sample until CUDA starts).
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        if not in_worker:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.random.set_rng_state(saved[2])


class SharedEpoch:
    """Mixin: an epoch counter in shared memory, so :meth:`set_epoch` in the main process
    reaches persistent loader workers; it is forwarded to the wrapped ``self.dataset``
    (``MosaicDataset``'s close-mosaic switch). Call :meth:`_init_epoch` in ``__init__``."""

    dataset: Any

    def _init_epoch(self) -> None:
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; also calls the wrapped dataset's ``set_epoch`` when it has one."""
        from .datamodule import set_dataset_epoch

        self._epoch[0] = int(epoch)
        set_dataset_epoch(self.dataset, epoch)

    @property
    def epoch(self) -> int:
        """The epoch set by :meth:`set_epoch` (shared with the loader workers)."""
        return int(self._epoch.item())


class SeededDataset(SharedEpoch, Dataset):
    """Wraps the training dataset so sample ``index`` of epoch ``e`` is drawn from
    ``derive_seed(seed, e, index)`` (module docstring). The epoch lives in shared memory, so
    ``set_epoch`` in the main process reaches persistent workers; it is forwarded to the
    wrapped dataset (``MosaicDataset``'s close-mosaic switch). With ``uint8=True`` samples are
    loaded inside :func:`~detlab.data.uint8_batches.raw_pixels` (uint8 images, normalized on the
    training device: ``data.uint8_batches``)."""

    def __init__(self, dataset: Dataset, seed: int = 0, uint8: bool = False) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.uint8 = bool(uint8)
        self._init_epoch()

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        # Attributes of the wrapped dataset (class_names, img_size, …) stay reachable; guard
        # "dataset" so unpickling (no __dict__ yet) does not recurse.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        with seeding_sample(self.seed, self.epoch, index) as seed, global_generators(seed), \
                raw_pixels(self.uint8):
            item = self.dataset[index]
        if isinstance(item, dict):
            item = {**item, "sample_seed": seed}
        return item
