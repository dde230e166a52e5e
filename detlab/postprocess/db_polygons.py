"""DB post-processing: probability map -> text polygons or boxes (arXiv:1911.08947, Sec. 3.5).

The probability map is binarized at a fixed threshold; every connected region's outer contour is
a candidate "kernel". A candidate is kept when its mean probability reaches ``box_threshold``
and its minimum-area rectangle is at least ``min_size`` pixels on the short side; it is then
expanded ("unclipped") by ``D' = A' r' / L'`` to recover the full word, and mapped back to the
original image with ``orig = (input - pad) / scale``.
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
import torch

from ..checks import check_choice, check_float, check_int
from ..errors import DataError
from ..ops.coords import polygons_to_original
from ..ops.polygons import unclip_polygon
from ..registry import POSTPROCESSORS

__all__ = ["DBPostProcessor", "order_box_points"]


def order_box_points(points: np.ndarray) -> np.ndarray:
    """Order 4 corners, given in cyclic order (as ``cv2.boxPoints`` returns them), clockwise on
    screen (y down), starting at the corner with the smallest ``x + y`` (the top-left one for
    boxes rotated by less than 45 degrees). Plain Python: 4 points are cheaper than numpy calls.
    """
    pts = [(float(x), float(y)) for x, y in points]
    nxt = [pts[(i + 1) % 4] for i in range(4)]
    twice_area = sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(pts, nxt))
    if twice_area < 0:  # counter-clockwise on screen
        pts.reverse()
    start = min(range(4), key=lambda i: pts[i][0] + pts[i][1])
    return np.array(pts[start:] + pts[:start], dtype=np.float64)


@POSTPROCESSORS.register()
class DBPostProcessor:
    """Turn a DB probability map into polygons (or rotated boxes) in original image pixels.

    Args:
        binarize_threshold: probability above which a pixel belongs to a text kernel (DB: 0.3).
        box_threshold: minimum mean probability inside a candidate region (DB: 0.6 or 0.7).
        max_candidates: at most this many regions (the largest) are considered per image.
        min_size: candidates whose minimum-area rectangle has a side shorter than this (in
            probability-map pixels, before unclipping) are dropped.
        output: ``"polygon"`` (simplified contour, unclipped) or ``"box"`` (4-point
            minimum-area rectangle of the unclipped kernel).
        box_unclip_ratio: unclip ratio ``r'`` used in ``"box"`` mode (DB: 1.5).
        polygon_unclip_ratio: unclip ratio ``r'`` used in ``"polygon"`` mode (larger than for
            boxes because the simplified contour hugs the kernel; DB uses 1.5 to 2.0).
        polygon_epsilon: contour simplification tolerance as a fraction of the contour's
            perimeter (``cv2.approxPolyDP``; 0 keeps every contour vertex).

    ``sweepable``: every setting (all of them act on the probability map alone).

    ``__call__(prob_map, scale, pad, orig_size)`` returns ``(polygons, scores)``: a list of
    float32 ``(K, 2)`` arrays (x, y) in original image pixels and float32 scores ``(N,)``.
    """

    sweepable: tuple[str, ...] = (
        "binarize_threshold", "box_threshold", "max_candidates", "min_size", "output",
        "box_unclip_ratio", "polygon_unclip_ratio", "polygon_epsilon",
    )

    def __init__(
        self,
        binarize_threshold: float = 0.3,
        box_threshold: float = 0.6,
        max_candidates: int = 1000,
        min_size: float = 3.0,
        output: Literal["polygon", "box"] = "polygon",
        box_unclip_ratio: float = 1.5,
        polygon_unclip_ratio: float = 2.0,
        polygon_epsilon: float = 0.01,
    ) -> None:
        own = "DBPostProcessor"
        for name, value in (("binarize_threshold", binarize_threshold),
                            ("box_threshold", box_threshold),
                            ("polygon_epsilon", polygon_epsilon)):
            check_float(own, name, value, low=0.0, high=1.0, high_open=True)
        check_int(own, "max_candidates", max_candidates, low=1)
        check_float(own, "min_size (pixels)", min_size, low=0.0)
        check_choice(own, "output", output, ("polygon", "box"))
        for name, value in (("box_unclip_ratio", box_unclip_ratio),
                            ("polygon_unclip_ratio", polygon_unclip_ratio)):
            check_float(own, name, value, low=0.0, low_open=True)
        self.binarize_threshold = float(binarize_threshold)
        self.box_threshold = float(box_threshold)
        self.max_candidates = max_candidates
        self.min_size = float(min_size)
        self.output = output
        self.box_unclip_ratio = float(box_unclip_ratio)
        self.polygon_unclip_ratio = float(polygon_unclip_ratio)
        self.polygon_epsilon = float(polygon_epsilon)

    def __call__(
        self,
        prob_map: np.ndarray | torch.Tensor,
        scale: tuple[float, float] = (1.0, 1.0),
        pad: tuple[float, float] = (0.0, 0.0),
        orig_size: tuple[int, int] | None = None,
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Polygons and scores for one image.

        Args:
            prob_map: ``(H, W)`` (or ``(1, H, W)``) probabilities in [0, 1] at input resolution.
            scale: ``(sy, sx)`` with ``input = orig * scale + pad``.
            pad: ``(top, left)`` padding added before the image, in input pixels.
            orig_size: ``(h, w)`` of the original image; coordinates are clipped to it.

        Returns:
            ``(polygons, scores)``: float32 ``(K, 2)`` arrays in original pixels (K = 4 in box
            mode), float32 ``(N,)`` mean kernel probabilities.
        """
        prob = _as_map(prob_map)
        sy, sx = float(scale[0]), float(scale[1])
        if sy <= 0 or sx <= 0:
            raise DataError(f"DBPostProcessor: scale must be positive (sy, sx), got {scale!r}")
        bitmap = (prob > self.binarize_threshold).astype(np.uint8)
        # External contours only: a hole inside a word is not a second word.
        contours, _ = cv2.findContours(bitmap, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if len(contours) > self.max_candidates:
            areas = np.array([cv2.contourArea(c) for c in contours])
            keep = np.argsort(-areas, kind="stable")[: self.max_candidates]
            contours = [contours[i] for i in keep]

        polygons: list[np.ndarray] = []
        scores: list[float] = []
        for contour in contours:
            if len(contour) < 3:
                continue
            rect = cv2.minAreaRect(contour)
            if min(rect[1]) < self.min_size:
                continue
            score = _mean_inside(prob, contour)
            if score < self.box_threshold:
                continue
            poly = self._expand(contour[:, 0, :], rect)
            if poly is None:
                continue
            poly = _to_original(poly, sy, sx, pad, orig_size)
            polygons.append(poly)
            scores.append(score)
        return polygons, np.asarray(scores, dtype=np.float32)

    def _expand(self, contour: np.ndarray, rect: tuple) -> np.ndarray | None:
        """Unclip a kernel contour ``(K, 2)`` int32 with min-area rectangle ``rect`` (by mode)."""
        if self.output == "box":
            grown = unclip_polygon(cv2.boxPoints(rect), self.box_unclip_ratio)
            if grown is None:
                return None
            return order_box_points(cv2.boxPoints(cv2.minAreaRect(grown)))
        if self.polygon_epsilon > 0:
            eps = self.polygon_epsilon * cv2.arcLength(contour, True)
            contour = cv2.approxPolyDP(contour, eps, True)[:, 0, :]
        if len(contour) < 3:
            return None
        grown = unclip_polygon(contour, self.polygon_unclip_ratio)
        return None if grown is None else grown.astype(np.float64)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"DBPostProcessor({args})"


def _as_map(prob_map: Any) -> np.ndarray:
    if isinstance(prob_map, torch.Tensor):
        prob_map = prob_map.detach().float().cpu().numpy()
    prob = np.asarray(prob_map, dtype=np.float32)
    if prob.ndim == 3 and prob.shape[0] == 1:
        prob = prob[0]
    if prob.ndim != 2:
        raise DataError(
            f"DBPostProcessor expects an (H, W) probability map, got shape {prob.shape}"
        )
    return prob


def _mean_inside(prob: np.ndarray, contour: np.ndarray) -> float:
    """Mean of ``prob`` over the filled contour, computed in its bounding rectangle only."""
    x, y, w, h = cv2.boundingRect(contour)
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(mask, [contour - np.array([x, y], dtype=contour.dtype)], 1)
    return float(cv2.mean(prob[y : y + h, x : x + w], mask=mask)[0])


def _to_original(
    poly: np.ndarray,
    sy: float,
    sx: float,
    pad: tuple[float, float],
    orig_size: tuple[int, int] | None,
) -> np.ndarray:
    """Input pixels -> original pixels, clipped to ``[0, w] x [0, h]`` when the size is known
    (:func:`detlab.ops.coords.polygons_to_original`, the convention every head shares)."""
    meta: dict = {"scale": (sy, sx), "pad": tuple(pad)}
    if orig_size is not None:
        meta["orig_size"] = tuple(orig_size)
    return polygons_to_original([poly], meta)[0]
