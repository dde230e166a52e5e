"""Training targets of DB text detection (Liao et al., arXiv:1911.08947, Sec. 3.3).

For every word polygon ``G`` (area ``A``, perimeter ``L``) with offset ``D = A (1 - r^2) / L``:

* probability map: the polygon shrunk by ``D`` (Vatti clipping) is filled with 1;
* probability mask: 1 everywhere except inside ignored words (``###``) and words that are too
  small (shorter side of the bounding box < ``min_text_size`` px) or that vanish when shrunk;
* threshold map: inside the band between ``G`` shrunk and ``G`` dilated by ``D``, the value
  ``1 - min(dist(pixel, border of G) / D, 1)``, rescaled to ``[thresh_min, thresh_max]``;
  ``thresh_min`` elsewhere. Overlapping words keep the larger value;
* threshold mask: 1 inside every kept word dilated by ``D`` (round joins: the band within ``D``
  of its border plus its shrunk kernel).

Pixel ``(row i, col j)`` is sampled at the point ``(x=j, y=i)``, the convention of
``cv2.fillPoly``. The distance to the border is exact point-to-segment distance, computed only
inside each word's dilated bounding box and vectorised over the word's edges: about 25 ms on
one core for a 1024 x 1024 image with 100 words, a third of it in the distances and most of
the rest in allocating the four maps and per-word clipper/fill calls (``tools/bench_db.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike

from ..errors import ConfigError, DataError
from ..ops.polygons import as_polygon, offset_polygon, shrink_distance

__all__ = ["make_db_targets", "region_reasons", "DBTargetGenerator", "REGION_REASONS"]

#: Why a word does (``"kept"``) or does not become text in the probability map, in the order
#: :func:`region_reasons` tests them: ``"degenerate"`` (< 3 vertices), ``"ignore"`` (``###``),
#: ``"below_min_text_size"`` (shorter box side < ``min_text_size``), ``"shrunk_to_nothing"``
#: (zero offset or the Vatti shrink consumes it).
REGION_REASONS = ("kept", "degenerate", "ignore", "below_min_text_size", "shrunk_to_nothing")


def _fill(canvas: np.ndarray, polygon: np.ndarray, value: float) -> None:
    cv2.fillPoly(canvas, [np.round(polygon).astype(np.int32).reshape(-1, 1, 2)], value)


def _segment_distance(polygon: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Distance ``(h, w)`` from each grid point to the closest edge of the closed polygon.

    ``xs`` ``(w,)`` and ``ys`` ``(h,)`` are pixel coordinates; edges are vectorised as a leading
    axis, so the work is ``K * h * w`` for ``K`` edges. In-place updates keep it to two
    ``(K, h, w)`` buffers (this is the hot loop of target generation).
    """
    a = polygon
    ab = np.concatenate((a[1:], a[:1])) - a  # (K, 2) edge vectors (np.roll is 10x slower)
    ab_len2 = (ab * ab).sum(axis=1)
    # Zero-length edges (repeated vertices) reduce to point distances: t = 0 below.
    inv_len2 = np.divide(1.0, ab_len2, out=np.zeros_like(ab_len2), where=ab_len2 > 1e-12)
    abx, aby = ab[:, 0, None, None], ab[:, 1, None, None]
    px = xs[None, None, :] - a[:, 0, None, None]  # (K, 1, w)
    py = ys[None, :, None] - a[:, 1, None, None]  # (K, h, 1)
    inv = inv_len2[:, None, None]
    # (K, h, w): position of the point's projection along each edge, 0 at a and 1 at b.
    t = (px * (abx * inv)) + (py * (aby * inv))
    np.maximum(t, 0.0, out=t)  # clamp to the segment (np.clip's wrapper costs more here)
    np.minimum(t, 1.0, out=t)
    dx = t * abx
    np.subtract(px, dx, out=dx)
    dx *= dx
    t *= aby
    np.subtract(py, t, out=t)
    t *= t
    dx += t
    return np.sqrt(dx.min(axis=0))


