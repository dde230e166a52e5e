"""Multi-scale collate: size lists, boxes that still frame the drawn pixels after resizing,
meta scale/pad that still map back to orig_boxes, masks and polygons, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from detlab.data.collate import collate
from detlab.data.datasets.synthetic_shapes import SyntheticShapes
from detlab.data.letterbox import unletterbox_boxes
from detlab.data.multiscale import MultiScaleCollate, multi_scale_sizes, rescale_batch
from detlab.errors import ConfigError
from detlab.structures import Batch


@pytest.mark.parametrize("img_size,rng,div,expected", [
    (640, (0.5, 1.5), 32, list(range(320, 961, 32))),
    (100, (0.5, 1.5), 32, [64, 96, 128]),
    (640, (1.0, 1.0), 32, [640]),
    (1280, (0.75, 1.0), 64, [960, 1024, 1088, 1152, 1216, 1280]),
])
def test_multi_scale_sizes(img_size, rng, div, expected):
    assert multi_scale_sizes(img_size, rng, div) == expected


def _drawn_sample(h, w, box, mask=False):
    """Zero image with a filled box of ones (all channels), meta of a letterboxed sample."""
    image = torch.zeros(3, h, w)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 1.0
    target = {"boxes": torch.tensor([box], dtype=torch.float32),
              "labels": torch.zeros(1, dtype=torch.int64),
              "orig_boxes": torch.tensor([box], dtype=torch.float32) * 2}
    if mask:
        target["mask"] = (image[0] > 0).clone()
        target["polygons"] = [np.array([[x1, y1], [x2, y1], [x2, y2]], np.float32)]
    meta = {"image_id": 0, "orig_size": (2 * h, 2 * w), "input_size": (h, w),
            "scale": (0.5, 0.5), "pad": (0, 0)}
    return {"image": image, "target": target, "meta": meta}


@pytest.mark.parametrize("size", [32, 96, 160, 224, 320])
def test_boxes_still_frame_the_drawn_pixels(size):
    samples = [_drawn_sample(96, 128, (20, 30, 70, 62)), _drawn_sample(64, 64, (5, 7, 33, 50))]
    batch = rescale_batch(collate(samples), size)
    assert max(batch.images.shape[-2:]) == size
    assert all(s % 32 == 0 for s in batch.images.shape[-2:])
    for image, target in zip(batch.images, batch.targets):
        x1, y1, x2, y2 = target["boxes"][0].tolist()
        ys, xs = torch.nonzero(image[0] > 0.5, as_tuple=True)
        # The drawn region (>50 % coverage) and the box agree to within a pixel.
        assert xs.min() >= np.floor(x1) and xs.max() + 1 <= np.ceil(x2)
        assert ys.min() >= np.floor(y1) and ys.max() + 1 <= np.ceil(y2)
        assert xs.min() <= x1 + 1 and xs.max() + 1 >= x2 - 1
        assert ys.min() <= y1 + 1 and ys.max() + 1 >= y2 - 1


def test_meta_keeps_mapping_to_original_boxes():
    ds = SyntheticShapes(num_samples=6, image_size=(90, 160), img_size=128, seed=1)
    samples = [ds[i] for i in range(6)]
    batch = collate(samples)
    for size in (64, 192):
        out = rescale_batch(batch, size)
        for target, meta in zip(out.targets, out.meta):
            back = unletterbox_boxes(target["boxes"], meta["scale"], meta["pad"])
            torch.testing.assert_close(back, target["orig_boxes"], atol=1e-3, rtol=1e-5)
    # 90x160 images letterboxed to 72x128 (scale 0.8, pad 12 on top), padded batch 96x128.
    # size 64: factor 0.5 → 48x64, padded to 64x64; size 192: factor 1.5 → 144x192 → 160x192.
    assert batch.images.shape[-2:] == (96, 128)
    for size, factor, shape, input_size in ((64, 0.5, (64, 64), (36, 64)),
                                            (192, 1.5, (160, 192), (108, 192))):
        out = rescale_batch(batch, size)
        assert out.images.shape[-2:] == shape
        assert out.meta[0]["scale"] == pytest.approx((0.8 * factor, 0.8 * factor))
        assert out.meta[0]["pad"] == pytest.approx((12 * factor, 0))
        assert out.meta[0]["input_size"] == input_size
    assert batch.meta[0]["scale"] == samples[0]["meta"]["scale"]  # input left untouched


def test_masks_and_polygons_follow():
    batch = collate([_drawn_sample(64, 64, (8, 16, 40, 48), mask=True)])
    out = rescale_batch(batch, 128)
    mask = out.targets[0]["mask"]
    assert mask.shape == (128, 128) and mask.dtype == torch.bool
    ys, xs = torch.nonzero(mask, as_tuple=True)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (16, 32, 80, 96)
    np.testing.assert_allclose(out.targets[0]["polygons"][0], [[16, 32], [80, 32], [80, 96]])


def test_same_size_is_a_no_op():
    batch = collate([_drawn_sample(64, 64, (8, 16, 40, 48))])
    assert rescale_batch(batch, 64) is batch


def test_collate_draws_from_sizes_and_pickles():
    collate_fn = MultiScaleCollate.from_range(128, (0.5, 1.5), 32, seed=0)
    assert collate_fn.sizes == [64, 96, 128, 160, 192]
    samples = [_drawn_sample(96, 128, (20, 30, 70, 62))]
    seen = {max(collate_fn(samples).images.shape[-2:]) for _ in range(30)}
    assert seen == set(collate_fn.sizes)
    clone = pickle.loads(pickle.dumps(collate_fn))
    assert isinstance(clone(samples), Batch)
    torch.manual_seed(0)
    unseeded = MultiScaleCollate([64, 96])
    assert {max(unseeded(samples).images.shape[-2:]) for _ in range(20)} == {64, 96}


@pytest.mark.parametrize("make", [
    lambda: MultiScaleCollate([]), lambda: MultiScaleCollate([100]),
    lambda: multi_scale_sizes(640, (1.5, 0.5)), lambda: multi_scale_sizes(20, (0.5, 1.0)),
    lambda: multi_scale_sizes(640, 2.0),
])
def test_bad_arguments(make):
    with pytest.raises(ConfigError):
        make()
