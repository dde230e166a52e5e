"""SyntheticShapes: determinism, exact tight boxes around the drawn pixels, tiny objects and
empty images, letterbox, and collate of detection samples into a Batch whose boxes align."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detlab.data.collate import collate
from detlab.data.datasets.synthetic_shapes import SyntheticShapes
from detlab.errors import ConfigError
from detlab.registry import DATASETS

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def colored(image_hwc: np.ndarray) -> np.ndarray:
    """(H, W) bool: saturated pixels (shapes); the noisy gray background has a small spread."""
    arr = image_hwc.astype(np.int32)
    return (arr.max(-1) - arr.min(-1)) > 90


def test_deterministic_per_seed_split_index():
    a = SyntheticShapes(num_samples=8, image_size=96, seed=3)
    b = SyntheticShapes(num_samples=8, image_size=96, seed=3)
    for i in range(8):
        sa, sb = a[i], b[i]
        assert torch.equal(sa["image"], sb["image"])
        assert torch.equal(sa["target"]["boxes"], sb["target"]["boxes"])
    other_split = SyntheticShapes(num_samples=8, image_size=96, seed=3, split="val")
    other_seed = SyntheticShapes(num_samples=8, image_size=96, seed=4)
    assert not torch.equal(a[0]["image"], other_split[0]["image"])
    assert not torch.equal(a[0]["image"], other_seed[0]["image"])


def test_boxes_are_tight_around_drawn_pixels():
    ds = SyntheticShapes(num_samples=12, image_size=(96, 128), seed=1)
    seen = 0
    for i in range(len(ds)):
        image, ann = ds.load_raw(i)
        shapes = colored(image)
        covered = np.zeros_like(shapes)
        for x1, y1, x2, y2 in ann.boxes.astype(int):
            ys, xs = np.nonzero(shapes[y1:y2, x1:x2])
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x2 - x1, y2 - y1)
            covered[y1:y2, x1:x2] = True
            seen += 1
        assert not (shapes & ~covered).any()  # nothing drawn outside the boxes
    assert seen > 20


def test_classes_sizes_and_empty_images():
    ds = SyntheticShapes(num_samples=60, image_size=256, seed=0)
    labels = np.concatenate([ds.annotations(i).labels for i in range(len(ds))])
    assert set(labels.tolist()) == {0, 1, 2} and ds.class_names[1] == "ellipse"
    areas = np.concatenate([ds.object_areas(i) for i in range(len(ds))])
    # Sides log-uniform in [4, 85]: sides < 8 px (area < 0.1 % of 256²) are about 1/4.
    assert 0.15 < (areas < 0.001).mean() < 0.4
    assert areas.max() > 0.01
    empty = [i for i in range(len(ds)) if len(ds.annotations(i).labels) == 0]
    assert empty
    target = ds[empty[0]]["target"]
    assert target["boxes"].shape == (0, 4) and target["labels"].dtype == torch.int64


def test_letterbox_and_object_areas_agree_with_samples():
    ds = SyntheticShapes(num_samples=4, image_size=(100, 150), img_size=64, seed=2)
    sample = ds[1]
    assert sample["image"].shape == (3, 64, 64)
    assert sample["meta"]["orig_size"] == (100, 150) and sample["meta"]["input_size"] == (43, 64)
    orig = sample["target"]["orig_boxes"].numpy()
    rel = (orig[:, 2] - orig[:, 0]) * (orig[:, 3] - orig[:, 1]) / (100 * 150)
    np.testing.assert_allclose(np.sort(ds.object_areas(1)), np.sort(rel), rtol=1e-6)


def test_collate_pads_and_boxes_align():
    """Samples of different sizes: the batch is padded bottom/right, boxes keep pointing at
    the drawn shapes."""
    big = SyntheticShapes(num_samples=4, image_size=(100, 150), seed=5, **PLAIN)
    small = SyntheticShapes(num_samples=4, image_size=(40, 40), seed=6, min_size=6, **PLAIN)
    samples = [big[i] for i in range(4) if len(big.annotations(i).labels)][:1]
    samples += [small[i] for i in range(4) if len(small.annotations(i).labels)][:1]
    batch = collate(samples, size_divisor=32)
    assert batch.images.shape == (2, 3, 128, 160)
    assert [m["input_size"] for m in batch.meta] == [(100, 150), (40, 40)]
    for image, target in zip(batch.images, batch.targets):
        hwc = (image.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        shapes = colored(hwc)
        for x1, y1, x2, y2 in target["boxes"].numpy().astype(int):
            ys, xs = np.nonzero(shapes[y1:y2, x1:x2])
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x2 - x1, y2 - y1)


def test_registered():
    ds = DATASETS.build(dict(type="SyntheticShapes", num_samples=3, image_size=64))
    assert len(ds) == 3 and ds.num_classes == 3


@pytest.mark.parametrize("kwargs,arg", [
    (dict(num_samples=0), "num_samples"), (dict(image_size=4), "image_size"),
    (dict(image_size=(10, 20, 30)), "image_size"), (dict(min_size=0), "min_size"),
    (dict(min_size=20, max_size=10), "min_size <= max_size"),
    (dict(max_objects=-1), "max_objects"),
])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ConfigError, match=arg):
        SyntheticShapes(**kwargs)
