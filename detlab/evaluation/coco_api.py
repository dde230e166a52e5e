"""In-memory COCO bbox evaluation: detlab records → COCO dicts → COCOeval → summary numbers.

Kept apart from :mod:`detlab.evaluation.coco` so the evaluator only deals with batches and DDP,
and this module only with the COCO API (pycocotools or faster-coco-eval, same numbers).

A *record* is one image, on the CPU::

    {"image_id": Any, "height": int, "width": int,                      # original image
     "gt_boxes": float64 (G, 4) xyxy px, "gt_labels": int64 (G,), "gt_ignore": bool (G,),
     "dt_boxes": float64 (D, 4) xyxy px, "dt_scores": float64 (D,), "dt_labels": int64 (D,)}

Labels are detlab's 0-based contiguous class indices; COCO category ids are ``label + 1``.
"""

from __future__ import annotations

import contextlib
import gc
import io
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError

__all__ = [
    "Backend",
    "COCO_AREA_RANGES",
    "build_coco_dicts",
    "evaluate_bbox",
    "mean_valid",
    "relative_as_absolute",
    "summary_line",
    "top_detections",
]

Backend = Literal["pycocotools", "faster_coco_eval"]
AreaMode = Literal["absolute", "relative"]

# COCO's own size buckets in px² (pycocotools Params.setDetParams); "all" first, as COCO does.
COCO_AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}


def load_backend(backend: str) -> tuple[Any, Any]:
    """Return ``(COCO, COCOeval)`` classes of ``backend``; ConfigError if it is unknown/missing."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as err:
            raise ConfigError(
                "backend='faster_coco_eval' needs the faster-coco-eval package, which is not "
                "installed: `pip install faster-coco-eval` (or `pip install detlab[fast]`), "
                "or use backend='pycocotools'"
            ) from err
        return COCO, COCOeval_faster
    raise ConfigError(
        f"backend must be 'pycocotools' or 'faster_coco_eval', got {backend!r}"
    )


def build_coco_dicts(
    records: Sequence[dict[str, Any]], num_classes: int, area: AreaMode = "absolute"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Build a COCO ground-truth dataset dict and a detection annotation list from ``records``.

    Image ids are ``1..len(records)`` in record order and annotation ids start at 1 (an id of
    0 means "unmatched" inside COCOeval), whatever ids the dataset uses. ``bbox`` is xywh px.

    ``area`` selects what goes into every annotation's ``"area"`` field, the only thing COCOeval
    compares with ``params.areaRng``: ``"absolute"`` → box area in px² (we have no masks, so the
    box area stands in for COCO's segment area); ``"relative"`` → box area / image area.
    """
    # Tens of thousands of small dicts: the cyclic GC would otherwise rescan the whole heap
    # (a model, cached network outputs) many times over while they are built.
    with _gc_paused():
        return _build_coco_dicts(records, num_classes, area)


