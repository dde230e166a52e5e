"""COCO box mAP (pycocotools or faster-coco-eval) plus size buckets relative to the image area.

Metrics follow COCOeval (bbox) exactly: AP over IoU 0.50:0.95 with 101-point interpolated
precision, AP50/AP75, COCO's absolute size buckets (small < 32², medium < 96², large, in px²
of the *box* area since detlab has no masks), AR at each max-detection limit, per-class AP.

Relative buckets ("AP_rel_<name>") mirror how COCO does absolute ones instead of inventing a new
rule: COCOeval's size filter only compares each annotation's ``area`` field with
``params.areaRng``. A second COCOeval run puts ``box area / image area`` into that field for
ground truths *and* detections and uses the relative ranges as ``areaRng``. So, exactly as for
COCO's AP_small: a ground truth outside the bucket is ignored (neither needed nor a miss), a
detection matched to it is ignored, and an *unmatched* detection outside the bucket is ignored
rather than counted as a false positive. Bounds are inclusive on both ends, as in COCO.

When all images have one size (a val split usually does), the relative buckets are absolute
ranges that select exactly the same boxes (:func:`~detlab.evaluation.coco_api.
relative_as_absolute`), and one COCOeval run with both sets of ranges gives both sets of
numbers: the per-image matching of a range depends only on which boxes it ignores. Detections
after the ``max_dets`` best of a class in an image, which COCOeval never looks at, are dropped
before the COCO dicts are built. Both change the cost, not a number (tests compare with the
two-run pycocotools evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..checks import check_int
from ..errors import ConfigError, DataError
from ..ops.coords import unletterbox_boxes
from ..registry import EVALUATORS
from ..structures import Batch, Prediction
from .base import Evaluator, gather_objects
from .coco_api import (
    COCO_AREA_RANGES,
    Backend,
    build_coco_dicts,
    evaluate_bbox,
    load_backend,
    mean_valid,
    relative_as_absolute,
    summary_line,
    top_detections,
)

__all__ = ["CocoEvaluator", "HELMET_RELATIVE_AREAS", "UNDEFINED"]

# The value of every undefined metric: one NaN object, so metric dicts of equal runs compare
# equal (dict and list comparison check identity before ==, and nan != nan).
UNDEFINED = float("nan")

# Fractions of the image area (tiny < 0.1 %, small 0.1–0.5 %, medium 0.5–5 %, large > 5 %).
HELMET_RELATIVE_AREAS: dict[str, tuple[float, float]] = {
    "tiny": (0.0, 0.001),
    "small": (0.001, 0.005),
    "medium": (0.005, 0.05),
    "large": (0.05, float("inf")),
}
_COCO_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


@EVALUATORS.register
class CocoEvaluator(Evaluator):
    """COCO bbox mAP over an epoch, DDP-safe, with per-class and relative-size AP.

    Args:
        class_names: name per 0-based label, used in ``"AP/<name>"``; ``None`` → ``class_<i>``.
        num_classes: number of classes when ``class_names`` is not given. With neither, the
            classes are the labels seen in the ground truth (``0 .. max gt label``), and a
            prediction with a larger label is an error (a model emitting a class the data does
            not have); set this when a class has no ground truth in the evaluated split.
        primary: metric checkpoints monitor (a key of :meth:`compute`'s result).
        max_dets: detections per image and class kept (highest scores) for AP and the last AR;
            AR is also reported at 1 and 10 when they are smaller (``AR1``, ``AR10``,
            ``AR<max_dets>``).
        relative_areas: ``{name: (low, high)}`` as fractions of the image area, reported as
            ``"AP_rel_<name>"``; ``None`` or ``{}`` skips them.
        backend: ``"pycocotools"`` or ``"faster_coco_eval"`` (same numbers, faster C++).

    ``update`` expects predictions in original image coordinates and takes ground truth from
    ``batch.targets[i]``: ``orig_boxes`` (N, 4) xyxy original px when present, else ``boxes``
    (N, 4) xyxy input px mapped back with ``meta["scale"]`` (sy, sx) and optional
    ``meta["pad"]`` (top, left): ``orig = (input - pad) / scale``. ``ignore`` (N,) bool marks
    COCO crowd/ignore regions.

    Undefined metrics (no ground truth in a size bucket or class, an empty epoch: COCOeval's
    ``-1``) are reported as ``nan`` (printed ``n/a``), never as a score, and never enter an
    average; :meth:`summary` prints COCO's ``-1.000`` for them.

    Raises:
        DataError: (in ``update``/``compute``) a prediction whose score or box is NaN/inf, or
            whose label is outside ``[0, number of classes)``, naming the image id and the
            index of the prediction; a ground-truth box that is NaN/inf.
    """

    def __init__(
        self,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        primary: str = "AP",
        max_dets: int = 100,
        relative_areas: Mapping[str, tuple[float, float]] | None = HELMET_RELATIVE_AREAS,
        backend: Backend = "pycocotools",
    ) -> None:
        if class_names is not None:
            if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
                raise ConfigError(
                    f"class_names must be a list of strings or None, got {class_names!r}"
                )
            if len(class_names) == 0 or len(set(class_names)) != len(class_names):
                raise ConfigError(
                    f"class_names must be non-empty and unique, got {list(class_names)!r}"
                )
        check_int("CocoEvaluator", "max_dets", max_dets, low=1)
        if num_classes is not None:
            check_int("CocoEvaluator", "num_classes (or None)", num_classes, low=1)
        if num_classes is not None and class_names is not None and num_classes != len(class_names):
            raise ConfigError(
                f"num_classes={num_classes} but {len(class_names)} class_names are given"
            )
        self.relative_areas = _check_relative_areas(relative_areas)
        load_backend(backend)  # fail at construction, not at the end of the first epoch
        self.class_names = list(class_names) if class_names is not None else None
        self.num_classes = len(self.class_names) if self.class_names else num_classes
        self.max_dets = max_dets
        self.backend = backend
        self.primary = primary
        # "AP/<name>" with default names ("class_<i>") can only be checked in compute().
        known = self._metric_names()
        if primary not in known and not (primary.startswith("AP/") and class_names is None):
            raise ConfigError(f"primary={primary!r} is not a metric; choose one of {known}")
        self._records: list[dict[str, Any]] = []
        self._last: dict[str, Any] | None = None

    # -- Evaluator API --------------------------------------------------------------------------
    def detections_read_per_class(self) -> int:
        """``max_dets``: COCOeval sorts each image's detections of a class by score (stably)
        and reads the first ``max_dets`` (:func:`~detlab.evaluation.coco_api.top_detections`)."""
        return self.max_dets

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._records = []
        self._last = None

    def update(self, predictions: list[Prediction], batch: Batch) -> None:
        """Store one batch: predictions (original px) and ground truth mapped to original px."""
        if len(predictions) != len(batch.meta) or len(batch.targets) != len(batch.meta):
            raise DataError(
                f"CocoEvaluator.update got {len(predictions)} predictions, "
                f"{len(batch.targets)} targets and {len(batch.meta)} meta entries; "
                "expected one of each per image"
            )
        for pred, target, meta in zip(predictions, batch.targets, batch.meta):
            self._records.append(self._record(pred, target, meta))

    def compute(self) -> dict[str, float]:
        """Metrics over all images seen (gathered across DDP processes, duplicates dropped)."""
        records = self.dedup(gather_objects(self._records))
        # Canonical order: COCO breaks score ties across images by image order, and this keeps
        # results independent of how DDP split the images.
        records.sort(key=lambda r: _id_key(r["image_id"]))
        num_classes = self._num_classes(records)
        names = self.class_names or [f"class_{k}" for k in range(num_classes)]
        abs_stats, rel_stats = self._stats(records, num_classes)
        self._last = {"abs": abs_stats, "rel": rel_stats, "records": records, "names": names}
        metrics = {k: _defined(v) for k, v in abs_stats["stats"].items()}
        for name, ap in zip(names, abs_stats["per_class"]):
            metrics[f"AP/{name}"] = _defined(ap)
        metrics.update({f"AP_rel_{k}": _defined(v) for k, v in rel_stats.items()})
        if self.primary not in metrics:
            raise ConfigError(
                f"primary={self.primary!r} is not among the computed metrics {sorted(metrics)}"
            )
        return metrics

    def summary(self, relative: bool = False) -> str:
        """COCOeval.summarize()'s 12 lines for the last :meth:`compute` (computed if needed);
        ``relative=True`` appends one AP line per relative bucket (area label ``rel_<name>``)."""
        if self._last is None:
            self.compute()
        assert self._last is not None
        stats, dets = self._last["abs"]["stats"], self._max_dets_list()
        last = dets[-1]
        lines = [
            summary_line(True, stats["AP"], "all", last),
            summary_line(True, stats["AP50"], "all", last, iou=0.5),
            summary_line(True, stats["AP75"], "all", last, iou=0.75),
        ]
        sizes = ("small", "medium", "large")
        lines += [summary_line(True, stats[f"AP_{a}"], a, last) for a in sizes]
        lines += [summary_line(False, stats[f"AR{m}"], "all", m) for m in dets]
        lines += [summary_line(False, stats[f"AR_{a}"], a, last) for a in sizes]
        if relative:
            lines += [
                summary_line(True, v, f"rel_{k}", last) for k, v in self._last["rel"].items()
            ]
        return "\n".join(lines)

    def curve_data(self) -> dict[str, Any]:
        """What the PR / F1 / confusion plots need from the last :meth:`compute` (computed if
        needed; the same gathered images on every rank):

        * ``precision``: ``(T, R, K)`` COCOeval interpolated precision at IoU thresholds
          ``iou_thresholds`` (T = 10: 0.50:0.95), recall points ``recall_thresholds``
          (R = 101) and class K, all areas, ``max_dets`` detections; ``-1`` where a class has
          no ground truth; ``None`` when nothing was evaluated;
        * ``records``: per image ``gt_boxes`` / ``dt_boxes`` (N, 4) xyxy original px,
          ``gt_labels``, ``gt_ignore``, ``dt_scores``, ``dt_labels``;
        * ``class_names``: one name per class index.
        """
        if self._last is None:
            self.compute()
        assert self._last is not None
        return {
            "precision": self._last["abs"]["precision"],
            "iou_thresholds": np.linspace(0.5, 0.95, 10),
            "recall_thresholds": np.linspace(0.0, 1.0, 101),
            "records": self._last["records"],
            "class_names": list(self._last["names"]),
        }

    # -- helpers --------------------------------------------------------------------------------
    def _max_dets_list(self) -> list[int]:
        return sorted({m for m in (1, 10, self.max_dets) if m <= self.max_dets})

    def _metric_names(self) -> list[str]:
        names = list(_COCO_KEYS) + [f"AR{m}" for m in self._max_dets_list()]
        names += ["AR_small", "AR_medium", "AR_large"]
        names += [f"AP_rel_{k}" for k in self.relative_areas]
        names += [f"AP/{n}" for n in self.class_names or []]
        return names

    def _num_classes(self, records: list[dict[str, Any]]) -> int:
        """The class count, after checking every label against it (image id + index named)."""
        if self.num_classes is not None:
            num = self.num_classes
            source = f"{num} class_names" if self.class_names else f"num_classes={num}"
        else:
            num = max((int(r["gt_labels"].max()) + 1 for r in records if r["gt_labels"].size),
                      default=0)
            source = (f"the ground truth's labels 0..{num - 1}" if num else
                      "no ground-truth labels") + " (no class_names or num_classes set)"
        for r in records:
            for kind, key in (("ground-truth box", "gt_labels"), ("prediction", "dt_labels")):
                bad = np.flatnonzero(r[key] >= num)
                if bad.size:
                    i = int(bad[0])
                    raise DataError(
                        f"image {r['image_id']!r}: {kind} {i} has label {int(r[key][i])}, outside "
                        f"[0, {num}) given by {source}; set evaluator.class_names or "
                        "evaluator.num_classes to the model's classes"
                    )
        return num

    def _stats(self, records: list[dict[str, Any]],
               num_classes: int) -> tuple[dict[str, Any], dict[str, float]]:
        """(absolute stats, relative AP per bucket). One COCOeval run when the images share one
        size (the relative buckets then are absolute ranges, :func:`relative_as_absolute`),
        else one run per kind of area; detections COCOeval would drop are dropped first."""
        dets = self._max_dets_list()
        keys = list(_COCO_KEYS) + [f"AR{m}" for m in dets] + ["AR_small", "AR_medium", "AR_large"]
        if not records or num_classes == 0:  # nothing to evaluate: COCO has no categories
            return ({"stats": dict.fromkeys(keys, -1.0), "per_class": [-1.0] * num_classes,
                     "precision": None}, dict.fromkeys(self.relative_areas, -1.0))
        records = top_detections(records, dets[-1])
        ranges = dict(COCO_AREA_RANGES)
        as_absolute = relative_as_absolute(records, self.relative_areas) if (
            self.relative_areas) else {}
        if as_absolute is not None:
            ranges.update({f"rel_{k}": v for k, v in as_absolute.items()})
        gt, dt = build_coco_dicts(records, num_classes, area="absolute")
        prec, rec = evaluate_bbox(gt, dt, ranges, dets, self.backend)
        if as_absolute is not None:
            rel_prec = prec[:, :, :, len(COCO_AREA_RANGES):]
        else:
            gt, dt = build_coco_dicts(records, num_classes, area="relative")
            rel_prec, _ = evaluate_bbox(gt, dt, self.relative_areas, dets, self.backend)
        rel = {k: mean_valid(rel_prec[:, :, :, a, -1]) for a, k in enumerate(self.relative_areas)}
        return self._absolute_stats(prec, rec, dets, num_classes), rel

    @staticmethod
    def _absolute_stats(prec: np.ndarray, rec: np.ndarray, dets: list[int],
                        num_classes: int) -> dict[str, Any]:
        """COCO's numbers from COCOeval's precision/recall, areas ``all, small, medium, large``
        first."""
        t50, t75 = _iou_index(0.5), _iou_index(0.75)
        stats = {
            "AP": mean_valid(prec[:, :, :, 0, -1]),
            "AP50": mean_valid(prec[t50, :, :, 0, -1]),
            "AP75": mean_valid(prec[t75, :, :, 0, -1]),
        }
        for a, name in enumerate(("small", "medium", "large"), start=1):
            stats[f"AP_{name}"] = mean_valid(prec[:, :, :, a, -1])
        for m, md in enumerate(dets):
            stats[f"AR{md}"] = mean_valid(rec[:, :, 0, m])
        for a, name in enumerate(("small", "medium", "large"), start=1):
            stats[f"AR_{name}"] = mean_valid(rec[:, :, a, -1])
        per_class = [mean_valid(prec[:, :, k, 0, -1]) for k in range(num_classes)]
        # all areas, the largest detection limit: what the PR curves show
        return {"stats": stats, "per_class": per_class, "precision": prec[:, :, :, 0, -1]}

    def _record(self, pred: Prediction, target: dict[str, Any], meta: dict[str, Any]) -> dict:
        image_id = _plain(meta.get("image_id"))
        if image_id is None or "orig_size" not in meta:
            raise DataError(f"batch meta needs 'image_id' and 'orig_size', got keys {sorted(meta)}")
        h, w = (int(_plain(v)) for v in meta["orig_size"])
        gt_boxes, gt_labels, gt_ignore = _ground_truth(target, meta, image_id)
        dt_boxes = _array(pred.boxes, np.float64).reshape(-1, 4)
        dt_scores = _array(pred.scores, np.float64).reshape(-1)
        dt_labels = _array(pred.labels, np.int64).reshape(-1)
        if not len(dt_boxes) == len(dt_scores) == len(dt_labels):
            raise DataError(
                f"image {image_id!r}: prediction has {len(dt_boxes)} boxes, {len(dt_scores)} "
                f"scores and {len(dt_labels)} labels; expected equal lengths"
            )
        for name, labels in (("target", gt_labels), ("prediction", dt_labels)):
            if labels.size and labels.min() < 0:
                raise DataError(f"image {image_id!r}: negative {name} label {labels.min()}")
        # NaN scores sort first and score as certain true positives (AP 1.0); NaN/inf boxes
        # are silent false positives: neither can be scored, so neither is accepted.
        _require_finite(dt_scores, image_id, "prediction", "score")
        _require_finite(dt_boxes, image_id, "prediction", "box")
        _require_finite(gt_boxes, image_id, "ground-truth box", "box")
        if self.num_classes is not None:  # known now: name the offending image at once
            for kind, labels in (("ground-truth box", gt_labels), ("prediction", dt_labels)):
                bad = np.flatnonzero(labels >= self.num_classes)
                if bad.size:
                    raise DataError(
                        f"image {image_id!r}: {kind} {int(bad[0])} has label "
                        f"{int(labels[bad[0]])}, outside [0, {self.num_classes}) (the "
                        "evaluator's class_names / num_classes)"
                    )
        return {
            "image_id": image_id, "height": h, "width": w,
            "gt_boxes": gt_boxes, "gt_labels": gt_labels, "gt_ignore": gt_ignore,
            "dt_boxes": dt_boxes, "dt_scores": dt_scores, "dt_labels": dt_labels,
        }


def _ground_truth(
    target: dict[str, Any], meta: dict[str, Any], image_id: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth of one image in original px: (boxes (G, 4) xyxy, labels (G,), ignore (G,))."""
    if target.get("orig_boxes") is not None:
        boxes = _array(target["orig_boxes"], np.float64).reshape(-1, 4)
    elif target.get("boxes") is not None:
        boxes = _array(target["boxes"], np.float64).reshape(-1, 4)
        sy, sx = _pair(meta.get("scale", (1.0, 1.0)), "scale", image_id)
        top, left = _pair(meta.get("pad", (0.0, 0.0)), "pad", image_id)
        if sy <= 0 or sx <= 0:
            raise DataError(f"image {image_id!r}: meta scale must be > 0, got {(sy, sx)}")
        boxes = unletterbox_boxes(boxes, (sy, sx), (top, left))
    else:
        boxes = np.zeros((0, 4), np.float64)
    n = len(boxes)
    if target.get("labels") is None:
        if n:
            raise DataError(f"image {image_id!r}: target has {n} boxes but no 'labels'")
        labels = np.zeros(0, np.int64)
    else:
        labels = _array(target["labels"], np.int64).reshape(-1)
    ignore = (
        _array(target["ignore"], np.bool_).reshape(-1)
        if target.get("ignore") is not None
        else np.zeros(n, np.bool_)
    )
    if len(labels) != n or len(ignore) != n:
        raise DataError(
            f"image {image_id!r}: target has {n} boxes, {len(labels)} labels and "
            f"{len(ignore)} ignore flags; expected equal lengths"
        )
    return boxes, labels, ignore


def _check_relative_areas(
    areas: Mapping[str, tuple[float, float]] | None,
) -> dict[str, tuple[float, float]]:
    if areas is None:
        return {}
    if not isinstance(areas, Mapping):
        raise ConfigError(f"relative_areas must be a dict name -> (low, high), got {areas!r}")
    out = {}
    for name, rng in areas.items():
        try:
            low, high = (float(v) for v in rng)
        except (TypeError, ValueError):
            raise ConfigError(
                f"relative_areas[{name!r}] must be (low, high) fractions, got {rng!r}"
            ) from None
        if not (isinstance(name, str) and name) or not 0.0 <= low < high:
            raise ConfigError(
                f"relative_areas[{name!r}] = {rng!r}: expected a non-empty name and "
                "0 <= low < high (fractions of the image area, high may be inf)"
            )
        out[name] = (low, high)
    return out


def _defined(value: float) -> float:
    """COCOeval's ``-1`` (no ground truth for this setting) as ``nan``; other values as is."""
    return UNDEFINED if value <= -1 else float(value)


def _require_finite(values: np.ndarray, image_id: Any, kind: str, what: str) -> None:
    """DataError naming the image and the first row of ``values`` that is not finite."""
    finite = np.isfinite(values)
    if not finite.all():
        rows = ~finite.reshape(len(values), -1).all(axis=1) if values.size else finite
        i = int(np.flatnonzero(rows)[0])
        raise DataError(
            f"image {image_id!r}: {kind} {i} has a non-finite {what} {values[i].tolist()}; "
            "cannot score NaN/inf (check the head's decoding and post-processing)"
        )


def _iou_index(thr: float) -> int:
    # Same thresholds COCOeval uses (np.linspace(.5, .95, 10)).
    return int(np.argmin(np.abs(np.linspace(0.5, 0.95, 10) - thr)))


def _array(x: Any, dtype: Any) -> np.ndarray:
    if x is None:
        return np.zeros(0, dtype)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _plain(x: Any) -> Any:
    """A hashable, picklable Python value for ids and sizes (0-d tensors/arrays → scalars)."""
    if isinstance(x, (torch.Tensor, np.ndarray, np.generic)):
        return x.item()
    return x


def _pair(x: Any, name: str, image_id: Any) -> tuple[float, float]:
    values = _array(x, np.float64).reshape(-1)
    if values.size == 1:
        return float(values[0]), float(values[0])
    if values.size != 2:
        raise DataError(f"image {image_id!r}: meta {name!r} must be one or two numbers, got {x!r}")
    return float(values[0]), float(values[1])


def _id_key(image_id: Any) -> tuple[int, Any]:
    if isinstance(image_id, (int, float)) and not isinstance(image_id, bool):
        return (0, image_id)
    if isinstance(image_id, str):
        return (1, image_id)
    return (2, repr(image_id))
