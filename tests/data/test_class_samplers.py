"""ClassAwareSampler and SizeClassSampler: hand-computed class and image weights (max/mean,
product/max), sampled frequencies against them, expected box shares, registry builds over a
real dataset and through wrappers, determinism per epoch, errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from torch.utils.data import Subset

from detlab.data.datasets.synthetic_helmets import SyntheticHelmets
from detlab.data.mosaic import MosaicDataset
from detlab.data.samplers_detection import (ClassAwareSampler, SizeClassSampler,
                                            class_image_weights, image_class_counts)
from detlab.errors import ConfigError
from detlab.registry import SAMPLERS


class Labeled:
    """Dataset stand-in: labels, ignore flags and relative areas (non-ignored) per image."""

    class_names = ["on", "off"]

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def annotations(self, i):
        labels, ignore, _ = self.images[i]
        return SimpleNamespace(labels=np.array(labels, np.int64), ignore=np.array(ignore, bool))

    def object_areas(self, i):
        return np.array(self.images[i][2], np.float64)


# class 0: 3 + 1 + 1 + 4 = 9 boxes, class 1: 1 box (the ignored one in image 3 not counted)
DATA = Labeled([
    ([0, 0, 0], [0, 0, 0], [0.0005, 0.01, 0.01]),   # tiny
    ([0, 1], [0, 0], [0.01, 0.0008]),               # tiny and rare
    ([], [], []),                                   # empty
    ([0, 1], [0, 1], [0.02]),
    ([0, 0, 0, 0], [0, 0, 0, 0], [0.1] * 4),
])
COUNTS = [[3, 0], [1, 1], [0, 0], [1, 0], [4, 0]]


def test_counts_and_weights_hand_computed():
    counts = image_class_counts(DATA)
    assert counts.tolist() == COUNTS
    class_w, image_w = class_image_weights(counts, power=1.0)
    np.testing.assert_allclose(class_w, [1, 9])
    np.testing.assert_allclose(image_w, [1, 9, 1, 1, 1])
    _, mean_w = class_image_weights(counts, power=1.0, reduce="mean", empty_weight=0.5)
    np.testing.assert_allclose(mean_w, [1, 5, 0.5, 1, 1])  # image 1: (1 + 9) / 2
    class_w, image_w = class_image_weights(counts, power=0.5)
    np.testing.assert_allclose(class_w, [1, 3])
    np.testing.assert_allclose(class_image_weights(counts, power=0.0)[1], [1] * 5)


@pytest.mark.parametrize("cls,kwargs,weights", [
    (ClassAwareSampler, {}, [1, 9, 1, 1, 1]),
    (SizeClassSampler, dict(tiny_weight=4.0, combine="product"), [4, 36, 1, 1, 1]),
    (SizeClassSampler, dict(tiny_weight=4.0, combine="max"), [4, 9, 1, 1, 1]),
    (SizeClassSampler, dict(tiny_weight=1.0), [1, 9, 1, 1, 1]),
    (SizeClassSampler, dict(tiny_weight=4.0, power=0.0), [4, 4, 1, 1, 1]),
])
def test_sampled_frequencies_match_weights(cls, kwargs, weights):
    sampler = cls(DATA, num_samples=20000, seed=1, **kwargs)
    expected = np.array(weights, np.float64) / sum(weights)
    np.testing.assert_allclose(sampler.probabilities(), expected)
    counts = np.bincount(list(sampler), minlength=5) / 20000
    np.testing.assert_allclose(counts, expected, atol=0.015)


def test_expected_box_fraction():
    sampler = ClassAwareSampler(DATA, num_samples=20000, seed=0)
    # p = (1, 9, 1, 1, 1) / 13: class 1 boxes 9/13, class 0 (3 + 9 + 1 + 4)/13 -> 9/26 share
    np.testing.assert_allclose(sampler.expected_box_fraction(), [17 / 26, 9 / 26])
    drawn = np.array(list(sampler))
    boxes = np.array(COUNTS)[drawn].sum(axis=0)
    assert boxes[1] / boxes.sum() == pytest.approx(9 / 26, abs=0.02)


def test_epochs_deterministic_and_different():
    sampler = SizeClassSampler(DATA, num_samples=40, seed=3)
    first = list(sampler)
    assert first == list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert sorted(ClassAwareSampler(DATA, replacement=False)) == [0, 1, 2, 3, 4]


def test_registry_over_real_dataset_and_wrappers():
    ds = SyntheticHelmets(num_samples=30, image_size=96, img_size=96, max_objects=4,
                          min_size=6, max_size=12, seed=0)
    expected = np.zeros((30, 2), np.int64)
    for i in range(30):
        expected[i] = np.bincount(ds[i]["target"]["labels"].numpy(), minlength=2)
    for wrapped in (ds, MosaicDataset(ds, p=0.5)):
        sampler = SAMPLERS.build(dict(type="ClassAwareSampler", power=0.5), dataset=wrapped)
        assert sampler.counts.tolist() == expected.tolist()
    combined = SAMPLERS.build(dict(type="SizeClassSampler", tiny_weight=2.0), dataset=ds)
    assert len(combined) == 30 and combined.probabilities().sum() == pytest.approx(1)


@pytest.mark.parametrize("cls,kwargs,match", [
    (ClassAwareSampler, dict(power=-1), "power"), (ClassAwareSampler, dict(reduce="sum"),
                                                    "reduce"),
    (ClassAwareSampler, dict(num_samples=0), "num_samples"),
    (SizeClassSampler, dict(combine="sum"), "combine"),
    (SizeClassSampler, dict(area_threshold=0), "area_threshold"),
    (SizeClassSampler, dict(tiny_weight=-2), "tiny_weight"),
])
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(DATA, **kwargs)
    with pytest.raises(ConfigError, match="annotations"):
        ClassAwareSampler([1, 2])
    with pytest.raises(ConfigError, match="annotations"):  # a Subset renumbers the images
        ClassAwareSampler(Subset(SyntheticHelmets(num_samples=4), [2, 3]))
    with pytest.raises(ConfigError, match="nothing to sample"):
        ClassAwareSampler(Labeled([([], [], [])]), empty_weight=0.0)
