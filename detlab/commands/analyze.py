"""``detlab analyze CKPT [overrides] [--out DIR]``: why a box detector's mAP50-95 stops where it
stops, over the val (or test) split.

Writes ``analysis.md`` (the report), ``analysis.json`` (its numbers) and PNGs to ``--out``
(default: ``<run>/analysis`` next to the run's ``checkpoints/`` folder):

* the IoU of each prediction matched to a ground truth (greedy, COCO-style, IoU >= 0.5, by
  score) as histograms per size bucket (``iou_hist.png``), and the centre offset and width /
  height error in px per bucket (median, p90);
* AP at each IoU threshold 0.50 ... 0.95 per bucket, from COCOeval's precision array
  (:func:`detlab.evaluation.analysis.ap_per_threshold`), next to the GT-noise ceiling
  (:func:`detlab.evaluation.analysis.noise_ceiling`, ±``--noise-px`` per edge, mean ± std over
  ``--seeds``) in a table and ``ap_vs_ceiling.png``; with ``--noise-from KEY=VALUE`` (overrides
  that read a second annotation of the same images) the ±k is estimated from the two
  annotations (:mod:`detlab.evaluation.annotation_noise`);
* ``gallery.png``: the ``--gallery`` smallest ground-truth boxes, cropped from the original
  image and enlarged, ground truth green, prediction red;
* train vs val object sizes (``check-data``'s statistics, histogram and warning,
  ``object_sizes.png``).

Buckets: COCO's absolute ones (box area in px²) and the relative ones (``rel_tiny`` < 0.1 % of
the image, ``rel_small`` 0.1-0.5 %, ``rel_medium`` 0.5-5 %, ``rel_large`` > 5 %).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..evaluation.coco_api import mean_valid
from .analysis_plots import GalleryItem, ap_curve_png, gallery_png, iou_histogram_png

if TYPE_CHECKING:  # evaluation.analysis imports torch: loaded when the command runs, so
    # that building the parser (`detlab analyze --help`) stays fast
    from ..evaluation.analysis import Ceiling, MatchedPairs
    from ..evaluation.annotation_noise import NoiseEstimate

__all__ = ["collect_records", "analyze", "default_out_dir", "add_command"]


def default_out_dir(checkpoint: str | Path) -> Path:
    """``<run>/analysis`` for ``<run>/checkpoints/x.ckpt``, else ``analysis/`` next to it."""
    ckpt = Path(checkpoint)
    if ckpt.parent.name == "checkpoints":
        return ckpt.parent.parent / "analysis"
    return ckpt.parent / "analysis"


def collect_records(task: Any, split: str) -> tuple[list[dict[str, Any]], Any]:
    """Run ``task``'s model over ``split`` with the inference loop of ``detlab eval`` and
    return the per-image records (:mod:`detlab.evaluation.coco_api` format, original px) in
    dataset order, and the dataset."""
    import torch

    from ..engine.inference import data_module, default_device, is_box_head, predictions
    from ..evaluation.coco import CocoEvaluator

    if not is_box_head(task):
        raise ConfigError(f"detlab analyze: this checkpoint's head "
                          f"({type(task.model.head).__name__}) predicts no boxes; analyze "
                          "works on box detectors (YOLO, Faster R-CNN)")
    data = data_module(task)
    loader = data.val_dataloader() if split == "val" else data.test_dataloader()
    # CocoEvaluator builds exactly the records `detlab eval` scores (ground truth mapped to
    # original px, validated predictions); analyze reads them instead of re-implementing that.
    recorder = CocoEvaluator(relative_areas=None, max_dets=_max_dets(task))
    device = default_device()
    task.to(device)
    with torch.inference_mode():
        # data=: a recipe with inference.slicing is analyzed on its sliced predictions
        for preds, batch in predictions(task, loader, device, data=data):
            recorder.update(preds, batch)
    return list(recorder._records), data.dataset(split)


def second_annotation_records(task: Any, split: str, overrides: list[str]
                              ) -> list[dict[str, Any]]:
    """Ground-truth records (original px) of ``split`` read with the recipe ``overrides`` that
    point its dataset at a second annotation of the same images (another annotator, another
    round), e.g. ``data.val.ann_file=val_annotator2.json``. The network does not run."""
    import copy

    import torch

    from ..data.datamodule import DataModule
    from ..evaluation.coco import CocoEvaluator
    from ..recipe import apply_overrides
    from ..structures import Prediction

    data_cfg = copy.deepcopy(dict(task.recipe.section("data")))
    section = {"data": data_cfg}
    apply_overrides(section, [o if o.lstrip("+").startswith("data.") else f"data.{o}"
                              for o in overrides])
    data = DataModule(section["data"], size_divisor=task.model.size_divisor)
    loader = data.val_dataloader() if split == "val" else data.test_dataloader()
    recorder = CocoEvaluator(relative_areas=None)
    empty = Prediction(boxes=torch.zeros(0, 4), scores=torch.zeros(0),
                       labels=torch.zeros(0, dtype=torch.int64))
    for batch in loader:
        recorder.update([empty] * len(batch.meta), batch)
    return list(recorder._records)


def noise_from_repeats(records: list[dict[str, Any]], repeats: list[dict[str, Any]]
                       ) -> NoiseEstimate:
    """:func:`~detlab.evaluation.annotation_noise.estimate_noise_px` between the split's
    ground truth and a second annotation of it, paired by image id (a DataError names the
    images only one of them has)."""
    from ..errors import DataError
    from ..evaluation.annotation_noise import estimate_noise_px

    first = {str(r["image_id"]): r for r in records}
    second = {str(r["image_id"]): r for r in repeats}
    if first.keys() != second.keys():
        only_a = sorted(first.keys() - second.keys())[:5]
        only_b = sorted(second.keys() - first.keys())[:5]
        raise DataError(
            f"--noise-from: the second annotation covers other images than the split "
            f"({len(first)} vs {len(second)} images; only in the split: {only_a}, only in the "
            f"second annotation: {only_b})")
    ids = sorted(first)
    keep = [(~first[i]["gt_ignore"], ~second[i]["gt_ignore"]) for i in ids]
    return estimate_noise_px(
        [first[i]["gt_boxes"][a] for i, (a, _) in zip(ids, keep)],
        [first[i]["gt_labels"][a] for i, (a, _) in zip(ids, keep)],
        [second[i]["gt_boxes"][b] for i, (_, b) in zip(ids, keep)],
        [second[i]["gt_labels"][b] for i, (_, b) in zip(ids, keep)])


def _max_dets(task: Any) -> int:
    return int(getattr(task.evaluator, "max_dets", 100) or 100)


def _num_classes(task: Any, records: list[dict[str, Any]]) -> int:
    n = int(getattr(task.model.head, "num_classes", 0) or 0)
    seen = [int(r[k].max()) + 1 for r in records for k in ("gt_labels", "dt_labels")
            if r[k].size]
    return max([n] + seen)


def _gt_buckets(records: list[dict[str, Any]]) -> dict[str, int]:
    from ..evaluation.analysis import bucket_masks

    boxes, areas = [], []
    for r in records:
        keep = ~np.asarray(r["gt_ignore"], bool)
        boxes.append(np.asarray(r["gt_boxes"], np.float64).reshape(-1, 4)[keep])
        areas.append(np.full(int(keep.sum()), float(r["height"]) * float(r["width"])))
    if not boxes:
        return {}
    masks = bucket_masks(np.concatenate(boxes), np.concatenate(areas))
    return {k: int(m.sum()) for k, m in masks.items()}


def _gallery(records: list[dict[str, Any]], pairs: MatchedPairs, dataset: Any, n: int
             ) -> tuple[list[GalleryItem], str | None]:
    """The ``n`` smallest non-ignored ground truths, cropped from the original images."""
    from ..evaluation.analysis import box_iou

    if n <= 0:
        return [], None
    if not callable(getattr(dataset, "load_raw", None)):
        return [], f"no gallery: {type(dataset).__name__} has no load_raw() for the originals"
    cands = []
    for r, rec in enumerate(records):
        gt = np.asarray(rec["gt_boxes"], np.float64).reshape(-1, 4)
        for g in np.flatnonzero(~np.asarray(rec["gt_ignore"], bool)):
            b = gt[g]
            cands.append(((b[2] - b[0]) * (b[3] - b[1]), r, int(g)))
    matched = {(int(r), int(g)): int(d) for r, g, d in
               zip(pairs.record, pairs.gt_index, pairs.dt_index)}
    items = []
    for area, r, g in sorted(cands)[:n]:
        rec = records[r]
        image, ann = dataset.load_raw(r)
        if ann.image_id != rec["image_id"]:
            return [], (f"no gallery: dataset item {r} is image {ann.image_id!r}, the loader's "
                        f"was {rec['image_id']!r} (a dataset not read in order)")
        gt = np.asarray(rec["gt_boxes"], np.float64)[g]
        dt = np.asarray(rec["dt_boxes"], np.float64).reshape(-1, 4)
        pred, what = None, "no overlap"
        if (r, g) in matched:
            d = matched[(r, g)]
            pred, what = dt[d], "matched"
        elif len(dt):
            same = np.asarray(rec["dt_labels"]) == rec["gt_labels"][g]
            ious = np.where(same, box_iou(dt, gt[None])[:, 0], 0.0)
            if ious.max() > 0:
                d = int(np.argmax(ious))
                pred, what = dt[d], "unmatched"
        iou = float(box_iou(pred[None], gt[None])[0, 0]) if pred is not None else 0.0
        score = float(rec["dt_scores"][d]) if pred is not None else 0.0
        side = max(gt[2] - gt[0], gt[3] - gt[1], 1.0)
        half = max(2.5 * side, 12.0)  # context: ~5 box sides, at least 24 px
        cx, cy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
        h, w = image.shape[:2]
        x0, y0 = int(max(0, np.floor(cx - half))), int(max(0, np.floor(cy - half)))
        x1, y1 = int(min(w, np.ceil(cx + half))), int(min(h, np.ceil(cy + half)))
        caption = (f"{gt[2] - gt[0]:.0f}x{gt[3] - gt[1]:.0f} px, {what}\n"
                   + (f"IoU {iou:.2f} score {score:.2f}" if pred is not None else ""))
        items.append(GalleryItem(image[y0:y1, x0:x1], (x0, y0), gt, pred, caption))
    return items, None


def _size_section(task: Any, split: str, out: Path) -> list[str]:
    """Train vs ``split`` object sizes with check-data's functions."""
    from ..data.datamodule import DataModule
    from .check_data import histogram_png, size_warning
    from .data_stats import collect_stats

    cfg = task.recipe.section("data")
    if cfg.get("train") is None:
        return ["The recipe has no data.train: no size comparison."]
    data = DataModule({**cfg, "num_workers": 0, "persistent_workers": False})
    stats = [collect_stats(data.dataset(s), s) for s in ("train", split)]
    lines = ["| split | objects | median w x h px | median area px² | median area % of image |",
             "|---|---|---|---|---|"]
    for s in stats:
        if not len(s.rel_areas):
            lines.append(f"| {s.split} | 0 | - | - | - |")
            continue
        lines.append(f"| {s.split} | {len(s.rel_areas)} | {np.median(s.widths):.1f} x "
                     f"{np.median(s.heights):.1f} | {np.median(s.areas_px):.4g} | "
                     f"{100 * np.median(s.rel_areas):.3g} % |")
    if all(len(s.rel_areas) for s in stats):
        warning = size_warning(stats[0], stats[1], 4.0)
        lines += ["", warning or "Train and val median object sizes agree within 4x."]
        histogram_png(stats, out / "object_sizes.png")
        lines += ["", "![object sizes](object_sizes.png)"]
    return lines


