"""Text detection precision / recall / hmean with the ICDAR 2015 protocol (IoU matching).

Per image: ground-truth words marked ``ignore`` (``###``) are "don't care". A prediction whose
area lies more than ``ignore_overlap`` inside one don't-care word is dropped (it neither helps
nor hurts). The remaining predictions and ground truths are matched one-to-one at
``IoU >= iou_threshold``. Counts are summed over the dataset:
``precision = matched / #predictions``, ``recall = matched / #gt``, ``hmean = 2PR / (P + R)``
(each 0 when its denominator is 0, as in the ICDAR script).

Differences from the ICDAR 2015 script, both deliberate: matching is greedy by descending IoU
(the script takes pairs in index order, which can depend on annotation order), and the IoU test
is ``>=`` (the script uses ``>``; exact ties have measure zero for real polygons).
Ground-truth polygons with zero area cannot be matched and are treated as don't care.

What cannot be scored is refused by :meth:`TextHmeanEvaluator.update` with a ``DataError``
naming the image id and the polygon's index: a coordinate that is NaN/inf, an array that is not
``(K, 2)`` points, a prediction with fewer than 3 points (no polygon; a zero-area prediction
with 3+ points is scored as the false positive it is).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from ..errors import ConfigError, DataError
from ..ops.coords import polygons_to_original
from ..registry import EVALUATORS
from ..structures import Batch, Prediction
from .base import Evaluator, gather_objects

__all__ = ["TextHmeanEvaluator", "match_text_polygons", "match_text_status"]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _geometry(points: Any) -> BaseGeometry:
    """A valid shapely (Multi)Polygon for a ``(K, 2)`` array; empty when degenerate."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3 or not np.isfinite(p).all():
        return Polygon()
    poly = Polygon(p)
    if poly.is_valid:
        return poly
    # Self-intersecting ("bow-tie") outlines: keep every polygonal piece, drop stray lines.
    fixed = shapely.make_valid(poly)
    parts = [g for g in getattr(fixed, "geoms", [fixed]) if isinstance(g, (Polygon, MultiPolygon))]
    return shapely.union_all(parts) if parts else Polygon()


def match_text_polygons(
    preds: list[np.ndarray],
    gts: list[np.ndarray],
    gt_ignore: np.ndarray,
    iou_threshold: float = 0.5,
    ignore_overlap: float = 0.5,
) -> tuple[int, int, int]:
    """Match one image's predictions to its ground truth (arguments as
    :func:`match_text_status`).

    Returns:
        ``(num_matched, num_care_predictions, num_care_gts)``.
    """
    pred_status, gt_status = match_text_status(preds, gts, gt_ignore, iou_threshold,
                                               ignore_overlap)
    return (int((pred_status == 1).sum()), int((pred_status >= 0).sum()),
            int((gt_status >= 0).sum()))