def _draw_border(
    border: np.ndarray,
    thresh_mask: np.ndarray,
    polygon: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    d: float,
) -> None:
    """Draw one word's band into the threshold canvases, in place.

    ``border = max(border, 1 - min(dist / d, 1))`` and ``thresh_mask = 1 where dist <= d``,
    inside the word's bounding box ``[lo, hi]`` (x, y) grown by ``d``. The band ``dist <= d``
    plus the shrunk kernel is exactly the polygon dilated by ``d`` with round joins, so no
    dilated polygon is needed.
    """
    height, width = border.shape
    x0, y0 = max(int(np.floor(lo[0] - d)), 0), max(int(np.floor(lo[1] - d)), 0)
    x1 = min(int(np.ceil(hi[0] + d)), width - 1)
    y1 = min(int(np.ceil(hi[1] + d)), height - 1)
    if x1 < x0 or y1 < y0:  # entirely outside the image
        return
    xs = np.arange(x0, x1 + 1, dtype=np.float32)
    ys = np.arange(y0, y1 + 1, dtype=np.float32)
    value = _segment_distance(polygon.astype(np.float32), xs, ys)
    value *= np.float32(1.0 / d)
    mask_region = thresh_mask[y0 : y1 + 1, x0 : x1 + 1]
    np.maximum(mask_region, value <= 1.0, out=mask_region)
    np.minimum(value, 1.0, out=value)
    np.subtract(1.0, value, out=value)
    region = border[y0 : y1 + 1, x0 : x1 + 1]
    np.maximum(region, value, out=region)


def make_db_targets(
    polygons: Sequence[ArrayLike],
    ignore: ArrayLike | None,
    height: int,
    width: int,
    shrink_ratio: float = 0.4,
    thresh_min: float = 0.3,
    thresh_max: float = 0.7,
    min_text_size: float = 8.0,
) -> dict[str, np.ndarray]:
    """DB probability / threshold targets for one image.

    Args:
        polygons: word polygons, each ``(K, 2)`` (x, y) pixels in the target map's coordinates.
        ignore: ``(N,)`` bool, True for words not to learn from (``###``); ``None`` = none.
        height, width: size of the maps in pixels.
        shrink_ratio: ``r`` in (0, 1) of the offset ``D = A (1 - r^2) / L``.
        thresh_min, thresh_max: threshold-map values far from and on a word border.
        min_text_size: words whose bounding box is shorter than this (pixels) are ignored.

    Returns:
        ``prob_map``, ``prob_mask``, ``thresh_map``, ``thresh_mask``: float32 ``(height, width)``.
    """
    _validate(shrink_ratio, thresh_min, thresh_max, min_text_size)
    if int(height) <= 0 or int(width) <= 0:
        raise DataError(f"target map size must be positive, got height={height}, width={width}")
    height, width = int(height), int(width)
    n = len(polygons)
    ignore_arr = np.zeros(n, dtype=bool) if ignore is None else _as_bool(ignore)
    if len(ignore_arr) != n:
        raise DataError(f"got {n} polygons but {len(ignore_arr)} ignore flags")

    prob_map = np.zeros((height, width), dtype=np.float32)
    prob_mask = np.ones((height, width), dtype=np.float32)
    border = np.zeros((height, width), dtype=np.float32)
    thresh_mask = np.zeros((height, width), dtype=np.float32)

    for raw, skip in zip(polygons, ignore_arr):
        poly, reason, d, shrunk = _decide(raw, bool(skip), shrink_ratio, min_text_size)
        if reason == "degenerate":
            continue  # nothing to fill or to mask
        if shrunk is None:
            _fill(prob_mask, poly, 0.0)
            continue
        _fill(prob_map, shrunk, 1.0)
        _draw_border(border, thresh_mask, poly, poly.min(axis=0), poly.max(axis=0), d)

    # Band + kernels = dilated words (each kernel lies inside its own word's dilation).
    np.maximum(thresh_mask, prob_map, out=thresh_mask)
    border *= np.float32(thresh_max - thresh_min)  # in place: the maps are 4 MB each at 1024^2
    border += np.float32(thresh_min)
    return {
        "prob_map": prob_map,
        "prob_mask": prob_mask,
        "thresh_map": border,
        "thresh_mask": thresh_mask,
    }


