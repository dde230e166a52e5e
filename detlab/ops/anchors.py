"""Anchor boxes: recipe checks, per-location shapes, grids, coverage and k-means suggestions.

Conventions: an anchor of ``size`` s and aspect ratio r has width ``s / sqrt(r)`` and height
``s * sqrt(r)`` (area s², **ratio = height / width**, torchvision's convention: r = 2 is tall and
narrow like a "1"). Anchors are placed at cell centres ``((x + 0.5) * stride, (y + 0.5) * stride)``
of each feature map and are not rounded to whole pixels (torchvision's ``AnchorGenerator`` rounds
the half-sizes, which turns a 4 px anchor of ratio 2 into 2 x 6 px; at SVHN digit sizes that
matters). Boxes are xyxy absolute pixels.

Coverage (how well a set of anchors can match the ground truth) is reported two ways:

* *shape* IoU: box and anchor share a centre (what k-means optimizes, YOLO's "best possible
  recall"), an upper bound;
* *grid* IoU: the best anchor actually placed on the feature grids (what the RPN matcher sees);
  lower for small boxes on coarse strides.

k-means with the ``1 - IoU`` distance follows YOLO9000 (Redmon & Farhadi 2016, arXiv:1612.08242).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..checks import is_number
from ..errors import ConfigError

__all__ = [
    "AnchorConfig",
    "anchor_config",
    "cell_anchors",
    "grid_anchors",
    "anchor_shapes",
    "wh_iou",
    "kmeans_iou",
    "best_shape_iou",
    "best_grid_iou",
    "coverage",
    "suggest_anchors",
]

AnchorConfig = tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]


def _positive_numbers(value: Any) -> tuple[float, ...] | None:
    """``value`` as a tuple of positive floats (a bare number gives a 1-tuple), else None."""
    if is_number(value):
        value = (value,)
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        return None
    if not all(is_number(v) and v > 0 for v in value):
        return None
    return tuple(float(v) for v in value)


def anchor_config(
    anchor_sizes: Sequence[Any],
    aspect_ratios: Sequence[Any],
    strides: Sequence[int] | None = None,
    owner: str = "anchors",
) -> AnchorConfig:
    """Check and normalize recipe anchors to ``(sizes per level, ratios per level)``.

    Args:
        anchor_sizes: one entry per feature level, finest first; an entry is a size in px or a
            list of sizes (``(32, 64, 128)`` or ``((32,), (64,), (128,))`` or
            ``((16, 24), (32, 48))``).
        aspect_ratios: height / width ratios shared by every level (``(0.5, 1.0, 2.0)``), or one
            list per level.
        strides: the feature levels the anchors go on; their count must equal the number of
            size groups.
        owner: name used in error messages.

    Returns:
        ``(sizes, ratios)``, tuples of per-level tuples of floats, with the same number of
        anchors per location (``len(sizes[l]) * len(ratios[l])``) on every level, as a shared
        RPN head needs.

    Raises:
        ConfigError: naming the argument, the bad value and what was expected.
    """
    if isinstance(anchor_sizes, (str, bytes)) or not isinstance(anchor_sizes, Sequence) or (
        not anchor_sizes
    ):
        raise ConfigError(
            f"{owner}: anchor_sizes must be a non-empty list with one entry per feature level, "
            f"got {anchor_sizes!r}"
        )
    sizes = tuple(_positive_numbers(s) for s in anchor_sizes)
    if any(s is None for s in sizes):
        raise ConfigError(
            f"{owner}: every anchor_sizes entry must be a positive number or a non-empty list "
            f"of positive numbers (px), got {anchor_sizes!r}"
        )
    flat = _positive_numbers(aspect_ratios)
    if flat is not None:
        ratios = (flat,) * len(sizes)
    else:
        per_level = (
            tuple(_positive_numbers(r) for r in aspect_ratios)
            if isinstance(aspect_ratios, Sequence) and not isinstance(aspect_ratios, str)
            else (None,)
        )
        if any(r is None for r in per_level) or len(per_level) != len(sizes):
            raise ConfigError(
                f"{owner}: aspect_ratios must be positive height/width ratios shared by every "
                f"level, e.g. (0.5, 1.0, 2.0), or one such list per level ({len(sizes)} "
                f"levels), got {aspect_ratios!r}"
            )
        ratios = per_level
    if strides is not None and len(strides) != len(sizes):
        raise ConfigError(
            f"{owner}: anchor_sizes has {len(sizes)} size group(s) but the model gives "
            f"{len(strides)} feature level(s) (strides {list(strides)}); give exactly one size "
            f"group per level, e.g. {tuple((8 * s,) for s in strides)!r}"
        )
    counts = [len(s) * len(r) for s, r in zip(sizes, ratios)]  # type: ignore[arg-type]
    if len(set(counts)) != 1:
        raise ConfigError(
            f"{owner}: every level needs the same number of anchors per location (the RPN head "
            f"is shared across levels); sizes x ratios per level give {counts}"
        )
    return sizes, ratios  # type: ignore[return-value]


def cell_anchors(sizes: Sequence[float], ratios: Sequence[float]) -> Tensor:
    """``Tensor[A, 4]`` xyxy anchors centred on (0, 0), ``A = len(ratios) * len(sizes)``,
    ratio-major (the order of torchvision's ``AnchorGenerator``)."""
    s = torch.as_tensor(sizes, dtype=torch.float32)
    r = torch.as_tensor(ratios, dtype=torch.float32).sqrt()
    w = (s[None, :] / r[:, None]).reshape(-1)
    h = (s[None, :] * r[:, None]).reshape(-1)
    return torch.stack([-w, -h, w, h], dim=1) / 2


def anchor_shapes(
    sizes: Sequence[Sequence[float]], ratios: Sequence[Sequence[float]]
) -> np.ndarray:
    """``(K, 2)`` float64 (w, h) of every anchor shape over all levels (duplicates kept)."""
    rows = [cell_anchors(s, r).double().numpy() for s, r in zip(sizes, ratios)]
    boxes = np.concatenate(rows) if rows else np.zeros((0, 4))
    return np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def grid_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    cells: Sequence[Tensor],
    device: torch.device | str | None = None,
) -> Tensor:
    """All anchors of all levels, ``Tensor[sum(H_l * W_l * A), 4]`` xyxy px.

    Order: level, then row y, column x, then anchor (the order of torchvision's
    ``concat_box_prediction_layers``, so row i matches the i-th RPN prediction).
    """
    out = []
    for (h, w), stride, cell in zip(feature_sizes, strides, cells):
        cell = cell.to(device)
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
        out.append((centres + cell[None]).reshape(-1, 4))
    return torch.cat(out) if out else torch.zeros((0, 4), device=device)


