"""Why mAP50-95 stops where it stops: localisation errors per size bucket, AP at each IoU
threshold and the annotation-noise ceiling (what ``detlab analyze`` reports).

Works on the records of :mod:`detlab.evaluation.coco_api` (one dict per image, boxes xyxy in
original pixels), so the numbers are those of :class:`~detlab.evaluation.coco.CocoEvaluator`.

Size buckets (:func:`bucket_masks`) are COCO's absolute ones on the box area in px²
(``small`` < 32², ``medium`` < 96², ``large``) and the relative ones of
:data:`~detlab.evaluation.coco.HELMET_RELATIVE_AREAS` on box area / image area
(``rel_tiny`` < 0.1 %, ``rel_small`` 0.1-0.5 %, ``rel_medium`` 0.5-5 %, ``rel_large`` > 5 %).

The noise ceiling (:func:`noise_ceiling`) is the AP of a detector that finds every object
exactly, scored against annotations that carry ±``noise_px`` of uniform noise on each edge: the
ground truth is scored against a jittered copy of itself. The jittered boxes get *uniform
random* scores, not one shared score: a perfect detector knows nothing about which boxes the
annotator shifted, so its ranking is independent of which predictions hit at a threshold, and
with equal scores COCOeval would break the ties by image order (an artefact of the dataset's
order). The Monte Carlo over seeds averages over the jitter and that ranking. The ``oracle``
column ranks the hits first (score = IoU with its own ground truth): the strict upper bound,
equal to the share of objects whose jittered box still reaches each IoU threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .coco import HELMET_RELATIVE_AREAS
from .coco_api import COCO_AREA_RANGES, Backend, build_coco_dicts, evaluate_bbox, mean_valid

__all__ = [
    "IOU_THRESHOLDS",
    "box_iou",
    "match_greedy",
    "MatchedPairs",
    "match_records",
    "bucket_masks",
    "error_summary",
    "ap_per_threshold",
    "jitter_boxes",
    "ceiling_records",
    "Ceiling",
    "noise_ceiling",
]

#: COCO's IoU thresholds 0.50:0.05:0.95
IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes -> ``(N, M)`` (0 where a union is empty)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = w.clip(0) * h.clip(0)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_greedy(
    gt_boxes: np.ndarray, gt_labels: np.ndarray, dt_boxes: np.ndarray, dt_scores: np.ndarray,
    dt_labels: np.ndarray, iou_threshold: float = 0.5, gt_ignore: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCO-style greedy matching of one image: detections by descending score (stable, as
    COCOeval's mergesort) each take the still-unmatched ground truth of their class with the
    highest IoU, if that IoU is ``>= iou_threshold``. Ignored ground truths take no part.

    Returns:
        ``(gt_index, dt_index, iou)``: int arrays of matched rows and ``(P,)`` float IoUs.
    """
    gt_labels = np.asarray(gt_labels).reshape(-1)
    dt_labels = np.asarray(dt_labels).reshape(-1)
    iou = box_iou(dt_boxes, gt_boxes)  # (D, G)
    allowed = dt_labels[:, None] == gt_labels[None, :]
    if gt_ignore is not None:
        allowed &= ~np.asarray(gt_ignore, bool).reshape(-1)[None, :]
    iou = np.where(allowed, iou, -1.0)
    taken = np.zeros(len(gt_labels), bool)
    gi, di, vi = [], [], []
    for d in np.argsort(-np.asarray(dt_scores, np.float64).reshape(-1), kind="mergesort"):
        row = np.where(taken, -1.0, iou[d])
        if not row.size:
            break
        g = int(np.argmax(row))
        if row[g] >= iou_threshold:
            taken[g] = True
            gi.append(g)
            di.append(int(d))
            vi.append(float(row[g]))
    return np.array(gi, np.int64), np.array(di, np.int64), np.array(vi, np.float64)


@dataclass
class MatchedPairs:
    """Matched (prediction, ground truth) pairs over a set of images, original pixels.

    Attributes:
        gt, dt: ``(P, 4)`` xyxy boxes of the ground truth and its matched prediction.
        iou: ``(P,)`` their IoU. scores: ``(P,)`` the predictions' scores.
        image_area: ``(P,)`` area (px²) of the image each pair is in.
        record: ``(P,)`` index of the record (image) of each pair.
        gt_index, dt_index: ``(P,)`` rows of the pair in that record's ``gt_*`` / ``dt_*``.
    """

    gt: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    dt: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    iou: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    image_area: np.ndarray = field(default_factory=lambda: np.zeros(0))
    record: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    gt_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dt_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def errors(self) -> dict[str, np.ndarray]:
        """Per pair, in px: ``offset`` (distance between the box centres), ``dx``, ``dy``
        (centre, prediction - truth), ``dw``, ``dh`` (size, prediction - truth)."""
        cg = (self.gt[:, :2] + self.gt[:, 2:]) / 2
        cd = (self.dt[:, :2] + self.dt[:, 2:]) / 2
        sg, sd = self.gt[:, 2:] - self.gt[:, :2], self.dt[:, 2:] - self.dt[:, :2]
        d = cd - cg
        return {"offset": np.hypot(d[:, 0], d[:, 1]), "dx": d[:, 0], "dy": d[:, 1],
                "dw": sd[:, 0] - sg[:, 0], "dh": sd[:, 1] - sg[:, 1]}