@contextlib.contextmanager
def _gc_paused() -> Any:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build_coco_dicts(
    records: Sequence[dict[str, Any]], num_classes: int, area: AreaMode
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    images, gts, dts = [], [], []
    for img_id, rec in enumerate(records, start=1):
        h, w = int(rec["height"]), int(rec["width"])
        images.append({"id": img_id, "height": h, "width": w})
        norm = float(h * w) if area == "relative" else 1.0
        # One numpy pass per image, then plain floats (float64 of each value, as float(v) gave).
        gt = _xywh_rows(rec["gt_boxes"], norm)
        for (x, y, bw, bh, a), label, ignore in zip(gt, _ints(rec["gt_labels"]),
                                                    _ints(rec["gt_ignore"])):
            gts.append({
                "id": len(gts) + 1, "image_id": img_id, "category_id": label + 1,
                "bbox": [x, y, bw, bh], "area": a,
                # COCO's ignore region: never a FP nor a miss, may absorb several detections
                "iscrowd": int(bool(ignore)),
            })
        dt = _xywh_rows(rec["dt_boxes"], norm)
        scores = np.asarray(rec["dt_scores"], dtype=np.float64).reshape(-1).tolist()
        for (x, y, bw, bh, a), score, label in zip(dt, scores, _ints(rec["dt_labels"])):
            dts.append({
                "id": len(dts) + 1, "image_id": img_id, "category_id": label + 1,
                "bbox": [x, y, bw, bh], "area": a, "score": score, "iscrowd": 0,
            })
    categories = [{"id": k + 1, "name": str(k)} for k in range(num_classes)]
    return {"images": images, "annotations": gts, "categories": categories}, dts


def _xywh_rows(boxes: Any, norm: float) -> list[list[float]]:
    """``(N, 4)`` xyxy → rows ``[x, y, w, h, w * h / norm]`` of Python floats (float64)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return np.stack([b[:, 0], b[:, 1], w, h, w * h / norm], 1).tolist()


def _ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1).tolist()]


def top_detections(records: Sequence[dict[str, Any]], max_det: int) -> list[dict[str, Any]]:
    """``records`` with only the ``max_det`` highest-scoring detections per class of each image,
    in their original order: all COCOeval ever looks at (it sorts each image's detections of a
    category by score, stably, and drops those after ``maxDets[-1]``), so the numbers are the
    same and the dicts and matching cost less (a sweep at score 0.001 keeps 300 per image)."""
    out = []
    for rec in records:
        scores = np.asarray(rec["dt_scores"], dtype=np.float64).reshape(-1)
        if scores.size <= max_det:
            out.append(rec)
            continue
        labels = np.asarray(rec["dt_labels"]).reshape(-1)
        order = np.lexsort((-scores, labels))  # by label, then score down; ties: input order
        sorted_labels = labels[order]
        new_class = np.empty(len(order), dtype=bool)
        new_class[0], new_class[1:] = True, sorted_labels[1:] != sorted_labels[:-1]
        starts = np.flatnonzero(new_class)
        first = np.repeat(starts, np.diff(np.append(starts, len(order))))
        keep = np.sort(order[np.arange(len(order)) - first < max_det])
        if keep.size == scores.size:
            out.append(rec)
            continue
        out.append({**rec, "dt_boxes": np.asarray(rec["dt_boxes"]).reshape(-1, 4)[keep],
                    "dt_scores": scores[keep], "dt_labels": labels[keep]})
    return out


def relative_as_absolute(
    records: Sequence[dict[str, Any]], relative: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]] | None:
    """Absolute (px²) ranges that put exactly the same boxes of ``records`` into each relative
    bucket (fractions of the image area) as :func:`build_coco_dicts` ``area="relative"`` does,
    or ``None`` when the images differ in size (then no absolute range can).

    With one image area ``A``, the relative area ``fl(a / A)`` of a box is non-decreasing in its
    absolute area ``a``, so the boxes of a bucket ``lo <= fl(a / A) <= hi`` are those with
    ``a`` between the smallest and the largest such ``a``: these two (of the boxes present) are
    the range, which is exact where ``[lo * A, hi * A]`` could round the other way. A bucket
    with no box gets an empty range. So one COCOeval run can take the absolute and the relative
    buckets together."""
    sizes = {(int(r["height"]), int(r["width"])) for r in records}
    if len(sizes) != 1:
        return None
    h, w = sizes.pop()
    norm = float(h * w)
    areas = [_box_areas(r[k]) for r in records for k in ("gt_boxes", "dt_boxes")]
    absolute = np.unique(np.concatenate(areas)) if areas else np.zeros(0)
    rel = absolute / norm  # the same division as _xywh_rows
    out = {}
    for name, (lo, hi) in relative.items():
        inside = absolute[(rel >= lo) & (rel <= hi)]
        out[name] = (float(inside[0]), float(inside[-1])) if inside.size else (1.0, 0.0)
    return out


def _box_areas(boxes: Any) -> np.ndarray:
    """``w * h`` of ``(N, 4)`` xyxy boxes in float64, as :func:`_xywh_rows` computes it."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def evaluate_bbox(
    gt: dict[str, Any],
    dts: list[dict[str, Any]],
    area_ranges: dict[str, tuple[float, float]],
    max_dets: Sequence[int],
    backend: Backend = "pycocotools",
) -> tuple[np.ndarray, np.ndarray]:
    """Run COCOeval (bbox) with the given area ranges and max-detection limits, silently.

    Returns:
        ``precision`` ``(T, R, K, A, M)`` and ``recall`` ``(T, K, A, M)`` as in COCOeval.eval,
        ``-1`` where a setting has no (non-ignored) ground truth. T = 10 IoU thresholds
        0.50:0.95, R = 101 recall points, K = categories, A = ``area_ranges``, M = ``max_dets``.
    """
    coco_cls, eval_cls = load_backend(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "faster_coco_eval":
            ev = _faster_cocoeval(coco_cls, eval_cls, gt, dts, lean=True)
        else:
            coco_gt = _pycoco(coco_cls, gt)
            coco_dt = _pycoco(coco_cls, {**_meta(gt), "annotations": dts})
            ev = eval_cls(coco_gt, coco_dt, "bbox")
        _run(ev, area_ranges, max_dets)
    return np.asarray(ev.eval["precision"]), np.asarray(ev.eval["recall"])


def _run(ev: Any, area_ranges: dict[str, tuple[float, float]], max_dets: Sequence[int]) -> None:
    ev.params.areaRng = [list(r) for r in area_ranges.values()]
    ev.params.areaRngLbl = list(area_ranges)
    ev.params.maxDets = list(max_dets)
    ev.evaluate()
    ev.accumulate()


def _faster_cocoeval(coco_cls: Any, eval_cls: Any, gt: dict[str, Any],
                     dts: list[dict[str, Any]], lean: bool) -> Any:
    """A faster-coco-eval COCOeval over ``gt`` and ``dts``. ``lean``: without the two COCO
    indexes (:class:`faster_coco_eval.COCO`), whose only use in a bbox evaluation is to hand
    each (image, category)'s annotations to the C++ datasets, in list order: done here directly
    (a sixth of the evaluation's cost at 300 detections per image). Falls back to the indexes
    if this faster-coco-eval's COCOeval is not built the way that needs."""
    if lean:
        try:
            ev = _lean_class(eval_cls)(None, None, "bbox", print_function=_quiet)
            ev.params.imgIds = [im["id"] for im in gt["images"]]
            ev.params.catIds = [c["id"] for c in gt["categories"]]
            ev.lean_annotations = (gt["annotations"], dts)
            return ev
        except (AttributeError, TypeError):
            pass
    coco_gt = coco_cls(gt, print_function=_quiet)
    coco_dt = coco_cls({**_meta(gt), "annotations": dts}, print_function=_quiet)
    return eval_cls(coco_gt, coco_dt, "bbox", print_function=_quiet)


_LEAN: dict[Any, Any] = {}


def _lean_class(eval_cls: Any) -> Any:
    """``eval_cls`` (faster-coco-eval's COCOeval_faster) with a ``_prepare`` that fills its C++
    ground-truth and detection datasets from ``lean_annotations`` as its own ``_prepare`` does
    for bbox from the COCO indexes: every annotation per (image, category) in list order, the
    crowd flag as ``ignore``, the pairs with both kinds for the IoU step."""
    if eval_cls in _LEAN:
        return _LEAN[eval_cls]
    for name in ("_prepare", "evaluate"):
        if not callable(getattr(eval_cls, name, None)):
            raise AttributeError(name)

    class Lean(eval_cls):
        lean_annotations: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])

        def _prepare(self) -> None:
            gts, dts = self.lean_annotations
            for ann in gts:  # before the datasets see them, as in the library's _prepare
                ann["ignore"] = int(ann.get("iscrowd", 0))
            pairs = []
            for dataset, anns in ((self.gt_dataset, gts), (self.dt_dataset, dts)):
                dataset.clean()
                seen = set()
                for ann in anns:
                    key = (ann["image_id"], ann["category_id"])
                    dataset.append_ref(key[0], key[1], ann)
                    seen.add(key)
                pairs.append(seen)
            self._nonempty_iou_pairs = pairs[0] & pairs[1]

    _LEAN[eval_cls] = Lean
    return Lean


def _quiet(*args: Any, **kwargs: Any) -> None:
    return None


def _meta(gt: dict[str, Any]) -> dict[str, Any]:
    return {"images": gt["images"], "categories": gt["categories"]}


def _pycoco(coco_cls: Any, dataset: dict[str, Any]) -> Any:
    # Built directly rather than via loadRes, which crashes on an empty result list and would
    # overwrite the "area" we set for relative buckets.
    coco = coco_cls()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def mean_valid(values: np.ndarray) -> float:
    """Mean over entries ``> -1`` (COCO's "defined" settings); ``-1.0`` when there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def summary_line(
    ap: bool, value: float, area: str, max_dets: int, iou: float | None = None
) -> str:
    """One line of COCOeval.summarize(), formatted exactly as pycocotools prints it."""
    title = "Average Precision" if ap else "Average Recall"
    kind = "(AP)" if ap else "(AR)"
    iou_str = "0.50:0.95" if iou is None else f"{iou:0.2f}"
    return (
        f" {title:<18} {kind} @[ IoU={iou_str:<9} | area={area:>6s} | "
        f"maxDets={max_dets:>3d} ] = {value:0.3f}"
    )
