"""Tests for detlab.ops.polygons: DB shrink/unclip offsets, checked by hand and with shapely."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import Polygon

from detlab.errors import ConfigError, DataError
from detlab.ops.polygons import (
    offset_polygon,
    polygon_area,
    polygon_perimeter,
    shrink_distance,
    shrink_polygon,
    unclip_distance,
    unclip_polygon,
)

RECT = np.array([[10, 10], [110, 10], [110, 30], [10, 30]], dtype=np.float64)  # 100 x 20


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = Polygon(a), Polygon(b)
    return pa.intersection(pb).area / pa.union(pb).area


@pytest.mark.parametrize(
    "poly",
    [
        RECT,
        np.array([[0, 0], [4, 0], [0, 3]]),  # 3-4-5 triangle
        np.array([[0, 0], [10, 0], [10, 2], [2, 2], [2, 10], [0, 10]]),  # concave L
        RECT[::-1] + 1e5,  # clockwise, far from the origin
    ],
)
def test_area_and_perimeter_match_shapely(poly: np.ndarray) -> None:
    ref = Polygon(poly)
    assert polygon_area(poly) == pytest.approx(ref.area, rel=1e-12)
    assert polygon_perimeter(poly) == pytest.approx(ref.length, rel=1e-12)


def test_shrink_rectangle_by_hand() -> None:
    # D = A (1 - r^2) / L = 2000 * 0.84 / 240 = 7.0
    assert shrink_distance(RECT, 0.4) == pytest.approx(7.0)
    shrunk = shrink_polygon(RECT, 0.4)
    assert shrunk is not None and shrunk.dtype == np.float32
    np.testing.assert_allclose(Polygon(shrunk).bounds, (17, 17, 103, 23), atol=1e-6)
    assert polygon_area(shrunk) == pytest.approx(86 * 6)


def test_unclip_rectangle_by_hand() -> None:
    # D' = A r' / L = 2000 * 1.5 / 240 = 12.5; the result is the rectangle with round corners.
    assert unclip_distance(RECT, 1.5) == pytest.approx(12.5)
    grown = unclip_polygon(RECT, 1.5)
    assert grown is not None
    np.testing.assert_allclose(Polygon(grown).bounds, (-2.5, -2.5, 122.5, 42.5), atol=1e-6)
    exact_area = 2000 + 2 * 12.5 * (100 + 20) + math.pi * 12.5**2
    assert polygon_area(grown) == pytest.approx(exact_area, rel=0.01)  # arcs are polylines


def test_offset_round_trip() -> None:
    back = offset_polygon(offset_polygon(RECT, 12.5), -12.5)
    assert _iou(back, RECT) > 0.995


def test_unclip_then_shrink_round_trip() -> None:
    grown = unclip_polygon(RECT, 1.5)
    # Pick r so that the DB shrink offset of the grown polygon is the unclip offset, 12.5.
    r = math.sqrt(1 - 12.5 * polygon_perimeter(grown) / polygon_area(grown))
    assert shrink_distance(grown, r) == pytest.approx(12.5)
    assert _iou(shrink_polygon(grown, r), RECT) > 0.99


def test_shrink_splits_dumbbell_keeps_largest_piece() -> None:
    # Two squares (40x40 and 20x20) joined by a 2-px bridge: the shrink cuts the bridge.
    dumbbell = np.array(
        [[0, 0], [40, 0], [40, 19], [60, 19], [60, 10], [80, 10], [80, 30], [60, 30], [60, 21],
         [40, 21], [40, 40], [0, 40]],
        dtype=np.float64,
    )
    shrunk = offset_polygon(dumbbell, -3.0)
    # Exact x-max is 40 - sqrt(3^2 - 1^2) = 37.17 (the bridge mouth); arcs are within 0.25 px.
    np.testing.assert_allclose(Polygon(shrunk).bounds, (3, 3, 40 - math.sqrt(8), 37), atol=0.25)


@pytest.mark.parametrize(
    "poly",
    [
        np.zeros((0, 2)),
        np.array([[0.0, 0.0], [5.0, 5.0]]),  # fewer than 3 points
        np.array([[0.0, 0.0], [5.0, 5.0], [10.0, 10.0]]),  # collinear: zero area
        np.array([[3.0, 3.0], [3.0, 3.0], [3.0, 3.0], [3.0, 3.0]]),  # one point repeated
        np.array([[0.0, 0.0], [1e-4, 0.0], [0.0, 1e-4]]),  # area 5e-9 px^2
    ],
)
def test_degenerate_polygons_give_none(poly: np.ndarray) -> None:
    assert shrink_distance(poly, 0.4) == 0.0
    assert unclip_distance(poly, 1.5) == 0.0
    assert shrink_polygon(poly, 0.4) is None
    assert unclip_polygon(poly, 1.5) is None
    assert offset_polygon(poly, 2.0) is None


def test_contour_layout_is_accepted() -> None:
    contour = RECT.reshape(-1, 1, 2).astype(np.int32)  # cv2.findContours layout
    assert polygon_area(contour) == pytest.approx(2000)


@pytest.mark.parametrize(
    ("fn", "ratio"),
    [(shrink_polygon, 0.0), (shrink_polygon, 1.0), (shrink_polygon, -0.2), (unclip_polygon, 0.0),
     (unclip_polygon, float("nan"))],
)
def test_bad_ratio_raises_config_error(fn, ratio: float) -> None:
    with pytest.raises(ConfigError, match="ratio"):
        fn(RECT, ratio)


@pytest.mark.parametrize("poly", [np.zeros((4, 3)), np.array([[0, 0], [1, np.nan], [1, 1]])])
def test_malformed_polygon_raises_data_error(poly: np.ndarray) -> None:
    with pytest.raises(DataError):
        shrink_polygon(poly)