def match_text_status(
    preds: list[np.ndarray],
    gts: list[np.ndarray],
    gt_ignore: np.ndarray,
    iou_threshold: float = 0.5,
    ignore_overlap: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Match one image's predictions to its ground truth, per polygon.

    Args:
        preds: predicted ``(K, 2)`` polygons.
        gts: ground-truth ``(K, 2)`` polygons, same coordinates as ``preds``.
        gt_ignore: ``(len(gts),)`` bool, True for don't-care words.
        iou_threshold: minimum IoU of a match.
        ignore_overlap: a prediction with ``area(pred ∩ ignored gt) / area(pred)`` above this
            for some ignored gt is dropped.

    Returns:
        ``(pred_status (P,), gt_status (G,))`` int8: ``1`` matched (true positive / found),
        ``0`` unmatched (false positive / missed), ``-1`` not scored (a prediction inside a
        don't-care word; a don't-care or zero-area ground truth).
    """
    pred_geoms = np.array([_geometry(p) for p in preds], dtype=object)
    gt_geoms = np.array([_geometry(g) for g in gts], dtype=object)
    gt_areas = shapely.area(gt_geoms) if len(gt_geoms) else np.zeros(0)
    care_gt = ~np.asarray(gt_ignore, dtype=bool).reshape(-1) & (gt_areas > 0)
    care_pred = np.ones(len(pred_geoms), dtype=bool)
    if len(pred_geoms) == 0 or len(gt_geoms) == 0:
        return _status(care_pred, set()), _status(care_gt, set())

    pred_areas = shapely.area(pred_geoms)
    # Only pairs that intersect (tree filter on envelopes, then the exact predicate) can match.
    pairs = shapely.STRtree(gt_geoms).query(pred_geoms, predicate="intersects")
    pred_idx, gt_idx = pairs[0], pairs[1]
    inter = shapely.area(shapely.intersection(pred_geoms[pred_idx], gt_geoms[gt_idx]))

    ignored_pair = ~care_gt[gt_idx] & (gt_areas[gt_idx] > 0)
    pair_pred_area = pred_areas[pred_idx]
    frac = np.divide(inter, pair_pred_area, out=np.zeros_like(inter), where=pair_pred_area > 0)
    care_pred[pred_idx[ignored_pair & (frac > ignore_overlap)]] = False

    union = pred_areas[pred_idx] + gt_areas[gt_idx] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    ok = care_gt[gt_idx] & care_pred[pred_idx] & (iou >= iou_threshold)
    order = np.argsort(-iou[ok], kind="stable")
    used_pred: set[int] = set()
    used_gt: set[int] = set()
    for p, g in zip(pred_idx[ok][order].tolist(), gt_idx[ok][order].tolist()):
        if p in used_pred or g in used_gt:
            continue
        used_pred.add(p)
        used_gt.add(g)
    return _status(care_pred, used_pred), _status(care_gt, used_gt)


def _status(care: np.ndarray, used: set[int]) -> np.ndarray:
    out = np.where(care, 0, -1).astype(np.int8)
    out[list(used)] = 1
    return out


@EVALUATORS.register()
class TextHmeanEvaluator(Evaluator):
    """ICDAR-2015-style precision, recall and hmean of text polygons (primary: ``hmean``).

    Args:
        iou_threshold: minimum IoU for a prediction to match a ground-truth word, in (0, 1].
        ignore_overlap: fraction of a prediction's area inside a don't-care word above which
            the prediction is dropped, in [0, 1).

    ``update(predictions, batch)`` reads ``Prediction.polygons`` (original pixels) and, per
    image, ground truth from ``batch.targets[i]["orig_polygons"]`` (original pixels) when
    present, else ``batch.targets[i]["polygons"]`` (input pixels) mapped back with
    ``meta["scale"]`` ``(sy, sx)`` and ``meta["pad"]`` ``(top, left)``:
    ``orig = (input - pad) / scale``. ``targets[i]["ignore"]`` ``(N,)`` marks ``###`` words.
    """

    primary = "hmean"
    higher_is_better = True

    def __init__(self, iou_threshold: float = 0.5, ignore_overlap: float = 0.5) -> None:
        if not (isinstance(iou_threshold, (int, float)) and 0.0 < iou_threshold <= 1.0):
            raise ConfigError(
                f"TextHmeanEvaluator iou_threshold must be in (0, 1], got {iou_threshold!r}"
            )
        if not (isinstance(ignore_overlap, (int, float)) and 0.0 <= ignore_overlap < 1.0):
            raise ConfigError(
                f"TextHmeanEvaluator ignore_overlap must be in [0, 1), got {ignore_overlap!r}"
            )
        self.iou_threshold = float(iou_threshold)
        self.ignore_overlap = float(ignore_overlap)
        self._records: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._records = []

    def update(self, predictions: list[Prediction], batch: Batch) -> None:
        """Store one record per image: predicted polygons, gt polygons (original pixels), ignore."""
        for i, pred in enumerate(predictions):
            target = batch.targets[i] if i < len(batch.targets) else {}
            meta = batch.meta[i] if i < len(batch.meta) else {}
            if "image_id" not in meta:
                raise DataError(f"TextHmeanEvaluator: batch.meta[{i}] has no 'image_id'")
            gts = _gt_polygons(target, meta)
            ignore = target.get("ignore")
            if ignore is None:
                ignore = np.zeros(len(gts), dtype=bool)
            ignore = _to_numpy(ignore).astype(bool).reshape(-1)
            if len(ignore) != len(gts):
                raise DataError(
                    f"TextHmeanEvaluator: image {meta['image_id']!r} has {len(gts)} polygons "
                    f"but {len(ignore)} ignore flags"
                )
            preds = [] if pred.polygons is None else pred.polygons
            image_id = meta["image_id"]
            pred_arrays = [_points(p, image_id, "prediction", k, 3) for k, p in enumerate(preds)]
            for k, g in enumerate(gts):
                _points(g, image_id, "ground-truth polygon", k, 0)
            self._records.append(
                {
                    "image_id": image_id,
                    "preds": pred_arrays,
                    "gts": gts,
                    "ignore": ignore,
                }
            )

    def compute(self) -> dict[str, float]:
        """Dataset-level precision, recall and hmean (after gathering across processes)."""
        records = self.dedup(gather_objects(self._records))
        matched = num_pred = num_gt = 0
        for r in records:
            m, p, g = match_text_polygons(
                r["preds"], r["gts"], r["ignore"], self.iou_threshold, self.ignore_overlap
            )
            matched, num_pred, num_gt = matched + m, num_pred + p, num_gt + g
        precision = matched / num_pred if num_pred else 0.0
        recall = matched / num_gt if num_gt else 0.0
        hmean = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return {"precision": precision, "recall": recall, "hmean": hmean}


def _points(polygon: Any, image_id: Any, kind: str, index: int, min_points: int) -> np.ndarray:
    """``polygon`` as a finite ``(K, 2)`` float64 array with ``K >= min_points``, else a
    DataError naming the image and the polygon."""
    arr = np.asarray(_to_numpy(polygon), dtype=np.float64)
    if arr.ndim == 1 and arr.size % 2 == 0:
        arr = arr.reshape(-1, 2)  # flat [x0, y0, x1, y1, ...]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise DataError(
            f"TextHmeanEvaluator: image {image_id!r}: {kind} {index} must be (K, 2) points, "
            f"got shape {tuple(arr.shape)}"
        )
    if not np.isfinite(arr).all():
        raise DataError(
            f"TextHmeanEvaluator: image {image_id!r}: {kind} {index} has a non-finite "
            f"coordinate: {arr.tolist()}"
        )
    if len(arr) < min_points:
        raise DataError(
            f"TextHmeanEvaluator: image {image_id!r}: {kind} {index} has {len(arr)} points; a "
            f"polygon needs at least {min_points}"
        )
    return arr


def _gt_polygons(target: dict[str, Any], meta: dict[str, Any]) -> list[np.ndarray]:
    """Ground-truth polygons in original pixels (``orig_polygons``, else mapped ``polygons``)."""
    image_id = meta.get("image_id")
    if target.get("orig_polygons") is not None:
        return [
            _points(p, image_id, "ground-truth polygon", k, 0)
            for k, p in enumerate(target["orig_polygons"])
        ]
    polygons = target.get("polygons")
    # No orig_size: ground truth is mapped, never clipped (it was clipped in the dataset).
    checked = [_points(p, image_id, "ground-truth polygon", k, 0)
               for k, p in enumerate([] if polygons is None else polygons)]
    mapping = {"scale": meta.get("scale", (1.0, 1.0)), "pad": meta.get("pad", (0.0, 0.0))}
    return polygons_to_original(checked, mapping, dtype=np.float64)
