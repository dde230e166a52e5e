"""``detlab anchors RECIPE [overrides]``: how well the recipe's anchors fit the training boxes,
and anchor sizes/ratios suggested by k-means with the ``1 - IoU`` distance.

Boxes are read in network input coordinates (after the dataset's letterbox resize, before random
augmentation) from annotations only when the dataset can (``DetectionDataset.annotations``: no
image decoding), else from ``dataset[i]``; at most ``--max-images`` images, a seeded random
subset of larger datasets. Coverage is reported as the mean best IoU and the share of boxes whose
best IoU reaches 0.5 and 0.7 (the RPN's positive threshold), for anchor *shapes* (centres
aligned) and for anchors on the model's feature *grids* (see :mod:`detlab.ops.anchors`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
__all__ = ["training_boxes", "analyse", "format_report", "run_anchors", "add_command"]


def training_boxes(dataset: Any, max_images: int = 2000, seed: int = 0) -> tuple[np.ndarray, int]:
    """``((N, 4) float64 xyxy input px, images read)`` of non-ignored, non-empty boxes."""
    from ..data.datasets.detection_base import DetectionDataset
    from ..data.letterbox import fit_size

    n = len(dataset)
    indices = np.arange(n)
    if n > max_images:
        indices = np.sort(np.random.default_rng(seed).choice(n, max_images, replace=False))
    rows = []
    for i in indices.tolist():
        ann = dataset.annotations(i) if isinstance(dataset, DetectionDataset) else None
        if ann is not None and ann.size is not None:
            h, w = ann.size
            boxes = np.asarray(ann.boxes, np.float64).reshape(-1, 4)[~np.asarray(ann.ignore, bool)]
            if ann.normalized:
                boxes = boxes * np.array([w, h, w, h])
            new_h, new_w = fit_size(h, w, dataset.img_size, dataset.scale_up)
            boxes = boxes * np.array([new_w / w, new_h / h, new_w / w, new_h / h])
        else:
            target = dataset[i]["target"]
            boxes = np.asarray(target.get("boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)
            ignore = target.get("ignore")
            if ignore is not None and len(ignore) == len(boxes):
                boxes = boxes[~np.asarray(ignore, bool)]
        rows.append(boxes)
    boxes = np.concatenate(rows) if rows else np.zeros((0, 4))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], len(indices)


def _fit(boxes: np.ndarray, strides: Sequence[int], sizes: Any, ratios: Any) -> dict[str, Any]:
    from ..ops.anchors import anchor_shapes, best_grid_iou, best_shape_iou, coverage

    wh = boxes[:, 2:] - boxes[:, :2]
    return {
        "anchor_sizes": [list(s) for s in sizes],
        "aspect_ratios": [list(r) for r in ratios],
        "anchors_per_location": len(sizes[0]) * len(ratios[0]),
        "shape": coverage(best_shape_iou(wh, anchor_shapes(sizes, ratios))),
        "grid": coverage(best_grid_iou(boxes, strides, sizes, ratios)),
    }


def analyse(
    boxes: np.ndarray,
    strides: Sequence[int],
    anchor_sizes: Any,
    aspect_ratios: Any,
    sizes_per_level: int | None = None,
    num_ratios: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Coverage of the current anchors and of k-means suggestions for ``boxes`` (N, 4) xyxy.

    ``sizes_per_level`` / ``num_ratios`` default to the current counts.
    """
    from ..ops.anchors import anchor_config, suggest_anchors

    if len(boxes) == 0:
        raise ConfigError("detlab anchors: the training set has no boxes to fit anchors to")
    sizes, ratios = anchor_config(anchor_sizes, aspect_ratios, strides, "detlab anchors")
    new_sizes, new_ratios, how = suggest_anchors(
        boxes, strides, sizes_per_level or len(sizes[0]), num_ratios or len(ratios[0]), seed
    )
    wh = boxes[:, 2:] - boxes[:, :2]
    return {
        "num_boxes": int(len(boxes)),
        "strides": list(strides),
        "width": _quantiles(wh[:, 0]),
        "height": _quantiles(wh[:, 1]),
        "height_over_width": _quantiles(wh[:, 1] / wh[:, 0]),
        "current": _fit(boxes, strides, sizes, ratios),
        "suggested": {**_fit(boxes, strides, new_sizes, (new_ratios,) * len(new_sizes)),
                      "sizes_from": how},
    }