def _check(noise_px: float, seeds: int, gallery: int) -> None:
    bad = [f"{name} must be {rule}, got {value:g}" for name, value, ok, rule in (
        ("--noise-px", noise_px, noise_px >= 0 and np.isfinite(noise_px), ">= 0 (px)"),
        ("--seeds", seeds, seeds >= 1, ">= 1"), ("--gallery", gallery, gallery >= 0, ">= 0"))
        if not ok]
    if bad:
        raise ConfigError("detlab analyze: " + "; ".join(bad))


def _fmt(v: float) -> str:
    return "-" if v is None or v < 0 or not np.isfinite(v) else f"{v:.3f}"


def _report(ckpt: str, split: str, records: list, pairs: MatchedPairs, ap: dict,
            ceiling: Ceiling, errors: dict, counts: dict, gallery_note: str | None,
            size_lines: list[str], n_gallery: int) -> str:
    from ..evaluation.analysis import IOU_THRESHOLDS

    k = f"{ceiling.noise_px:g}"
    dts = sum(len(r["dt_boxes"]) for r in records)
    lines = [f"# detlab analyze: {ckpt}", "",
             f"Split {split}: {len(records)} images, {counts.get('all', 0)} objects "
             f"(non-ignored), {dts} predictions, {len(pairs.iou)} matched at IoU >= 0.5.", "",
             f"## mAP50-95 against the annotation-noise ceiling (±{k} px per edge)", "",
             f"Ceiling: the ground truth scored against itself jittered by uniform ±{k} px on "
             f"each edge, random scores, mean ± std over {ceiling.seeds} seeds; oracle: the "
             "same boxes with the hits ranked first (the strict upper bound).", "",
             "| bucket | objects | model AP | ceiling | oracle | model AP50 | model AP75 |",
             "|---|---|---|---|---|---|---|"]
    for b, v in ap.items():
        if counts.get(b, 0) == 0:
            continue
        m, s = ceiling.maps[b]
        lines.append(f"| {b} | {counts[b]} | {_fmt(mean_valid(v))} | {_fmt(m)} ± {s:.3f} | "
                     f"{_fmt(mean_valid(ceiling.oracle[b]))} | {_fmt(v[0])} | {_fmt(v[5])} |")
    lines += ["", "## AP at each IoU threshold", "",
              "| bucket | " + " | ".join(f"{t:.2f}" for t in IOU_THRESHOLDS) + " |",
              "|---|" + "---|" * 10]
    for b, v in ap.items():
        if counts.get(b, 0):
            lines.append(f"| {b} model | " + " | ".join(_fmt(x) for x in v) + " |")
            lines.append(f"| {b} ceiling | " + " | ".join(_fmt(x) for x in ceiling.mean[b])
                         + " |")
    lines += ["", "![AP vs ceiling](ap_vs_ceiling.png)", "",
              "## Localisation of the matched predictions (px, original image)", "",
              "| bucket | matched | IoU median | centre offset median / p90 | "
              "abs(dw) median / p90 | abs(dh) median / p90 |", "|---|---|---|---|---|---|"]
    for b, e in errors.items():
        if e["n"]:
            lines.append(f"| {b} | {e['n']} | {e['iou_median']:.3f} | {e['offset_median']:.2f}"
                         f" / {e['offset_p90']:.2f} | {e['abs_dw_median']:.2f} / "
                         f"{e['abs_dw_p90']:.2f} | {e['abs_dh_median']:.2f} / "
                         f"{e['abs_dh_p90']:.2f} |")
    lines += ["", "![IoU histograms](iou_hist.png)", "",
              f"## The {n_gallery} smallest objects (green: ground truth, red: prediction)", "",
              gallery_note or "![gallery](gallery.png)", "",
              "## Train vs val object sizes", "", *size_lines, ""]
    return "\n".join(lines)