def _decide(raw: ArrayLike, skip: bool, shrink_ratio: float, min_text_size: float
            ) -> tuple[np.ndarray, str, float, np.ndarray | None]:
    """One word's fate: ``(polygon, reason, offset D, shrunk kernel or None)``; the single
    place where :func:`make_db_targets` and :func:`region_reasons` decide (REGION_REASONS)."""
    poly = as_polygon(raw)
    if len(poly) < 3:
        return poly, "degenerate", 0.0, None
    if skip:
        return poly, "ignore", 0.0, None
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    if min(hi[0] - lo[0], hi[1] - lo[1]) < min_text_size:
        return poly, "below_min_text_size", 0.0, None
    d = shrink_distance(poly, shrink_ratio)
    shrunk = offset_polygon(poly, -d) if d > 0 else None
    if shrunk is None:
        return poly, "shrunk_to_nothing", d, None
    return poly, "kept", d, shrunk


def region_reasons(
    polygons: Sequence[ArrayLike],
    ignore: ArrayLike | None,
    shrink_ratio: float = 0.4,
    min_text_size: float = 8.0,
) -> list[str]:
    """Per word, why it is or is not learnt as text by :func:`make_db_targets` with the same
    arguments: one of :data:`REGION_REASONS` (``"kept"`` = drawn into ``prob_map``).

    ``polygons`` are in the target map's pixels (after resize), ``ignore`` ``(N,)`` bool.
    """
    n = len(polygons)
    flags = np.zeros(n, dtype=bool) if ignore is None else _as_bool(ignore)
    if len(flags) != n:
        raise DataError(f"got {n} polygons but {len(flags)} ignore flags")
    return [_decide(p, bool(f), shrink_ratio, min_text_size)[1] for p, f in zip(polygons, flags)]


def _as_bool(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=bool).reshape(-1)


def _validate(
    shrink_ratio: float, thresh_min: float, thresh_max: float, min_text_size: float
) -> None:
    if not (0.0 < shrink_ratio < 1.0):
        raise ConfigError(f"shrink_ratio must be in (0, 1), got {shrink_ratio!r}")
    if not (0.0 <= thresh_min < thresh_max <= 1.0):
        raise ConfigError(
            "thresh_min and thresh_max must satisfy 0 <= thresh_min < thresh_max <= 1, got "
            f"thresh_min={thresh_min!r}, thresh_max={thresh_max!r}"
        )
    if not (min_text_size >= 0.0):
        raise ConfigError(f"min_text_size must be >= 0 pixels, got {min_text_size!r}")


class DBTargetGenerator:
    """Callable holding the DB target parameters, for use in a dataset or a head.

    Args:
        shrink_ratio: ``r`` in (0, 1) of the shrink offset ``D = A (1 - r^2) / L`` (DB: 0.4).
        thresh_min, thresh_max: threshold-map range, ``0 <= thresh_min < thresh_max <= 1``
            (DB: 0.3, 0.7).
        min_text_size: words with a bounding-box side shorter than this many pixels are ignored
            (DB: 8).

    ``gen(polygons, ignore, height, width)`` returns :func:`make_db_targets`' dict.
    """

    def __init__(
        self,
        shrink_ratio: float = 0.4,
        thresh_min: float = 0.3,
        thresh_max: float = 0.7,
        min_text_size: float = 8.0,
    ) -> None:
        _validate(shrink_ratio, thresh_min, thresh_max, min_text_size)
        self.shrink_ratio = float(shrink_ratio)
        self.thresh_min = float(thresh_min)
        self.thresh_max = float(thresh_max)
        self.min_text_size = float(min_text_size)

    def __call__(
        self,
        polygons: Sequence[ArrayLike],
        ignore: ArrayLike | None,
        height: int,
        width: int,
    ) -> dict[str, np.ndarray]:
        """See :func:`make_db_targets`."""
        return make_db_targets(
            polygons,
            ignore,
            height,
            width,
            shrink_ratio=self.shrink_ratio,
            thresh_min=self.thresh_min,
            thresh_max=self.thresh_max,
            min_text_size=self.min_text_size,
        )

    def explain(self, polygons: Sequence[ArrayLike], ignore: ArrayLike | None) -> list[str]:
        """Per word, why it is (``"kept"``) or is not text in the maps: :func:`region_reasons`
        with this generator's ``shrink_ratio`` and ``min_text_size``."""
        return region_reasons(polygons, ignore, self.shrink_ratio, self.min_text_size)

    def __repr__(self) -> str:
        return (
            f"DBTargetGenerator(shrink_ratio={self.shrink_ratio}, thresh_min={self.thresh_min}, "
            f"thresh_max={self.thresh_max}, min_text_size={self.min_text_size})"
        )