def _quantiles(x: np.ndarray) -> dict[str, float]:
    p5, p50, p95 = np.percentile(x, [5, 50, 95])
    return {"p5": float(p5), "median": float(p50), "p95": float(p95)}


def _fmt_sizes(sizes: list[list[float]]) -> str:
    return "[" + ", ".join("[" + ", ".join(f"{v:g}" for v in s) + "]" for s in sizes) + "]"


def format_report(report: dict[str, Any], images: int | None = None) -> str:
    """The report as text: box statistics, a coverage table, and the override to apply."""
    q = {k: report[k] for k in ("width", "height", "height_over_width")}
    read = f" from {images} image(s)" if images is not None else ""
    lines = [
        f"training boxes: {report['num_boxes']}{read} (input px), strides {report['strides']}",
        *(f"  {k:<17} median {v['median']:.2f}  (5%: {v['p5']:.2f}, 95%: {v['p95']:.2f})"
          for k, v in q.items()),
        "",
        f"{'':<10} {'per loc':>7}  {'shape: mean IoU':>15} {'>=0.5':>6} {'>=0.7':>6}   "
        f"{'grid: mean IoU':>14} {'>=0.5':>6} {'>=0.7':>6}",
    ]
    for name in ("current", "suggested"):
        r = report[name]
        s, g = r["shape"], r["grid"]
        lines.append(
            f"{name:<10} {r['anchors_per_location']:>7}  {s['mean_best_iou']:>15.3f} "
            f"{s['frac_iou>=0.5']:>6.1%} {s['frac_iou>=0.7']:>6.1%}   {g['mean_best_iou']:>14.3f} "
            f"{g['frac_iou>=0.5']:>6.1%} {g['frac_iou>=0.7']:>6.1%}"
        )
        lines.append(f"{'':<10} sizes {_fmt_sizes(r['anchor_sizes'])}  ratios (h/w) "
                     f"{_fmt_sizes(r['aspect_ratios'][:1])[1:-1]}")
    sug = report["suggested"]
    lines += ["", f"suggested sizes from: {sug['sizes_from']}; to use the suggestion:",
              f"  model.head.rpn.anchor_generator.sizes={_fmt_sizes(sug['anchor_sizes'])} "
              "model.head.rpn.anchor_generator.aspect_ratios="
              f"{_fmt_sizes(sug['aspect_ratios'][:1])[1:-1]}"]
    return "\n".join(lines)


def run_anchors(recipe: Any, max_images: int = 2000, sizes_per_level: int | None = None,
                num_ratios: int | None = None, seed: int = 0) -> tuple[dict[str, Any], int]:
    """Build the recipe's model (for strides and anchors) and training set; return
    ``(report, images read)``."""
    from ..data.datamodule import build_dataset
    from ..registry import MODELS

    model = MODELS.build(recipe.section("model"), key="model")
    head = model.head
    if not hasattr(head, "anchor_sizes") or not hasattr(head, "aspect_ratios"):
        raise ConfigError(
            f"detlab anchors: head {type(head).__name__} has no anchor_sizes/aspect_ratios "
            "(anchor-based heads such as FasterRCNNHead have)"
        )
    dataset = build_dataset(recipe.section("data").get("train"), key="data.train")
    boxes, images = training_boxes(dataset, max_images, seed)
    report = analyse(boxes, head.strides, head.anchor_sizes, head.aspect_ratios,
                     sizes_per_level, num_ratios, seed)
    return report, images


def cmd_anchors(args: argparse.Namespace) -> int:
    from ..recipe import load

    recipe = load(args.recipe, args.overrides)
    report, images = run_anchors(recipe, args.max_images, args.sizes_per_level, args.num_ratios,
                                 args.seed)
    print(format_report(report, images))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def add_command(subparsers: Any) -> None:
    """Add ``detlab anchors`` to the CLI."""
    p = subparsers.add_parser(
        "anchors", help="anchor coverage of the training boxes, k-means suggestions",
        description="Report how well RECIPE's anchors cover its training boxes (best IoU per "
                    "box) and suggest anchor sizes/ratios by k-means with the 1 - IoU distance.",
    )
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="e.g. data.train.img_size=320")
    p.add_argument("--max-images", type=_positive_int, default=2000,
                   help="read at most this many training images (seeded subset)")
    p.add_argument("--sizes-per-level", type=_positive_int, default=None,
                   help="sizes per level of the suggestion (default: as now)")
    p.add_argument("--num-ratios", type=_positive_int, default=None,
                   help="aspect ratios of the suggestion (default: as now)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    p.set_defaults(func=cmd_anchors)