def match_records(records: Sequence[Mapping[str, Any]], iou_threshold: float = 0.5
                  ) -> MatchedPairs:
    """:func:`match_greedy` on every record (coco_api format), pairs concatenated."""
    parts: list[tuple] = []
    for r, rec in enumerate(records):
        g, d, v = match_greedy(rec["gt_boxes"], rec["gt_labels"], rec["dt_boxes"],
                               rec["dt_scores"], rec["dt_labels"], iou_threshold,
                               rec["gt_ignore"])
        gt = np.asarray(rec["gt_boxes"], np.float64).reshape(-1, 4)
        dt = np.asarray(rec["dt_boxes"], np.float64).reshape(-1, 4)
        scores = np.asarray(rec["dt_scores"], np.float64).reshape(-1)
        area = float(rec["height"]) * float(rec["width"])
        parts.append((gt[g], dt[d], v, scores[d], np.full(len(g), area),
                      np.full(len(g), r, np.int64), g, d))
    if not parts:
        return MatchedPairs()
    return MatchedPairs(*(np.concatenate(p) for p in zip(*parts)))


def bucket_masks(boxes: np.ndarray, image_area: np.ndarray | float) -> dict[str, np.ndarray]:
    """Boolean masks of ``(N, 4)`` xyxy px boxes per size bucket: ``all``, COCO's ``small`` /
    ``medium`` / ``large`` (box area in px²) and ``rel_<name>`` of
    :data:`~detlab.evaluation.coco.HELMET_RELATIVE_AREAS` (box area / ``image_area``).
    Ranges are half-open ``[low, high)``, so every box is in exactly one bucket of each kind."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    rel = area / np.asarray(image_area, np.float64)
    out = {"all": np.ones(len(boxes), bool)}
    for name, (lo, hi) in COCO_AREA_RANGES.items():
        if name != "all":
            out[name] = (area >= lo) & (area < hi)
    for name, (lo, hi) in HELMET_RELATIVE_AREAS.items():
        out[f"rel_{name}"] = (rel >= lo) & (rel < hi)
    return out


def error_summary(pairs: MatchedPairs) -> dict[str, dict[str, float]]:
    """Per bucket of the ground truth (:func:`bucket_masks`): ``n`` pairs, IoU median, and
    median / p90 of the centre offset and of ``|dw|``, ``|dh|`` in px (NaN without pairs)."""
    err = pairs.errors()
    out = {}
    for name, mask in bucket_masks(pairs.gt, pairs.image_area).items():
        row: dict[str, float] = {"n": int(mask.sum())}
        stats = {"iou": pairs.iou, "offset": err["offset"], "abs_dw": np.abs(err["dw"]),
                 "abs_dh": np.abs(err["dh"])}
        for key, values in stats.items():
            v = values[mask]
            qs = ("median",) if key == "iou" else ("median", "p90")
            for q in qs:
                p = 50 if q == "median" else 90
                row[f"{key}_{q}"] = float(np.percentile(v, p)) if v.size else float("nan")
        out[name] = row
    return out


def ap_per_threshold(records: Sequence[Mapping[str, Any]], num_classes: int,
                     max_dets: int = 100, backend: Backend = "pycocotools"
                     ) -> dict[str, np.ndarray]:
    """AP at each of the 10 IoU thresholds (:data:`IOU_THRESHOLDS`) per bucket, from
    COCOeval's ``eval['precision']`` (mean over recall points and classes, as COCO's AP), for
    ``all``, COCO's absolute and the ``rel_`` buckets. ``(10,)`` arrays, ``-1`` where a bucket
    has no ground truth; their mean over thresholds is COCO's mAP50-95 of the bucket."""
    out: dict[str, np.ndarray] = {}
    if not records or num_classes == 0:
        names = list(COCO_AREA_RANGES) + [f"rel_{k}" for k in HELMET_RELATIVE_AREAS]
        return {k: np.full(10, -1.0) for k in names}
    for mode, ranges, prefix in (("absolute", COCO_AREA_RANGES, ""),
                                 ("relative", HELMET_RELATIVE_AREAS, "rel_")):
        gt, dt = build_coco_dicts(records, num_classes, area=mode)
        prec, _ = evaluate_bbox(gt, dt, ranges, [max_dets], backend)
        for a, name in enumerate(ranges):
            out[prefix + name] = np.array([mean_valid(prec[t, :, :, a, -1]) for t in range(10)])
    return out