def analyze(task: Any, checkpoint: str, out_dir: str | Path, split: str = "val",
            noise_px: float | None = None, seeds: int = 5, gallery: int = 24,
            noise_from: list[str] | None = None) -> tuple[str, dict]:
    """Write the report (module docstring) to ``out_dir``; returns its Markdown and numbers.

    ``noise_from``: recipe overrides that read a second annotation of the split's images
    (:func:`second_annotation_records`); the ceiling's ±k px is then estimated from the two
    annotations (:mod:`detlab.evaluation.annotation_noise`) unless ``noise_px`` is given.
    Without either, ``noise_px`` is 2 px."""
    from ..evaluation.analysis import (
        IOU_THRESHOLDS,
        ap_per_threshold,
        bucket_masks,
        error_summary,
        match_records,
        noise_ceiling,
    )

    _check(2.0 if noise_px is None else noise_px, seeds, gallery)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, dataset = collect_records(task, split)
    estimate = None
    if noise_from:
        estimate = noise_from_repeats(records, second_annotation_records(task, split,
                                                                         noise_from))
        if not estimate.pairs:
            from ..errors import DataError

            raise DataError(f"--noise-from {' '.join(noise_from)}: no object is boxed in both "
                            f"annotations (matched by class at IoU >= 0.3); "
                            f"{estimate.only_a} + {estimate.only_b} objects unmatched")
    if noise_px is None:
        noise_px = estimate.noise_px if estimate is not None else 2.0
    num_classes, max_dets = _num_classes(task, records), _max_dets(task)
    pairs = match_records(records, 0.5)
    errors = error_summary(pairs)
    ap = ap_per_threshold(records, num_classes, max_dets)
    ceiling = noise_ceiling(records, num_classes, noise_px, seeds, max_dets)
    counts = _gt_buckets(records)
    masks = bucket_masks(pairs.gt, pairs.image_area)
    iou_histogram_png({b: pairs.iou[m] for b, m in masks.items() if counts.get(b)},
                      out / "iou_hist.png")
    ap_curve_png({b: v for b, v in ap.items() if counts.get(b)}, ceiling.mean,
                 IOU_THRESHOLDS, out / "ap_vs_ceiling.png")
    items, note = _gallery(records, pairs, dataset, gallery)
    if items:
        gallery_png(items, out / "gallery.png")
    elif note is None:
        note = "no ground-truth boxes in the split" if gallery else "--gallery 0: no gallery"
    size_lines = _size_section(task, split, out)
    report = _report(checkpoint, split, records, pairs, ap, ceiling, errors, counts, note,
                     size_lines, len(items))
    if estimate is not None:
        report = report.replace("\n## mAP50-95 against", "\n" + f"Noise from repeated "
                                f"annotations (`--noise-from`): {estimate.summary()}.\n"
                                "\n## mAP50-95 against", 1)
    numbers = {
        "split": split, "images": len(records), "objects": counts, "noise_px": noise_px,
        "noise_estimate": None if estimate is None else {
            "noise_px": estimate.noise_px, "pairs": estimate.pairs, "only_a": estimate.only_a,
            "only_b": estimate.only_b, "edge_rms": list(estimate.edge_rms),
            "median_iou": estimate.median_iou},
        "seeds": seeds, "matched": int(len(pairs.iou)),
        "ap_per_iou": {b: [float(x) for x in v] for b, v in ap.items()},
        "map": {b: mean_valid(v) for b, v in ap.items()},
        "ceiling_map": {b: list(v) for b, v in ceiling.maps.items()},
        "ceiling_per_iou": {b: [float(x) for x in v] for b, v in ceiling.mean.items()},
        "oracle_map": {b: mean_valid(v) for b, v in ceiling.oracle.items()},
        # NaN (a bucket without matches) is not JSON: null instead
        "localisation": {b: {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                             for k, v in e.items()} for b, e in errors.items()},
    }
    (out / "analysis.md").write_text(report, encoding="utf-8")
    (out / "analysis.json").write_text(json.dumps(numbers, indent=1, allow_nan=False))
    return report, numbers


