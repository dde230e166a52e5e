"""Pixel metrics for (very) imbalanced semantic segmentation, e.g. thin fracture lesions.

Besides Dice/IoU at a fixed threshold, :class:`SegmentationEvaluator` reports what shows a
collapsed model at a glance: threshold-free PR-AUC, the best F1 over thresholds down to 1e-4,
the largest predicted probability and the share of pixels above the lowest searched threshold,
plus a histogram of predicted probabilities (:meth:`SegmentationEvaluator.format_histogram`),
and slice-, case- and lesion-level detection rates (:mod:`detlab.evaluation.lesions`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..checks import check_int
from ..errors import ConfigError, DataError
from ..ops.coords import maps_to_original
from ..registry import EVALUATORS
from ..structures import Batch, Prediction
from .base import Evaluator, gather_objects
from .lesions import RATE_NAMES, detection_rates, froc_curves, lesion_stats
from .prob_histogram import (
    DISPLAY_EDGES,
    average_precision,
    bin_counts,
    f1_search,
    format_bars,
    make_bin_edges,
)

__all__ = ["SegmentationEvaluator", "METRIC_NAMES", "ground_truth_mask"]

METRIC_NAMES: tuple[str, ...] = (
    "dice",
    "iou",
    "pr_auc",
    "best_f1",
    "best_threshold",
    "prevalence",
    "max_prob",
    "frac_above_min_threshold",
    *RATE_NAMES,
)
_DEFAULT_THRESHOLD = 0.5
_PER_CLASS = ("dice", "iou", "pr_auc", "best_f1", "best_threshold")
_RECORD_SUMS = ("pos_hist", "neg_hist", "tp", "fp", "fn")


@EVALUATORS.register()
class SegmentationEvaluator(Evaluator):
    """Dice, IoU, PR-AUC and a best-F1 threshold search over all pixels of a split.

    Predictions carry ``probs`` ``(C, H, W)`` in original image size. Ground truth is
    ``batch.targets[i]["orig_mask"]`` ``(C, H, W)`` (original size) when present, else
    ``batch.targets[i]["mask"]`` ``(C, H, W)`` in input size, cropped to ``meta["input_size"]``
    (after an optional ``meta["pad"]`` = (top, left)) and resized to ``meta["orig_size"]`` with
    nearest-exact interpolation (pixel-centre aligned, like ``align_corners=False`` resizing of
    the probabilities). A pixel is predicted positive when ``prob >= threshold``.

    All metrics are micro (pooled over all pixels of all images) per class; with ``C > 1`` the
    main keys are means over classes and ``"<metric>/<i>"`` gives class ``i``:

    * ``dice``, ``iou`` at ``threshold``. Convention when a class has no positive pixel and
      none is predicted: 1.0 (nothing to find, nothing found); otherwise the usual ratio.
    * ``pr_auc``: step-wise average precision (as ``sklearn.metrics.average_precision_score``)
      from the probability histogram; 0.0 when the class has no positive pixel.
    * ``best_f1``, ``best_threshold``: best pixel F1 over the bin edges in
      ``[min_threshold, 1)`` (ties go to the highest threshold). Without positives: 0.0 and
      ``threshold``.
    * ``prevalence``: positive pixel fraction. ``max_prob``: largest predicted probability.
      ``frac_above_min_threshold``: share of pixels with ``prob >= min_threshold``.

    * ``slice_sensitivity``/``slice_specificity``: a slice is positive when it has a
      ground-truth pixel, flagged when it has a predicted pixel at ``threshold`` (components
      below ``min_lesion_pixels`` dropped). ``case_*``: the same per case, grouping slices by
      ``meta["case_id"]`` (each image is its own case without one). ``lesion_recall``: share of
      2D ground-truth connected components touched by the prediction. NaN when undefined (no
      positive or no negative slice/case, no lesion); see :mod:`detlab.evaluation.lesions`.

    A collapsed model shows as ``pr_auc`` near ``prevalence``, ``best_threshold`` near
    ``min_threshold`` and a tiny ``max_prob``
    (:func:`detlab.engine.diagnostics.collapse_check` turns that into a warning).

    State is one small record per image (CPU numpy): per class positive- and negative-pixel
    histograms ``(C, K)`` int64 (``K ≈ num_bins``: 32 KiB per class and image by default),
    TP/FP/FN at ``threshold``, the image's max probability, its case id and its lesion counts.
    ``compute`` gathers the records across DDP ranks, drops repeated ``image_id``s and sums
    (cases are grouped after the gather, so a case split across ranks is still one case).

    The threshold is the head's: ``model.head.postprocessor.threshold``
    (:class:`~detlab.postprocess.segmentation.SegmentationPostProcessor`), which the predictions
    carry as ``extras["threshold"]``, so the masks a model writes and the metrics it is scored
    by use one knob. An evaluator ``threshold`` that differs from the predictions' is a
    :class:`~detlab.errors.ConfigError`; predictions without one (hand-made, other heads) use
    ``threshold`` (0.5 when unset).

    Args:
        threshold: probability at which Dice/IoU are computed, in ``(0, 1)``; ``None``
            (default): the predictions' ``extras["threshold"]``, else 0.5. The ``threshold`` attribute
            is the one in use.
        primary: metric checkpoints monitor; one of :data:`METRIC_NAMES`.
        num_bins: number of logit-uniform probability bins over ``[1e-6, 1 - 1e-6]`` (plus exact
            edges at ``threshold``, ``min_threshold`` and the chart's decades). 2048 bins give
            ~1.4 % relative resolution near 1e-4, ~0.0034 near 0.5 and PR-AUC within ~1e-3
            of the unbinned value (see :mod:`detlab.evaluation.prob_histogram`).
        min_threshold: lowest threshold of the F1 search, in ``(0, threshold]``.
        min_lesion_pixels: smallest predicted connected component (pixels, per slice) that
            flags a slice or case and hits a lesion.
    """

    higher_is_better = True

    def __init__(
        self,
        threshold: float | None = None,
        primary: str = "pr_auc",
        num_bins: int = 2048,
        min_threshold: float = 1e-4,
        min_lesion_pixels: int = 1,
    ) -> None:
        if threshold is not None and not 0.0 < float(threshold) < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold!r}")
        if primary not in METRIC_NAMES:
            raise ConfigError(
                f"primary must be one of {', '.join(METRIC_NAMES)}; got {primary!r}"
            )
        check_int("SegmentationEvaluator", "num_bins", num_bins, low=16, high=1_000_000)
        if not 0.0 < float(min_threshold) <= float(_DEFAULT_THRESHOLD if threshold is None
                                                    else threshold):
            raise ConfigError(
                f"min_threshold must be in (0, threshold={threshold}], got {min_threshold!r}"
            )
        check_int("SegmentationEvaluator", "min_lesion_pixels", min_lesion_pixels, low=1)
        self.min_lesion_pixels = min_lesion_pixels
        self.configured_threshold = None if threshold is None else float(threshold)
        self.primary = primary
        self.num_bins = num_bins
        self.min_threshold = float(min_threshold)
        self._set_threshold(self.configured_threshold or _DEFAULT_THRESHOLD)
        self._records: list[dict[str, Any]] = []
        self._gathered: dict[str, Any] | None = None

    def _set_threshold(self, threshold: float) -> None:
        # The histogram has an exact edge at the threshold: fixed before the first record.
        self.threshold = threshold
        self.bin_edges = make_bin_edges(
            self.num_bins, extra=(self.threshold, self.min_threshold, *DISPLAY_EDGES)
        )
        self._edges_f32 = torch.from_numpy(self.bin_edges.astype(np.float32))

    def _threshold_of(self, pred: Prediction) -> None:
        """Adopt (or check) the threshold prediction ``pred`` was made with."""
        used = pred.extras.get("threshold") if pred.extras else None
        if used is None:
            return
        used = float(used)
        if self.configured_threshold is not None and used != self.configured_threshold:
            raise ConfigError(
                f"SegmentationEvaluator: evaluator.threshold={self.configured_threshold:g} "
                f"differs from the threshold the head's masks use ({used:g}, "
                "model.head.postprocessor.threshold); that threshold is the one knob: set "
                "model.head.postprocessor.threshold and drop evaluator.threshold")
        if not self._records:
            if used != self.threshold:
                if not self.min_threshold <= used:
                    raise ConfigError(
                        f"SegmentationEvaluator: min_threshold={self.min_threshold:g} is above "
                        f"model.head.postprocessor.threshold={used:g}")
                self._set_threshold(used)
        elif used != self.threshold:
            raise DataError(f"SegmentationEvaluator: predictions made with threshold {used:g} "
                            f"after ones with {self.threshold:g}; reset() between them")

    # -- accumulation -------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every image seen so far (and the threshold taken from them)."""
        self._records = []
        self._gathered = None
        if self.configured_threshold is None:
            self._set_threshold(_DEFAULT_THRESHOLD)

    def update(self, predictions: list[Prediction], batch: Batch) -> None:
        """Add one record per image (``probs`` in original size; ground truth from ``batch``)."""
        if len(predictions) != len(batch.meta):
            raise DataError(
                f"got {len(predictions)} predictions for a batch of {len(batch.meta)} images"
            )
        for pred, target, meta in zip(predictions, batch.targets, batch.meta):
            self._threshold_of(pred)
            self._records.append(self._record(pred, target, meta))
        self._gathered = None

    @torch.no_grad()
    def _record(self, pred: Prediction, target: dict[str, Any], meta: dict[str, Any]) -> dict:
        image_id = meta.get("image_id")
        probs = pred.probs
        if probs is None:
            raise DataError(f"prediction for image {image_id!r} has no 'probs'")
        probs = probs.detach()
        if probs.ndim == 2:
            probs = probs.unsqueeze(0)
        if probs.ndim != 3:
            raise DataError(f"probs of image {image_id!r} must be (C, H, W), got {probs.shape}")
        probs = probs.float()
        lo, hi = probs.aminmax() if probs.numel() else (probs.new_zeros(()), probs.new_zeros(()))
        lo, hi = float(lo), float(hi)
        if not (lo >= 0.0 and hi <= 1.0):  # also False for NaN
            raise DataError(
                f"probs of image {image_id!r} must lie in [0, 1], got range [{lo}, {hi}]"
            )
        gt = ground_truth_mask(target, meta).to(probs.device)
        if gt.shape != probs.shape:
            raise DataError(
                f"image {image_id!r}: ground-truth mask {tuple(gt.shape)} (original size) does "
                f"not match probs {tuple(probs.shape)}"
            )
        pos, neg = bin_counts(probs, gt, self._edges_f32.to(probs.device))
        pred_pos = probs >= self.threshold
        dims = (1, 2)
        tp = (pred_pos & gt).sum(dims)
        fp = (pred_pos & ~gt).sum(dims)
        fn = (~pred_pos & gt).sum(dims)
        stats = lesion_stats(pred_pos.cpu().numpy(), gt.cpu().numpy(), self.min_lesion_pixels,
                             probs=probs.cpu().numpy())
        return {
            **stats,
            "image_id": image_id,
            "case_id": meta.get("case_id", image_id),
            "pos_hist": _int64(pos),
            "neg_hist": _int64(neg),
            "tp": _int64(tp),
            "fp": _int64(fp),
            "fn": _int64(fn),
            "max_prob": hi,
        }

    # -- results ------------------------------------------------------------------------------
    def _totals(self) -> dict[str, Any] | None:
        """Records of all ranks, deduplicated by image_id, summed; ``None`` when empty.

        The result is kept until the next ``update``/``reset``, so after ``compute`` (collective,
        every rank) the histogram can be printed on rank 0 alone without a second gather.
        """
        if self._gathered is not None:
            return self._gathered
        records = self.dedup(gather_objects(self._records))
        if not records:
            return None
        shapes = {r["pos_hist"].shape for r in records}
        if len(shapes) != 1:
            raise DataError(f"images disagree on the number of classes: {sorted(shapes)}")
        total = {k: sum(r[k] for r in records) for k in _RECORD_SUMS}
        total["max_prob"] = max(r["max_prob"] for r in records)
        total["rates"] = detection_rates(records)
        total["froc"] = froc_curves(records)
        self._gathered = total
        return total

    def compute(self) -> dict[str, float]:
        """Metrics over every image since :meth:`reset` (all zeros when nothing was seen)."""
        totals = self._totals()
        if totals is None:
            return {name: 0.0 for name in METRIC_NAMES}
        pos, neg = totals["pos_hist"], totals["neg_hist"]
        num_classes = pos.shape[0]
        per_class: dict[str, list[float]] = {name: [] for name in _PER_CLASS}
        for c in range(num_classes):
            tp, fp, fn = (int(totals[k][c]) for k in ("tp", "fp", "fn"))
            per_class["dice"].append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
            per_class["iou"].append(tp / (tp + fp + fn) if tp + fp + fn else 1.0)
            per_class["pr_auc"].append(average_precision(pos[c], neg[c]))
            f1, thr = f1_search(pos[c], neg[c], self.bin_edges, self.min_threshold)
            per_class["best_f1"].append(f1)
            per_class["best_threshold"].append(self.threshold if np.isnan(thr) else thr)
        num_pixels = int(pos.sum() + neg.sum())
        per_class_pixels = pos.sum(1) + neg.sum(1)
        above = self.bin_edges[:-1] >= np.float32(self.min_threshold)
        per_class.update(totals["rates"])
        out = {name: _mean(vals) for name, vals in per_class.items()}
        out["prevalence"] = float(np.mean(pos.sum(1) / np.maximum(per_class_pixels, 1)))
        out["max_prob"] = float(totals["max_prob"])
        out["frac_above_min_threshold"] = float(
            (pos[:, above].sum() + neg[:, above].sum()) / max(num_pixels, 1)
        )
        if num_classes > 1:
            for name, vals in per_class.items():
                for c, v in enumerate(vals):
                    out[f"{name}/{c}"] = float(v)
        return out

    def froc_curves(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """Per class ``(thresholds, fps_per_scan, sensitivity)`` of the lesion FROC
        (:func:`detlab.evaluation.lesions.froc_curves`; same collective rule as
        :meth:`histogram`); None when nothing was evaluated."""
        totals = self._totals()
        return None if totals is None else totals["froc"]

    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """``(bin_edges (K+1,), counts (K,) int64)`` of predicted probabilities over all pixels
        and classes since :meth:`reset` (collective under DDP unless :meth:`compute` ran since the
        last update: then every rank already holds the gathered totals)."""
        totals = self._totals()
        if totals is None:
            return self.bin_edges.copy(), np.zeros(len(self.bin_edges) - 1, dtype=np.int64)
        counts = (totals["pos_hist"] + totals["neg_hist"]).sum(0).astype(np.int64)
        return self.bin_edges.copy(), counts

    def split_histogram(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(bin_edges (K+1,), positives (K,), negatives (K,))``: predicted probabilities of
        ground-truth positive and negative pixels, summed over classes (same collective rule as
        :meth:`histogram`)."""
        totals = self._totals()
        if totals is None:
            zeros = np.zeros(len(self.bin_edges) - 1, dtype=np.int64)
            return self.bin_edges.copy(), zeros, zeros.copy()
        pos = totals["pos_hist"].sum(0).astype(np.int64)
        neg = totals["neg_hist"].sum(0).astype(np.int64)
        return self.bin_edges.copy(), pos, neg

    def format_histogram(self, width: int = 40) -> str:
        """Console bar chart of predicted probabilities (bars on a log scale of counts), one row
        per decade near 0 and 1, with the ground-truth positive pixels of each row."""
        if width < 1:
            raise ConfigError(f"width must be >= 1, got {width!r}")
        totals = self._totals()
        if totals is None:
            return "probability histogram: no images evaluated"
        counts = (totals["pos_hist"] + totals["neg_hist"]).sum(0)
        positives = totals["pos_hist"].sum(0)
        head = (
            f"probability histogram over {int(counts.sum())} pixels "
            f"({int(positives.sum())} positive); max prob {totals['max_prob']:.3g}, "
            f"threshold {self.threshold:g}"
        )
        return "\n".join([head, *format_bars(self.bin_edges, counts, positives, width)])


def _mean(values: list[float]) -> float:
    """Mean over classes, ignoring undefined (NaN) ones; NaN when all are."""
    vals = np.asarray(values, dtype=np.float64)
    return float(np.mean(vals[~np.isnan(vals)])) if (~np.isnan(vals)).any() else float("nan")


def _finite_mask(mask: Tensor, image_id: Any, key: str) -> Tensor:
    if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
        bad = int((~torch.isfinite(mask)).sum())
        raise DataError(
            f"ground-truth {key!r} of image {image_id!r} has {bad} NaN/inf value(s) of "
            f"{mask.numel()}; a mask must be finite (0/1, or soft values compared with 0.5)"
        )
    return mask


def _int64(t: Tensor) -> np.ndarray:
    return t.cpu().numpy().astype(np.int64)


def ground_truth_mask(target: dict[str, Any], meta: dict[str, Any]) -> Tensor:
    """Ground truth ``(C, H, W)`` bool in original image size (see :class:`SegmentationEvaluator`).

    Raises:
        DataError: the target has neither ``orig_mask`` nor ``mask``, ``meta`` lacks
            ``orig_size`` when the mask must be resized, or the mask holds NaN/inf (which
            ``> 0.5`` would silently read as background).
    """
    image_id = meta.get("image_id")
    if target.get("orig_mask") is not None:
        mask = _finite_mask(torch.as_tensor(target["orig_mask"]), image_id, "orig_mask")
        mask = mask.unsqueeze(0) if mask.ndim == 2 else mask
        return mask > 0.5
    if target.get("mask") is None:
        raise DataError(f"target of image {image_id!r} has neither 'orig_mask' nor 'mask'")
    mask = _finite_mask(torch.as_tensor(target["mask"]), image_id, "mask")
    mask = mask.unsqueeze(0) if mask.ndim == 2 else mask
    if "orig_size" not in meta:
        raise DataError(f"meta of image {image_id!r} has no 'orig_size'")
    return maps_to_original(mask, meta, mode="nearest-exact") > 0.5