# -- analysis (numpy; used by `detlab anchors`) -----------------------------------------------
def wh_iou(wh1: np.ndarray, wh2: np.ndarray) -> np.ndarray:
    """IoU ``(N, K)`` of boxes ``(N, 2)`` (w, h) and ``(K, 2)`` (w, h) that share a centre."""
    wh1, wh2 = np.asarray(wh1, np.float64), np.asarray(wh2, np.float64)
    inter = np.minimum(wh1[:, None, 0], wh2[None, :, 0]) * np.minimum(
        wh1[:, None, 1], wh2[None, :, 1]
    )
    union = (wh1[:, 0] * wh1[:, 1])[:, None] + (wh2[:, 0] * wh2[:, 1])[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def kmeans_iou(wh: np.ndarray, k: int, iters: int = 100, seed: int = 0) -> np.ndarray:
    """k-means of box shapes ``(N, 2)`` (w, h) with distance ``1 - IoU`` (arXiv:1612.08242).

    Seeding is k-means++ with the same distance; each centre moves to the median (w, h) of its
    members (robust to outliers). Returns ``(k', 2)`` centres sorted by area, ``k' = min(k,
    number of distinct shapes)``. Deterministic for a given ``seed``.
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if k < 1 or len(wh) == 0:
        raise ValueError(f"kmeans_iou needs k >= 1 and boxes, got k={k}, {len(wh)} boxes")
    distinct = np.unique(wh, axis=0)
    k = min(k, len(distinct))
    rng = np.random.default_rng(seed)
    centres = [distinct[rng.integers(len(distinct))]]
    for _ in range(1, k):  # k-means++: next seed with probability ~ squared distance
        d = (1.0 - wh_iou(distinct, np.array(centres)).max(axis=1)) ** 2
        p = d / d.sum() if d.sum() > 0 else None
        centres.append(distinct[rng.choice(len(distinct), p=p)])
    c = np.array(centres)
    for _ in range(iters):
        assign = wh_iou(wh, c).argmax(axis=1)
        new = np.array([np.median(wh[assign == j], axis=0) if (assign == j).any() else c[j]
                        for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c[np.argsort(c[:, 0] * c[:, 1], kind="stable")]


def best_shape_iou(wh: np.ndarray, anchor_wh: np.ndarray) -> np.ndarray:
    """``(N,)`` best IoU of each box shape with any anchor shape, centres aligned."""
    return wh_iou(wh, anchor_wh).max(axis=1)


def best_grid_iou(
    boxes: np.ndarray,
    strides: Sequence[int],
    sizes: Sequence[Sequence[float]],
    ratios: Sequence[Sequence[float]],
) -> np.ndarray:
    """``(N,)`` best IoU of each xyxy box with the anchors placed on the feature grids.

    Exact for unbounded grids: along each axis the IoU with a fixed anchor shape is unimodal in
    the anchor's centre, so the best anchor centre is one of the two grid centres around the
    box centre on each axis.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    best = np.zeros(len(boxes))
    ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
    wh = boxes[:, 2:] - boxes[:, :2]
    for stride, s, r in zip(strides, sizes, ratios):
        shapes = anchor_shapes([s], [r])  # (A, 2)
        base = np.floor(ctr / stride - 0.5)  # grid index left of / above the centre
        for dx in (0, 1):
            for dy in (0, 1):
                a_ctr = (base + np.array([dx, dy]) + 0.5) * stride  # (N, 2)
                lo = np.maximum(ctr[:, None] - wh[:, None] / 2, a_ctr[:, None] - shapes[None] / 2)
                hi = np.minimum(ctr[:, None] + wh[:, None] / 2, a_ctr[:, None] + shapes[None] / 2)
                inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)  # (N, A)
                union = np.prod(wh, axis=1)[:, None] + np.prod(shapes, axis=1)[None] - inter
                best = np.maximum(best, (inter / np.maximum(union, 1e-12)).max(axis=1))
    return best


