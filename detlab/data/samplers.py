"""Samplers that change how often rare positive samples are seen during training."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, Sampler

from ..checks import check_int
from ..errors import ConfigError
from ..registry import SAMPLERS

__all__ = ["PositiveOversampler", "EpochShuffleSampler", "NoSingletonBatchSampler"]


@SAMPLERS.register()
class PositiveOversampler(Sampler[int]):
    """Draw indices with replacement so that positives make up ``positive_fraction`` of an epoch.

    Each of the ``num_samples`` draws is a positive with probability ``positive_fraction`` and a
    negative otherwise, i.e. positives get ``positive_weight`` times the sampling weight of
    negatives (9x for 10 % positive slices and ``positive_fraction=0.5``). Within each group
    indices are dealt from fresh random permutations rather than drawn independently, so every
    positive is repeated about equally often (none is left out by chance) and negatives do not
    repeat until all of them have been used. The order of an epoch depends only on ``seed`` and the
    epoch set by :meth:`set_epoch` (Lightning calls it; under DDP Lightning wraps this sampler in
    a ``DistributedSamplerWrapper`` that splits the epoch between ranks).

    Args:
        dataset: provides ``positive_flags() -> (N,) bool`` (e.g.
            :class:`~detlab.data.datasets.synthetic_spine.SyntheticSpineCT`).
        positive_fraction: expected share of positive draws, in ``(0, 1]``.
        num_samples: draws per epoch (default ``len(dataset)``).
        seed: base seed of the per-epoch generator.

    Raises:
        ConfigError: the dataset has no ``positive_flags``, no positive sample, or no negative
            sample while ``positive_fraction < 1``.
    """

    def __init__(
        self,
        dataset: Any,
        positive_fraction: float = 0.5,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        name = type(dataset).__name__
        if not callable(getattr(dataset, "positive_flags", None)):
            raise ConfigError(
                f"PositiveOversampler needs a dataset with positive_flags(); {name} has none"
            )
        if not 0.0 < float(positive_fraction) <= 1.0:
            raise ConfigError(f"positive_fraction must be in (0, 1], got {positive_fraction!r}")
        if num_samples is None:
            num_samples = len(dataset)
        check_int("PositiveOversampler", "num_samples", num_samples, low=1)
        check_int("PositiveOversampler", "seed", seed, low=0)
        flags = np.asarray(dataset.positive_flags(), dtype=bool).reshape(-1)
        self.positive_indices = np.flatnonzero(flags)
        self.negative_indices = np.flatnonzero(~flags)
        n_pos, n_neg = len(self.positive_indices), len(self.negative_indices)
        if n_pos == 0:
            raise ConfigError(
                f"PositiveOversampler: dataset {name} has no positive sample among {len(flags)}"
            )
        if n_neg == 0 and positive_fraction < 1.0:
            raise ConfigError(
                f"PositiveOversampler: dataset {name} has only positive samples, so "
                f"positive_fraction={positive_fraction} < 1 cannot be reached"
            )
        self.positive_fraction = float(positive_fraction)
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0
        # Weight of a positive relative to a negative that gives the requested share:
        # n_pos * w / (n_pos * w + n_neg) = f  ->  w = f * n_neg / ((1 - f) * n_pos).
        f = self.positive_fraction
        self.positive_weight = float("inf") if f == 1.0 else f * n_neg / ((1.0 - f) * n_pos)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields next."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """``(num_samples,)`` int64 indices of the current epoch."""
        rng = np.random.default_rng((self.seed, self.epoch))
        take_pos = rng.random(self.num_samples) < self.positive_fraction
        out = np.empty(self.num_samples, dtype=np.int64)
        k = int(take_pos.sum())
        out[take_pos] = _cycle(rng, self.positive_indices, k)
        out[~take_pos] = _cycle(rng, self.negative_indices, self.num_samples - k)
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples


def _cycle(rng: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    """``count`` entries of ``pool`` dealt from consecutive random permutations of it."""
    if count == 0:
        return np.empty(0, dtype=np.int64)
    rounds = -(-count // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(rounds)])[:count]


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(num_samples)`` that depends only on ``seed`` and the
    epoch set by :meth:`set_epoch` (Lightning calls it every epoch, also after ``--resume``).

    The data module's default training order: a ``DataLoader(shuffle=True)`` draws its
    permutation from torch's global generator, whose state after a resume differs from an
    uninterrupted run's.
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation :meth:`__iter__` yields next."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        from .seeding import derive_seed

        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 7))
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class NoSingletonBatchSampler(BatchSampler):
    """``BatchSampler`` that drops a final batch of exactly one sample (``batch_size > 1``).

    BatchNorm in training mode cannot normalize one sample whose feature map is 1x1 (a raw
    ``ValueError: Expected more than 1 value per channel``), and one sample gives a noisy step
    anyway. A final batch of 2 or more is kept. The data module says once per run that it
    happens; the order is reshuffled every epoch, so no sample is left out for good.
    """

    def __init__(self, sampler: Any, batch_size: int, drop_last: bool = False) -> None:
        super().__init__(sampler, batch_size, drop_last)

    def drops_one(self) -> bool:
        """Whether the final batch of an epoch holds one sample and is dropped."""
        return not self.drop_last and self.batch_size > 1 \
            and len(self.sampler) % self.batch_size == 1

    def __iter__(self) -> Iterator[list[int]]:
        for batch in super().__iter__():
            if len(batch) == 1 and self.batch_size > 1:
                return  # only the final batch can be shorter than batch_size
            yield batch

    def __len__(self) -> int:
        return super().__len__() - int(self.drops_one())
