"""Tests for detlab.postprocess.db_polygons.DBPostProcessor on synthetic probability maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from detlab.errors import ConfigError
from detlab.ops.polygons import polygon_area
from detlab.postprocess.db_polygons import DBPostProcessor, order_box_points
from detlab.registry import POSTPROCESSORS

# (row0, row1, col0, col1) inclusive pixel ranges of three text kernels.
RECTS = [(20, 39, 20, 119), (80, 99, 50, 149), (140, 169, 200, 279)]


def _map(rects=RECTS, value: float = 0.9, shape=(200, 300)) -> np.ndarray:
    m = np.zeros(shape, dtype=np.float32)
    for r0, r1, c0, c1 in rects:
        m[r0 : r1 + 1, c0 : c1 + 1] = value
    return m


def _by_x(polys: list[np.ndarray]) -> list[np.ndarray]:
    return sorted(polys, key=lambda p: float(p[:, 0].min()))


def test_three_rectangles_give_three_polygons_with_their_scores() -> None:
    polys, scores = DBPostProcessor()(_map())
    assert len(polys) == 3 and scores.shape == (3,)
    np.testing.assert_allclose(scores, 0.9, atol=1e-6)
    kernels = [Polygon([(c0, r0), (c1, r0), (c1, r1), (c0, r1)]) for r0, r1, c0, c1 in RECTS]
    for k in kernels:  # every kernel is covered by exactly one (larger) polygon
        covering = [p for p in polys if Polygon(p).contains(k)]
        assert len(covering) == 1 and Polygon(covering[0]).area > k.area


def test_area_grows_with_unclip_ratio() -> None:
    areas = []
    for ratio in (0.5, 1.0, 1.5, 2.0):
        polys, _ = DBPostProcessor(polygon_unclip_ratio=ratio)(_map())
        areas.append([polygon_area(p) for p in _by_x(polys)])
    areas = np.array(areas)  # (ratios, regions)
    assert (np.diff(areas, axis=0) > 0).all()


def test_box_mode_by_hand() -> None:
    # Contour of rows 20..39, cols 20..119: a 99 x 19 rectangle, A = 1881, L = 236,
    # D = 1881 * 1.5 / 236; the unclipped kernel's min-area rectangle is the rectangle grown by D.
    polys, _ = DBPostProcessor(output="box", box_unclip_ratio=1.5)(_map(RECTS[:1]))
    assert len(polys) == 1 and polys[0].shape == (4, 2)
    d = 1881 * 1.5 / 236
    expected = [[20 - d, 20 - d], [119 + d, 20 - d], [119 + d, 39 + d], [20 - d, 39 + d]]
    np.testing.assert_allclose(polys[0], expected, atol=1 / 256)  # pyclipper works in 1/256 px


def test_box_mode_returns_four_points_each() -> None:
    polys, scores = DBPostProcessor(output="box")(_map())
    assert len(polys) == 3 and all(p.shape == (4, 2) and p.dtype == np.float32 for p in polys)


def test_mapping_back_to_original_coordinates() -> None:
    base, _ = DBPostProcessor()(_map())
    scale, pad = (0.5, 0.25), (10.0, 4.0)  # (sy, sx), (top, left)
    mapped, _ = DBPostProcessor()(_map(), scale=scale, pad=pad)
    for b, m in zip(_by_x(base), _by_x(mapped)):
        np.testing.assert_allclose(m[:, 0], (b[:, 0] - 4.0) / 0.25, rtol=1e-5)
        np.testing.assert_allclose(m[:, 1], (b[:, 1] - 10.0) / 0.5, rtol=1e-5)


def test_coordinates_are_clipped_to_the_original_image() -> None:
    edge = [(0, 19, 0, 99)]  # touches the top-left corner: the unclipped polygon leaves the image
    polys, _ = DBPostProcessor()(_map(edge), orig_size=(200, 300))
    assert polys[0].min() == 0.0
    polys, _ = DBPostProcessor()(_map(edge), scale=(2.0, 2.0), orig_size=(100, 150))
    assert polys[0][:, 0].max() <= 149 and polys[0][:, 1].max() <= 99


def test_box_threshold_filters_low_mean_regions() -> None:
    m = _map(RECTS[:2])
    m[140:170, 200:280] = 0.4  # above binarize_threshold (0.3), mean below box_threshold (0.6)
    polys, scores = DBPostProcessor(box_threshold=0.6)(m)
    assert len(polys) == 2
    polys, scores = DBPostProcessor(box_threshold=0.35)(m)
    assert len(polys) == 3 and scores.min() == pytest.approx(0.4)


def test_binarize_threshold_splits_regions() -> None:
    m = _map([(20, 39, 20, 119)])
    m[20:40, 60:70] = 0.5  # a weak gap inside one word
    assert len(DBPostProcessor(binarize_threshold=0.3, box_threshold=0.3)(m)[0]) == 1
    assert len(DBPostProcessor(binarize_threshold=0.6, box_threshold=0.3)(m)[0]) == 2


def test_min_size_and_degenerate_regions_are_dropped() -> None:
    m = _map(RECTS[:1])
    m[100, 100] = 0.9  # one pixel: a 1-point contour
    m[150, 50:150] = 0.9  # a 1-pixel line: zero-area contour
    m[180:182, 50:150] = 0.9  # 2 px tall < min_size 3
    polys, _ = DBPostProcessor(min_size=3)(m)
    assert len(polys) == 1
    # Without min_size the 2-px region passes (box mode: polygon mode's 1 % simplification
    # would flatten a 2-px-tall contour); the line and the single pixel never do.
    polys, _ = DBPostProcessor(min_size=0, output="box")(m)
    assert len(polys) == 2


def test_max_candidates_keeps_the_largest() -> None:
    polys, _ = DBPostProcessor(max_candidates=1)(_map())
    assert len(polys) == 1 and polys[0][:, 0].min() > 150  # the 30 x 80 region


def test_empty_map_returns_nothing() -> None:
    polys, scores = DBPostProcessor()(np.zeros((64, 64), dtype=np.float32))
    assert polys == [] and scores.shape == (0,) and scores.dtype == np.float32


def test_tensor_input() -> None:
    polys, _ = DBPostProcessor()(torch.from_numpy(_map())[None])
    assert len(polys) == 3


@pytest.mark.parametrize(
    "pts",
    [
        [[10, 0], [10, 5], [0, 5], [0, 0]],  # clockwise on screen
        [[0, 5], [10, 5], [10, 0], [0, 0]],  # counter-clockwise
        [[0, 5], [0, 0], [10, 0], [10, 5]],  # cv2.boxPoints order
    ],
)
def test_order_box_points_starts_top_left_clockwise(pts) -> None:
    ordered = order_box_points(np.array(pts, dtype=np.float64))
    np.testing.assert_array_equal(ordered, [[0, 0], [10, 0], [10, 5], [0, 5]])


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        (dict(binarize_threshold=1.2), "binarize_threshold"),
        (dict(box_threshold=-0.1), "box_threshold"),
        (dict(max_candidates=0), "max_candidates"),
        (dict(min_size=-1), "min_size"),
        (dict(output="quad"), "output"),
        (dict(box_unclip_ratio=0), "box_unclip_ratio"),
        (dict(polygon_unclip_ratio=-2.0), "polygon_unclip_ratio"),
        (dict(polygon_epsilon=1.0), "polygon_epsilon"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        DBPostProcessor(**kwargs)


def test_registered_and_buildable() -> None:
    post = POSTPROCESSORS.build(dict(type="DBPostProcessor", output="box"))
    assert isinstance(post, DBPostProcessor) and post.output == "box"
