"""SyntheticHelmets: deterministic, two classes, tight tall-narrow boxes around drawn heads."""

import numpy as np

from detlab.data.datasets.synthetic_helmets import SyntheticHelmets


def test_deterministic_two_classes_and_tight_boxes():
    ds = SyntheticHelmets(num_samples=30, image_size=96, max_objects=6, min_size=8, max_size=24)
    again = SyntheticHelmets(num_samples=30, image_size=96, max_objects=6, min_size=8,
                             max_size=24)
    labels, ratios = [], []
    for i in range(30):
        ann = ds.annotations(i)
        np.testing.assert_array_equal(ann.boxes, again.annotations(i).boxes)
        np.testing.assert_array_equal(ds.load_image(ann), again.load_image(again.annotations(i)))
        for (x0, y0, x1, y1), label, shape in zip(ann.boxes, ann.labels, ds._layout(i)):
            oy, ox = shape["origin"]
            ys, xs = np.nonzero(shape["mask"])
            assert (x0, y0, x1, y1) == (ox + xs.min(), oy + ys.min(), ox + xs.max() + 1,
                                        oy + ys.max() + 1)
            assert 8 <= y1 - y0 <= 24
            labels.append(int(label))
            ratios.append((x1 - x0) / (y1 - y0))
    assert set(labels) == {0, 1} and ds.class_names == ["helmet_on", "helmet_off"]
    assert 0.35 < np.median(ratios) < 0.75  # tall and narrow like the team's 19 x 35 px boxes


def test_helmet_top_colour_differs_by_class():
    ds = SyntheticHelmets(num_samples=40, image_size=96, max_objects=6, min_size=16,
                          max_size=24)
    tops = {0: [], 1: []}
    for i in range(40):
        for shape in ds._layout(i):
            tops[shape["label"]].append(shape["pixels"][1].mean())
    assert np.mean(tops[0]) > np.mean(tops[1]) + 60  # bright helmets vs dark hair


def test_noise_tile_full_hd_frames_fast_deterministic_same_heads():
    import hashlib
    import time

    import pytest

    from detlab.errors import ConfigError

    kw = dict(num_samples=3, image_size=(1080, 1920), max_objects=8, min_size=24, max_size=50)
    fast, again = SyntheticHelmets(noise_tile=64, **kw), SyntheticHelmets(noise_tile=64, **kw)
    slow = SyntheticHelmets(**kw)
    start = time.perf_counter()
    images = [fast.load_image(fast.annotations(i)) for i in range(3)]
    per_frame = (time.perf_counter() - start) / 3
    assert per_frame < 0.15, per_frame  # ~20 ms on a busy CPU; the per-pixel noise: ~200 ms
    for i, image in enumerate(images):
        assert image.shape == (1080, 1920, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, again.load_image(again.annotations(i)))
        # heads and boxes do not depend on the background
        np.testing.assert_array_equal(fast.annotations(i).boxes, slow.annotations(i).boxes)
        # the tiled noise has the default's spread (std 8 around the floor gradient)
        row = image[540, :64].astype(np.float32)
        assert 4 < row.std() < 12
    with pytest.raises(ConfigError, match="noise_tile"):
        SyntheticHelmets(noise_tile=0, **kw)
    # the default (per-pixel noise) frames are those of before noise_tile existed
    ds = SyntheticHelmets(num_samples=6, image_size=(72, 120), max_objects=8, min_size=6,
                          max_size=24)
    digest = hashlib.md5(b"".join(ds.load_image(ds.annotations(i)).tobytes()
                                  for i in range(6))).hexdigest()
    assert digest == "f5d3e434177be5f4be7116c5caae7fad"
