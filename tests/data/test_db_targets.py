"""Tests for detlab.data.db_targets: DB maps checked by hand and against shapely distances."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Point, Polygon

from detlab.data.db_targets import DBTargetGenerator, make_db_targets
from detlab.errors import ConfigError, DataError

RECT = np.array([[10, 10], [110, 10], [110, 30], [10, 30]], dtype=np.float64)  # D = 7 at r = 0.4
H, W = 50, 130


def _thresh(dist: float, d: float = 7.0, lo: float = 0.3, hi: float = 0.7) -> float:
    return lo + (hi - lo) * (1 - min(dist / d, 1.0))


def test_prob_map_is_the_shrunk_rectangle() -> None:
    t = make_db_targets([RECT], None, H, W)
    ys, xs = np.nonzero(t["prob_map"])
    # Shrunk by 7 px: x in [17, 103], y in [17, 23], boundary pixels included (cv2.fillPoly).
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (17, 103, 17, 23)
    assert t["prob_map"].sum() == 87 * 7
    assert (t["prob_mask"] == 1).all()
    assert all(v.dtype == np.float32 and v.shape == (H, W) for v in t.values())


@pytest.mark.parametrize(
    ("x", "y", "dist"),
    [
        (10, 20, 0.0),  # on the left border
        (60, 10, 0.0),  # on the top border
        (13, 20, 3.0),  # inside, 3 px from the left border
        (5, 20, 5.0),  # outside, 5 px left of it
        (60, 20, 10.0),  # centre: farther than D -> thresh_min
        (5, 5, 50**0.5),  # outside the corner by sqrt(50) > 7
        (6, 7, 5.0),  # outside the corner by 5
        (125, 20, 15.0),  # far outside
    ],
)
def test_thresh_map_by_hand(x: int, y: int, dist: float) -> None:
    t = make_db_targets([RECT], None, H, W)
    assert t["thresh_map"][y, x] == pytest.approx(_thresh(dist), abs=1e-6)


@pytest.mark.parametrize(
    ("x", "y", "inside"),
    [(3, 20, True), (2, 20, False), (60, 20, True), (6, 5, True), (5, 5, False), (117, 30, True)],
)
def test_thresh_mask_is_the_dilated_polygon(x: int, y: int, inside: bool) -> None:
    # (3, 20): 7 px from the border -> in; (2, 20): 8 px -> out; (5, 5): sqrt(50) > 7 -> out.
    t = make_db_targets([RECT], None, H, W)
    assert t["thresh_mask"][y, x] == float(inside)


def test_rotated_quad_matches_shapely_distance() -> None:
    quad = np.array([[20.3, 12.1], [95.7, 30.4], [90.2, 52.8], [14.9, 34.6]])
    t = make_db_targets([quad], None, 80, 120)
    poly = Polygon(quad)
    d = poly.area * (1 - 0.4**2) / poly.length
    rng = np.random.default_rng(0)
    for x, y in rng.integers(0, [120, 80], size=(60, 2)):
        dist = poly.exterior.distance(Point(x, y))
        assert t["thresh_map"][y, x] == pytest.approx(_thresh(dist, d), abs=1e-5)
        if dist < d - 1e-3 or poly.contains(Point(x, y)) and dist > d + 1e-3:
            assert t["thresh_mask"][y, x] == 1.0


def test_overlapping_words_keep_the_max() -> None:
    other = RECT + [0, 8]  # top border at y = 18, inside RECT's band
    t = make_db_targets([RECT, other], None, 60, W)
    # (60, 18): on other's border (1 -> 0.7), 8 px from RECT's top border (-> 0.3).
    assert t["thresh_map"][18, 60] == pytest.approx(0.7)


def test_ignore_zeroes_the_mask_and_skips_the_word() -> None:
    t = make_db_targets([RECT], np.array([True]), H, W)
    assert t["prob_map"].sum() == 0 and t["thresh_mask"].sum() == 0
    assert np.allclose(t["thresh_map"], 0.3)
    assert (t["prob_mask"][10:31, 10:111] == 0).all()
    assert t["prob_mask"].sum() == H * W - 21 * 101


def test_small_word_is_ignored() -> None:
    thin = np.array([[10, 10], [60, 10], [60, 15], [10, 15]], dtype=np.float64)  # 5 px < 8
    t = make_db_targets([thin, RECT], [False, False], H, W)
    assert (t["prob_mask"][10:16, 10:61] == 0).all()
    assert t["prob_map"][10:16].sum() == 0  # only RECT's kernel (rows 17..23) is drawn
    t = make_db_targets([thin], None, H, W, min_text_size=4)
    assert t["prob_map"].sum() > 0


@pytest.mark.parametrize(
    "poly",
    [np.zeros((0, 2)), np.array([[5.0, 5.0], [9.0, 9.0]]), np.array([[5, 5], [20, 5], [40, 5.0]])],
)
def test_degenerate_polygons_do_not_crash(poly: np.ndarray) -> None:
    t = make_db_targets([poly, RECT], None, H, W)
    assert t["prob_map"].sum() == 87 * 7
    assert all(np.isfinite(v).all() for v in t.values())


def test_word_outside_the_image_is_harmless() -> None:
    t = make_db_targets([RECT + 500, RECT - [60, 0]], None, H, W)
    assert np.isfinite(t["thresh_map"]).all() and t["prob_map"][:, :44].sum() > 0


def test_generator_matches_function() -> None:
    gen = DBTargetGenerator(shrink_ratio=0.5, thresh_min=0.2, thresh_max=0.8)
    a = gen([RECT], None, H, W)
    b = make_db_targets([RECT], None, H, W, shrink_ratio=0.5, thresh_min=0.2, thresh_max=0.8)
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        (dict(shrink_ratio=1.0), "shrink_ratio"),
        (dict(shrink_ratio=0.0), "shrink_ratio"),
        (dict(thresh_min=0.7, thresh_max=0.3), "thresh_min"),
        (dict(thresh_max=1.5), "thresh_max"),
        (dict(min_text_size=-1), "min_text_size"),
    ],
)
def test_bad_parameters_raise_config_error(kwargs: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        DBTargetGenerator(**kwargs)


def test_ignore_length_mismatch_raises_data_error() -> None:
    with pytest.raises(DataError, match="ignore"):
        make_db_targets([RECT], [False, True], H, W)