def jitter_boxes(boxes: np.ndarray, noise_px: float, rng: np.random.Generator,
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """``(N, 4)`` xyxy boxes with each edge moved by uniform noise in ``[-noise_px, noise_px]``
    px; edges that cross are swapped back into order and, with ``size`` (h, w), the box is
    clipped to ``[0, w] x [0, h]`` as annotations are."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = boxes + rng.uniform(-noise_px, noise_px, boxes.shape)
    out = np.concatenate([np.minimum(out[:, :2], out[:, 2:]),
                          np.maximum(out[:, :2], out[:, 2:])], axis=1)
    if size is not None:
        h, w = size
        out[:, 0::2] = out[:, 0::2].clip(0, w)
        out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out


def ceiling_records(records: Sequence[Mapping[str, Any]], noise_px: float,
                    rng: np.random.Generator, scores: str = "random") -> list[dict[str, Any]]:
    """Copies of ``records`` whose predictions are their own non-ignored ground truth jittered
    by :func:`jitter_boxes`. ``scores``: ``"random"`` (uniform, see the module docstring) or
    ``"oracle"`` (IoU of each jittered box with its ground truth: hits ranked first)."""
    if scores not in ("random", "oracle"):
        raise ValueError(f"scores must be 'random' or 'oracle', got {scores!r}")
    # Scores get their own stream, drawn first in both modes, so that one seed gives the same
    # jitter for "random" and "oracle".
    score_rng = np.random.default_rng(int(rng.integers(2**63)))
    out = []
    for rec in records:
        keep = ~np.asarray(rec["gt_ignore"], bool).reshape(-1)
        gt = np.asarray(rec["gt_boxes"], np.float64).reshape(-1, 4)[keep]
        dt = jitter_boxes(gt, noise_px, rng, (int(rec["height"]), int(rec["width"])))
        if scores == "random":
            s = score_rng.uniform(0.0, 1.0, len(dt))
        else:
            s = np.diagonal(box_iou(dt, gt)).copy() if len(dt) else np.zeros(0)
        out.append({**rec, "dt_boxes": dt, "dt_scores": s,
                    "dt_labels": np.asarray(rec["gt_labels"]).reshape(-1)[keep]})
    return out


@dataclass
class Ceiling:
    """The GT-noise ceiling per bucket (:func:`noise_ceiling`).

    Attributes:
        noise_px: the ± uniform noise per edge, px. seeds: Monte Carlo runs.
        mean, std: ``{bucket: (10,)}`` AP per IoU threshold over the seeds (``-1``: no
            ground truth in the bucket).
        oracle: ``{bucket: (10,)}`` the same with the hits ranked first (the strict bound).
        maps: ``{bucket: (mean, std)}`` of the mAP50-95 over the seeds (``(-1, 0)``: no
            ground truth in the bucket).
    """

    noise_px: float
    seeds: int
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    oracle: dict[str, np.ndarray]
    maps: dict[str, tuple[float, float]]


def noise_ceiling(records: Sequence[Mapping[str, Any]], num_classes: int, noise_px: float,
                  seeds: int = 5, max_dets: int = 100, backend: Backend = "pycocotools",
                  first_seed: int = 0) -> Ceiling:
    """Expected AP per IoU threshold and bucket of the ground truth scored against itself
    jittered by ±``noise_px`` (module docstring), by Monte Carlo over ``seeds`` seeds
    (``first_seed``, ``first_seed + 1``, ...)."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    runs, maps, oracle_runs = [], [], []
    for k in range(seeds):
        rng = np.random.default_rng(first_seed + k)
        ap = ap_per_threshold(ceiling_records(records, noise_px, rng), num_classes, max_dets,
                              backend)
        runs.append(ap)
        maps.append({b: mean_valid(v) for b, v in ap.items()})
        rng = np.random.default_rng(first_seed + k)  # the same jitter, hits first
        oracle_runs.append(ap_per_threshold(ceiling_records(records, noise_px, rng, "oracle"),
                                            num_classes, max_dets, backend))
    names = list(runs[0])
    mean = {b: _mean_defined([r[b] for r in runs]) for b in names}
    std = {b: np.std([r[b] for r in runs], axis=0) * (mean[b] > -1) for b in names}
    oracle = {b: _mean_defined([r[b] for r in oracle_runs]) for b in names}
    map_stats = {}
    for b in names:
        m = np.array([d[b] for d in maps])
        map_stats[b] = (float(m.mean()), float(m.std())) if (m > -1).all() else (-1.0, 0.0)
    return Ceiling(float(noise_px), seeds, mean, std, oracle, map_stats)


def _mean_defined(values: list[np.ndarray]) -> np.ndarray:
    arr = np.array(values)
    return np.where((arr > -1).all(axis=0), arr.mean(axis=0), -1.0)
