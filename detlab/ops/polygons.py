"""Polygon helpers for text detection: area, perimeter, shrink and unclip (offset) of polygons.

Polygons are ``(K, 2)`` float arrays of (x, y) vertices in absolute pixels, open (the last vertex
is not repeated). The shrink and unclip offsets follow DB (Liao et al., "Real-time Scene Text
Detection with Differentiable Binarization", arXiv:1911.08947, Sec. 3.3), which takes them from
PSENet: a polygon of area ``A`` and perimeter ``L`` is shrunk by ``D = A (1 - r^2) / L`` and a
predicted kernel is expanded ("unclipped") by ``D' = A' r' / L'``. The offset itself is Vatti
clipping (``pyclipper``) with round joins.

Every function is robust on degenerate input (fewer than 3 vertices, zero area, zero perimeter,
an offset that consumes the polygon): it returns ``None`` (or ``0.0`` for a distance) and never
divides by zero. Malformed input (not ``(K, 2)``, non-finite coordinates) raises
:class:`~detlab.errors.DataError`.
"""

from __future__ import annotations

import numpy as np
import pyclipper
from numpy.typing import ArrayLike

from ..errors import ConfigError, DataError

__all__ = [
    "as_polygon",
    "polygon_area",
    "polygon_perimeter",
    "shrink_distance",
    "unclip_distance",
    "offset_polygon",
    "shrink_polygon",
    "unclip_polygon",
]

# pyclipper works on integers; scaling keeps 1/256 px of precision through the offset.
_CLIPPER_SCALE = 256.0
# Max deviation of a rounded join from the true arc, in pixels (clipper's default 0.25 units at
# scale 1): a few vertices per corner, enough for text and cheap for the post-processor.
_ARC_TOLERANCE_PX = 0.25
# Areas / perimeters below this (pixels^2 / pixels) count as degenerate.
_EPS = 1e-6


