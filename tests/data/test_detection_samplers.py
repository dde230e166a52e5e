"""TinyObjectOversampler: which images count as tiny, sampling frequencies against the exact
expected fraction, per-epoch determinism, building from the registry over a real dataset."""

from __future__ import annotations

import numpy as np
import pytest

from detlab.data.datasets.synthetic_shapes import SyntheticShapes
from detlab.data.samplers_detection import TinyObjectOversampler, tiny_object_mask
from detlab.errors import ConfigError
from detlab.registry import SAMPLERS


class Areas:
    """Dataset stand-in: relative object areas per image."""

    def __init__(self, areas):
        self.areas = [np.asarray(a, np.float64) for a in areas]

    def __len__(self):
        return len(self.areas)

    def object_areas(self, i):
        return self.areas[i]


# tiny (< 0.001): image 0 (one tiny among large), image 3; image 2 has no objects.
AREAS = Areas([[0.0005, 0.2], [0.001, 0.05], [], [0.0009], [0.3]])


@pytest.mark.parametrize("threshold,expected", [
    (0.001, [True, False, False, True, False]),
    (0.0009, [True, False, False, False, False]),
    (0.0011, [True, True, False, True, False]),
    (0.5, [True, True, False, True, True]),
])
def test_tiny_mask(threshold, expected):
    assert tiny_object_mask(AREAS, threshold).tolist() == expected


@pytest.mark.parametrize("weight", [1.0, 4.0, 0.0])
def test_frequencies_match_weights(weight):
    sampler = TinyObjectOversampler(AREAS, weight=weight, num_samples=20000, seed=1)
    # 2 tiny images of weight w, 3 others of weight 1: P(tiny) = 2w / (2w + 3).
    expected = 2 * weight / (2 * weight + 3)
    assert sampler.expected_tiny_fraction() == pytest.approx(expected)
    assert sampler.tiny_fraction == pytest.approx(0.4)
    counts = np.bincount(list(sampler), minlength=5) / 20000
    assert counts[[0, 3]].sum() == pytest.approx(expected, abs=0.015)
    per_image = np.array([weight, 1, 1, weight, 1]) / (2 * weight + 3)
    np.testing.assert_allclose(counts, per_image, atol=0.015)


def test_epochs_are_deterministic_and_differ():
    sampler = TinyObjectOversampler(AREAS, num_samples=50, seed=3)
    first = list(sampler)
    assert first == list(sampler) and len(first) == len(sampler) == 50
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_without_replacement_is_a_permutation():
    sampler = TinyObjectOversampler(AREAS, weight=10.0, replacement=False)
    assert sorted(sampler) == [0, 1, 2, 3, 4]


def test_registry_build_over_synthetic_shapes():
    ds = SyntheticShapes(num_samples=40, image_size=256, seed=0)
    sampler = SAMPLERS.build(dict(type="TinyObjectOversampler", weight=3.0), dataset=ds)
    assert isinstance(sampler, TinyObjectOversampler) and len(sampler) == 40
    # Same rule, recomputed from the samples' original boxes.
    for i in range(len(ds)):
        boxes = ds[i]["target"]["orig_boxes"].numpy()
        rel = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 256**2
        assert sampler.is_tiny[i] == bool((rel < 0.001).any())
    assert 0 < sampler.tiny_fraction < 1


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(weight=-1.0), "weight"), (dict(area_threshold=0.0), "area_threshold"),
    (dict(area_threshold=2.0), "area_threshold"), (dict(num_samples=0), "num_samples"),
    (dict(num_samples=9, replacement=False), "num_samples"),
])
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TinyObjectOversampler(AREAS, **kwargs)


def test_dataset_without_object_areas():
    with pytest.raises(ConfigError, match="object_areas"):
        TinyObjectOversampler([1, 2, 3])
    with pytest.raises(ConfigError, match="nothing to sample"):
        TinyObjectOversampler(Areas([[0.0001]]), weight=0.0)
