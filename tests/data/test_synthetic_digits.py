"""SyntheticDigits: seeded, exact tight boxes on the pasted digit pixels, SVHN-like shapes."""

import numpy as np
import pytest

from detlab.data.datasets.synthetic_digits import SyntheticDigits
from detlab.errors import ConfigError


def test_same_seed_same_samples_other_split_differs():
    a, b = SyntheticDigits(num_samples=4, seed=1), SyntheticDigits(num_samples=4, seed=1)
    c = SyntheticDigits(num_samples=4, seed=1, split="val")
    img_a, ann_a = a.load_raw(2)
    img_b, ann_b = b.load_raw(2)
    assert np.array_equal(img_a, img_b) and np.array_equal(ann_a.boxes, ann_b.boxes)
    assert not np.array_equal(img_a, c.load_raw(2)[0])


def test_boxes_are_tight_around_the_pasted_digit_pixels():
    ds = SyntheticDigits(num_samples=12, seed=0)
    for i in range(len(ds)):
        image = ds.load_image(ds.annotations(i)).astype(np.float64)
        for number in ds._layout(i):
            color = number["color"]
            for digit in number["digits"]:
                x1, y1, x2, y2 = digit["box"]
                y, x = digit["origin"]
                mask = np.zeros(image.shape[:2], bool)
                mask[y:y + digit["mask"].shape[0], x:x + digit["mask"].shape[1]] = digit["mask"]
                ys, xs = np.nonzero(mask)
                assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                # the pixels inside the mask carry the digit colour (noise sigma 8)
                err = np.abs(image[mask] - np.clip(color, 0, 255)).mean()
                assert err < 10, err
                assert 0 <= digit["label"] <= 9


def test_svhn_like_sizes_and_shapes():
    ds = SyntheticDigits(num_samples=40, seed=0, digit_height=(10, 40))
    boxes = np.concatenate([ds.annotations(i).boxes for i in range(len(ds))])
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert h.max() <= 40 and h.min() >= 6
    assert np.median(h / w) > 1.4  # tall and narrow
    sample = ds[0]
    assert sample["image"].shape == (3, 128, 128)
    assert sample["target"]["labels"].max() < 10 and len(ds.class_names) == 10


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(digit_height=(4, 20)), "digit_height"), (dict(digit_height=(10, 200)), "fit"),
     (dict(max_digits=0), "max_digits"), (dict(stretch=(2.0, 1.0)), "stretch")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SyntheticDigits(**kwargs)