def _cmd(args: argparse.Namespace) -> int:
    from ..engine.trainer import load_task

    noise = 2.0 if args.noise_px is None else args.noise_px
    _check(noise, args.seeds, args.gallery)  # before the checkpoint is read
    task = load_task(args.checkpoint, args.overrides)
    out = Path(args.out) if args.out else default_out_dir(args.checkpoint)
    _, numbers = analyze(task, args.checkpoint, out, args.split, args.noise_px, args.seeds,
                         args.gallery, noise_from=args.noise_from)
    m, s = numbers["ceiling_map"]["all"]
    est = numbers["noise_estimate"]
    source = (f", estimated from {est['pairs']} objects boxed twice" if est is not None
              and args.noise_px is None else "")
    print(f"mAP50-95 {_fmt(numbers['map']['all'])} against a {_fmt(m)} ± {s:.3f} ceiling "
          f"(±{numbers['noise_px']:.2f} px annotation noise{source}, {args.seeds} seeds)")
    print(f"wrote analysis.md, analysis.json and PNGs to {out}")
    return 0


def add_command(subparsers: Any) -> None:
    """Register ``detlab analyze CKPT [overrides] [--out DIR] [--split val] [--noise-px K]
    [--seeds N] [--gallery N]``."""
    p = subparsers.add_parser(
        "analyze", help="where a box detector loses mAP50-95, and the annotation-noise ceiling",
        description="Report (Markdown + PNGs) over a split: IoU of matched predictions, centre "
                    "and size errors in px, AP at each IoU threshold per size bucket next to "
                    "the GT-noise ceiling, a gallery of the smallest objects, train vs val "
                    "object sizes.")
    p.add_argument("checkpoint", help="a .ckpt written by detlab train (box detector)")
    p.add_argument("overrides", nargs="*", help="e.g. model.head.postprocessor.iou_threshold=0.6")
    p.add_argument("--out", default=None, help="report folder (default: <run>/analysis)")
    p.add_argument("--split", choices=("val", "test"), default="val",
                   help="data split to analyze (data.test falls back to data.val)")
    p.add_argument("--noise-px", type=float, default=None,
                   help="annotation noise: ± px uniform on each box edge (default 2, or "
                        "estimated with --noise-from)")
    p.add_argument("--noise-from", nargs="+", default=None, metavar="KEY=VALUE",
                   help="recipe overrides that read a second annotation of the same images "
                        "(e.g. data.val.ann_file=val_annotator2.json): the noise is estimated "
                        "from the two annotations")
    p.add_argument("--seeds", type=int, default=5,
                   help="Monte Carlo runs of the noise ceiling (default 5)")
    p.add_argument("--gallery", type=int, default=24,
                   help="smallest ground-truth boxes shown in gallery.png (default 24)")
    p.set_defaults(func=_cmd)