def coverage(best_iou: np.ndarray, thresholds: Sequence[float] = (0.5, 0.7)) -> dict[str, float]:
    """``{"mean_best_iou": …, "frac_iou>=0.5": …, …}`` of per-box best IoUs ``(N,)``."""
    best = np.asarray(best_iou, np.float64)
    out = {"mean_best_iou": float(best.mean()) if best.size else 0.0}
    for t in thresholds:
        out[f"frac_iou>={t:g}"] = float((best >= t).mean()) if best.size else 0.0
    return out


def suggest_anchors(
    boxes: np.ndarray,
    strides: Sequence[int],
    sizes_per_level: int = 1,
    num_ratios: int = 3,
    seed: int = 0,
) -> tuple[tuple[tuple[float, ...], ...], tuple[float, ...], str]:
    """Anchor sizes per level and shared aspect ratios for xyxy ``boxes`` ``(N, 4)``.

    Faster R-CNN anchors are a product (every size with every ratio on every location), so the
    ``1 - IoU`` k-means runs on the two factors of a box shape:

    * ratios: k-means of unit-area boxes (only h/w left), ``num_ratios`` clusters;
    * sizes: k-means of squares of side ``sqrt(w h)`` (only the size left),
      ``len(strides) * sizes_per_level`` clusters, dealt out ascending, finest level first.

    Dealing k-means sizes ignores where anchors sit: a 24 px anchor on a stride-16 grid can miss
    a 24 px box's centre by 8 px. So sizes that grow with the stride, ``c * stride * 2**(j /
    sizes_per_level)`` (the FPN layout), are tried too for a range of ``c``, and the candidate
    with the best mean grid IoU (:func:`best_grid_iou`) wins. Returns ``(sizes, ratios, how)``
    with ``how`` = ``"kmeans"`` or ``"stride-scaled c=<c>"``; sizes rounded to 0.5 px, ratios
    to 0.01.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    ok = (wh > 0).all(axis=1)
    boxes, wh = boxes[ok], wh[ok]
    if len(wh) == 0:
        raise ValueError("suggest_anchors: no boxes with positive width and height")
    num_levels = len(strides)
    side = np.sqrt(wh[:, 0] * wh[:, 1])
    ratio_c = kmeans_iou(wh / side[:, None], num_ratios, seed=seed)
    ratios = tuple(sorted({round(float(h / w), 2) for w, h in ratio_c}))
    want = num_levels * sizes_per_level
    size_c = kmeans_iou(np.stack([side, side], axis=1), want, seed=seed)[:, 0].tolist()
    while len(size_c) < want:  # fewer distinct sizes than slots: continue at x2 steps
        size_c.append(size_c[-1] * 2)
    dealt = sorted(round(v * 2) / 2 for v in size_c)
    candidates = [("kmeans", tuple(
        tuple(dealt[i * sizes_per_level:(i + 1) * sizes_per_level]) for i in range(num_levels)
    ))]
    for c in np.geomspace(0.5, 16.0, 31):
        candidates.append((f"stride-scaled c={c:.2f}", tuple(
            tuple(round(c * s * 2 ** (j / sizes_per_level) * 2) / 2 for j in range(sizes_per_level))
            for s in strides
        )))
    per_level_ratios = (ratios,) * num_levels
    scores = [best_grid_iou(boxes, strides, sizes, per_level_ratios).mean()
              for _, sizes in candidates]
    how, sizes = candidates[int(np.argmax(scores))]
    return sizes, ratios, how