def as_polygon(polygon: ArrayLike) -> np.ndarray:
    """``polygon`` as a float64 ``(K, 2)`` array; raises DataError when it is not one."""
    arr = np.asarray(polygon, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim == 3 and arr.shape[1] == 1:  # OpenCV contour layout (K, 1, 2)
        arr = arr[:, 0, :]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise DataError(
            f"a polygon must be a (K, 2) array of (x, y) vertices, got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise DataError("polygon has non-finite (NaN or inf) coordinates")
    return arr


def _area(p: np.ndarray) -> float:
    """Shoelace area of a validated float64 ``(K, 2)`` array (K >= 3)."""
    # Centre on the first vertex so large absolute coordinates do not cancel catastrophically.
    x = p[:, 0] - p[0, 0]
    y = p[:, 1] - p[0, 1]
    twice = x[:-1] @ y[1:] - y[:-1] @ x[1:] + x[-1] * y[0] - y[-1] * x[0]
    return float(abs(twice) * 0.5)


def _perimeter(p: np.ndarray) -> float:
    """Closed-boundary length of a validated float64 ``(K, 2)`` array (K >= 2)."""
    edges = np.empty_like(p)
    edges[:-1] = p[1:] - p[:-1]
    edges[-1] = p[0] - p[-1]
    return float(np.sqrt((edges * edges).sum(axis=1)).sum())


def polygon_area(polygon: ArrayLike) -> float:
    """Absolute area (pixels^2) by the shoelace formula; 0.0 for fewer than 3 vertices.

    Computed in float64 (``cv2.contourArea`` needs float32/int32 input and loses precision on
    large coordinates). For a self-intersecting polygon this is the signed-area sum, like OpenCV.
    """
    p = as_polygon(polygon)
    return _area(p) if len(p) >= 3 else 0.0


def polygon_perimeter(polygon: ArrayLike) -> float:
    """Length (pixels) of the closed boundary; 0.0 for fewer than 2 vertices."""
    p = as_polygon(polygon)
    return _perimeter(p) if len(p) >= 2 else 0.0


def _check_ratio(ratio: float, name: str, low: float, high: float | None) -> None:
    bad = not np.isfinite(ratio) or ratio <= low or (high is not None and ratio >= high)
    if bad:
        upper = f" and < {high}" if high is not None else ""
        raise ConfigError(f"{name} must be > {low}{upper}, got {ratio!r}")


def _offset_distance(p: np.ndarray, factor: float) -> float:
    """``A * factor / L`` for a validated array; 0.0 when degenerate."""
    if len(p) < 3:
        return 0.0
    area, length = _area(p), _perimeter(p)
    if area < _EPS or length < _EPS:
        return 0.0
    return area * factor / length


def shrink_distance(polygon: ArrayLike, ratio: float = 0.4) -> float:
    """DB shrink offset ``D = A (1 - r^2) / L`` in pixels (0.0 for a degenerate polygon).

    Args:
        polygon: ``(K, 2)`` vertices.
        ratio: shrink ratio ``r`` in (0, 1); DB uses 0.4.
    """
    _check_ratio(ratio, "shrink ratio", 0.0, 1.0)
    return _offset_distance(as_polygon(polygon), 1.0 - ratio * ratio)


def unclip_distance(polygon: ArrayLike, ratio: float = 1.5) -> float:
    """DB unclip offset ``D' = A' r' / L'`` in pixels (0.0 for a degenerate polygon).

    Args:
        polygon: ``(K, 2)`` vertices of the predicted (shrunk) region.
        ratio: unclip ratio ``r'`` > 0; DB uses 1.5.
    """
    _check_ratio(ratio, "unclip ratio", 0.0, None)
    return _offset_distance(as_polygon(polygon), ratio)


def _offset(p: np.ndarray, distance: float) -> np.ndarray | None:
    """Offset of a validated, non-degenerate float64 array (see :func:`offset_polygon`)."""
    offsetter = pyclipper.PyclipperOffset()
    offsetter.ArcTolerance = _ARC_TOLERANCE_PX * _CLIPPER_SCALE
    offsetter.AddPath(
        np.round(p * _CLIPPER_SCALE).astype(np.int64).tolist(),
        pyclipper.JT_ROUND,
        pyclipper.ET_CLOSEDPOLYGON,
    )
    pieces = [q for q in offsetter.Execute(float(distance) * _CLIPPER_SCALE) if len(q) >= 3]
    if not pieces:
        return None
    # Clipper drops zero-area output, so a single piece needs no area check (hot path).
    arrays = [np.asarray(q, dtype=np.float64) / _CLIPPER_SCALE for q in pieces]
    best = arrays[0] if len(arrays) == 1 else max(arrays, key=_area)
    return best.astype(np.float32)


def offset_polygon(polygon: ArrayLike, distance: float) -> np.ndarray | None:
    """Offset a polygon by ``distance`` pixels (> 0 grows, < 0 shrinks) with round joins.

    Vatti clipping can split a shrunk polygon (a dumbbell) into pieces; the largest piece is
    returned. Returns ``None`` when the polygon is degenerate or the offset consumes it.

    Returns:
        float32 ``(M, 2)`` vertices, or ``None``.
    """
    p = as_polygon(polygon)
    if len(p) < 3 or _area(p) < _EPS or not np.isfinite(distance):
        return None
    if distance == 0:
        return p.astype(np.float32)
    return _offset(p, distance)


def shrink_polygon(polygon: ArrayLike, ratio: float = 0.4) -> np.ndarray | None:
    """Shrink a text polygon by the DB offset ``D = A (1 - r^2) / L`` (the "kernel" target).

    Args:
        polygon: ``(K, 2)`` vertices in pixels.
        ratio: shrink ratio ``r`` in (0, 1); smaller shrinks more.

    Returns:
        float32 ``(M, 2)`` vertices, or ``None`` for a degenerate polygon or one too thin to
        survive the shrink.
    """
    _check_ratio(ratio, "shrink ratio", 0.0, 1.0)
    p = as_polygon(polygon)
    d = _offset_distance(p, 1.0 - ratio * ratio)
    return _offset(p, -d) if d > 0 else None


def unclip_polygon(polygon: ArrayLike, ratio: float = 1.5) -> np.ndarray | None:
    """Expand a predicted kernel by the DB unclip offset ``D' = A' r' / L'``.

    Args:
        polygon: ``(K, 2)`` vertices in pixels.
        ratio: unclip ratio ``r'`` > 0; larger expands more.

    Returns:
        float32 ``(M, 2)`` vertices, or ``None`` for a degenerate polygon.
    """
    _check_ratio(ratio, "unclip ratio", 0.0, None)
    p = as_polygon(polygon)
    d = _offset_distance(p, ratio)
    return _offset(p, d) if d > 0 else None
