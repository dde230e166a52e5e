"""PositiveOversampler: share of positives, per-epoch reproducibility, configuration errors."""

from __future__ import annotations

import numpy as np
import pytest

from detlab.data.datasets.synthetic_spine import SyntheticSpineCT
from detlab.data.samplers import PositiveOversampler
from detlab.errors import ConfigError
from detlab.registry import SAMPLERS


class FlagDataset:
    """Minimal dataset: only ``len`` and ``positive_flags``."""

    def __init__(self, flags) -> None:
        self.flags = np.asarray(flags, dtype=bool)

    def __len__(self) -> int:
        return len(self.flags)

    def positive_flags(self) -> np.ndarray:
        return self.flags


def _ten_percent(n: int = 1000) -> FlagDataset:
    return FlagDataset(np.arange(n) % 10 == 0)


@pytest.mark.parametrize("fraction,weight", [(0.5, 9.0), (0.25, 3.0), (0.1, 1.0), (0.05, 9 / 19)])
def test_share_of_positives_and_weight(fraction, weight):
    ds = _ten_percent()
    sampler = PositiveOversampler(ds, positive_fraction=fraction, num_samples=5000)
    assert sampler.positive_weight == pytest.approx(weight)
    idx = np.array(list(sampler))
    assert len(idx) == len(sampler) == 5000
    assert idx.min() >= 0 and idx.max() < len(ds)
    # binomial std for 5000 draws is <= 0.007
    assert ds.flags[idx].mean() == pytest.approx(fraction, abs=0.025)


def test_default_length_and_balanced_coverage():
    ds = _ten_percent()
    idx = np.array(list(PositiveOversampler(ds)))
    assert len(idx) == len(ds)
    # ~500 positive draws dealt from permutations of the 100 positives: each one 4-6 times
    # (independent draws would leave some out); ~500 negative draws among 900: no repeats
    pos_counts = np.bincount(idx[ds.flags[idx]], minlength=len(ds))[ds.flags]
    assert pos_counts.min() >= 4 and pos_counts.max() - pos_counts.min() <= 1
    negatives = idx[~ds.flags[idx]]
    assert len(np.unique(negatives)) == len(negatives)


def test_reproducible_per_epoch():
    ds = _ten_percent()
    a, b = PositiveOversampler(ds, seed=1), PositiveOversampler(ds, seed=1)
    assert list(a) == list(b) == list(a)
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != list(b)
    b.set_epoch(1)
    assert epoch1 == list(b)
    assert list(PositiveOversampler(ds, seed=2)) != list(PositiveOversampler(ds, seed=1))


def test_only_positives_when_fraction_is_one():
    ds = _ten_percent(100)
    idx = np.array(list(PositiveOversampler(ds, positive_fraction=1.0)))
    assert ds.flags[idx].all()


def test_with_synthetic_spine_built_from_registry():
    ds = SyntheticSpineCT("train", num_samples=1000)
    sampler = SAMPLERS.build(dict(type="PositiveOversampler", positive_fraction=0.5,
                                  num_samples=4000), dataset=ds)
    flags = ds.positive_flags()
    assert sampler.positive_weight == pytest.approx(
        0.5 * (~flags).sum() / (0.5 * flags.sum())
    )
    assert flags[np.array(list(sampler))].mean() == pytest.approx(0.5, abs=0.03)


class NoFlags:
    def __len__(self) -> int:
        return 10


@pytest.mark.parametrize(
    "dataset,kwargs,match",
    [
        (NoFlags(), {}, "NoFlags has none"),
        (FlagDataset([False] * 10), {}, "FlagDataset has no positive"),
        (FlagDataset([True] * 10), dict(positive_fraction=0.5), "FlagDataset has only positive"),
        (_ten_percent(), dict(positive_fraction=0.0), "positive_fraction"),
        (_ten_percent(), dict(num_samples=0), "num_samples"),
    ],
)
def test_config_errors(dataset, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PositiveOversampler(dataset, **kwargs)
