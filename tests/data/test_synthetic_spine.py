"""SyntheticSpineCT: determinism, class balance, lesion size/contrast and the sample contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from detlab.data.collate import collate
from detlab.data.datasets.synthetic_spine import SyntheticSpineCT
from detlab.errors import ConfigError
from detlab.registry import DATASETS


def test_same_seed_same_arrays_and_index_changes_them():
    a = SyntheticSpineCT("train", num_samples=50, seed=3)
    b = SyntheticSpineCT("train", num_samples=50, seed=3)
    for i in (0, 7, 49):
        ia, ma = a.render(i)
        ib, mb = b.render(i)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
    assert not np.array_equal(a.render(0)[0], a.render(1)[0])
    assert not np.array_equal(a.render(0)[0], SyntheticSpineCT("train", seed=4).render(0)[0])
    assert not np.array_equal(a.render(0)[0], SyntheticSpineCT("val", seed=3).render(0)[0])


def test_sample_depends_on_index_not_on_num_samples():
    small = SyntheticSpineCT("val", num_samples=20)
    large = SyntheticSpineCT("val", num_samples=500)
    np.testing.assert_array_equal(small.positive_flags(), large.positive_flags()[:20])
    np.testing.assert_array_equal(small.render(13)[0], large.render(13)[0])


def test_positive_fraction_over_1000_flags():
    flags = SyntheticSpineCT("train", num_samples=1000).positive_flags()
    assert flags.dtype == bool and flags.shape == (1000,)
    assert 0.07 <= flags.mean() <= 0.13
    assert SyntheticSpineCT("train", num_samples=1000, positive_fraction=0.5) \
        .positive_flags().mean() == pytest.approx(0.5, abs=0.05)


def test_lesion_size_masks_and_flags_agree():
    ds = SyntheticSpineCT("train", num_samples=120, seed=1)
    fractions = []
    for i in range(len(ds)):
        image, mask = ds.render(i)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert bool(mask.any()) == ds.is_positive(i)
        if ds.is_positive(i):
            fractions.append(mask.mean())
    fractions = np.array(fractions)
    assert len(fractions) >= 5
    assert np.all((fractions >= 0.002) & (fractions <= 0.01))
    assert 0.003 <= fractions.mean() <= 0.007


def test_lesion_is_thin_and_darker_than_its_surroundings():
    ds = SyntheticSpineCT("val", num_samples=100)
    for i in np.flatnonzero(ds.positive_flags())[:5]:
        image, mask = ds.render(int(i))
        lesion = mask.astype(bool)
        # thin: eroding with a 5x5 square (i.e. everything < 5 px thick) removes it entirely
        assert not ndimage.binary_erosion(lesion, np.ones((5, 5))).any()
        ring = ndimage.binary_dilation(lesion, iterations=2) & ~lesion
        # ~190 HU below cancellous bone, ~0.8 std of the whole image (cortex in the ring adds more)
        assert image[lesion].mean() < image[ring].mean() - 0.6


def test_intensities_roughly_standardized():
    ds = SyntheticSpineCT("test", num_samples=20)
    pixels = np.stack([ds.render(i)[0] for i in range(20)])
    assert abs(pixels.mean()) < 0.2
    assert 0.8 < pixels.std() < 1.2


def test_sample_dict_contract_and_collate():
    ds = SyntheticSpineCT("val", num_samples=10, image_size=96)
    s = ds[3]
    assert s["image"].dtype == torch.float32 and s["image"].shape == (1, 96, 96)
    assert s["target"]["mask"].dtype == torch.float32 and s["target"]["mask"].shape == (1, 96, 96)
    assert s["meta"] == {
        "image_id": "val-3", "path": "synthetic://spine/val/3", "orig_size": (96, 96),
        "input_size": (96, 96), "scale": (1.0, 1.0), "pad": (0, 0), "case_id": "val-3",
    }
    np.testing.assert_array_equal(s["image"][0].numpy(), ds.render(3)[0])
    batch = collate([ds[i] for i in range(4)], size_divisor=32)
    assert batch.images.shape == (4, 1, 96, 96) and batch.targets[0]["mask"].shape == (1, 96, 96)


def test_horizontal_flip_applies_to_image_and_mask():
    plain = SyntheticSpineCT("train", num_samples=100)
    flipped = SyntheticSpineCT("train", num_samples=100,
                               transforms=[dict(type="HorizontalFlip", p=1.0)])
    i = int(np.flatnonzero(plain.positive_flags())[0])
    a, b = plain[i], flipped[i]
    assert a["target"]["mask"].sum() > 0
    assert torch.equal(b["image"], a["image"].flip(-1))
    assert torch.equal(b["target"]["mask"], a["target"]["mask"].flip(-1))


def test_resize_transform_keeps_orig_mask_and_scale():
    ds = SyntheticSpineCT("train", num_samples=100, transforms=[dict(type="Resize", height=64,
                                                                        width=64)])
    i = int(np.flatnonzero(ds.positive_flags())[0])
    s = ds[i]
    assert s["image"].shape == (1, 64, 64) and s["target"]["mask"].shape == (1, 64, 64)
    assert s["meta"]["scale"] == (0.5, 0.5) and s["meta"]["input_size"] == (64, 64)
    np.testing.assert_array_equal(s["target"]["orig_mask"][0].numpy(), ds.render(i)[1])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(split="training"), "split"),
        (dict(num_samples=0), "num_samples"),
        (dict(image_size=32), "image_size"),
        (dict(positive_fraction=1.5), "positive_fraction"),
        (dict(lesion_fraction=0.0), "lesion_fraction"),
        (dict(transforms=[dict(type="NoSuchFlip")]), "NoSuchFlip"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SyntheticSpineCT(**kwargs)


def test_registered_and_index_errors():
    ds = DATASETS.build(dict(type="SyntheticSpineCT", split="val"))
    assert len(ds) == 100 and len(SyntheticSpineCT("train")) == 400
    with pytest.raises(IndexError):
        ds[100]
    with pytest.raises(IndexError):
        ds.is_positive(100)
