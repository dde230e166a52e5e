"""``detlab check-data RECIPE [overrides] [--out DIR]``: what the recipe's data hold, per split.

For train, val and test: images, objects per class, ignore regions, object sizes in pixels
and in % of the image area (the relative buckets of :mod:`detlab.evaluation.coco`: tiny
< 0.1 %, small 0.1-0.5 %, medium 0.5-5 %, large > 5 %) of the boxes as the dataset loads them,
images without objects; one ``repairs:`` section with the dataset's own parse-time counters
(:class:`~detlab.data.validation.DataReport`: kind, reason, count, first place of each
clipped, dropped, ignored or skipped object or sample; the one source of those numbers);
text regions lost to ``min_text_size``
(:func:`detlab.data.positives.count_positives`); for segmentation, slices with lesions and the
foreground pixel share. A WARNING when train's and val's median object areas differ by more
than ``--size-ratio`` (default 4x). With ``--out``, a PNG of both size histograms and the
report as text. Works from the annotations (:mod:`detlab.commands.data_stats`); it builds no
model and downloads nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # data_stats imports the datasets (torch): loaded when the command runs,
    # so that building the parser (`detlab check-data --help`) stays fast
    from .data_stats import SplitStats

__all__ = ["check_data", "format_stats", "size_warning", "histogram_png", "add_command"]

SPLITS = ("train", "val", "test")
_HIST_EDGES = np.logspace(-6, 0, 25)  # relative area, 4 bins per decade


def _pct(x: float) -> str:
    return f"{100 * x:.3g} %"


def _quantiles(values: np.ndarray) -> str:
    q = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0])
    return "min {:.4g} / p10 {:.4g} / median {:.4g} / p90 {:.4g} / max {:.4g}".format(*q)


def _bucket_label(name: str) -> str:
    from .data_stats import BUCKETS

    lo, hi = BUCKETS[name]
    if lo <= 0:
        return f"{name} (< {100 * hi:g} %)"
    if not np.isfinite(hi):
        return f"{name} (> {100 * lo:g} %)"
    return f"{name} ({100 * lo:g}-{100 * hi:g} %)"


def format_stats(s: SplitStats, positives: str | None = None) -> str:
    """The report block of one split."""
    unit = "slices" if s.kind == "masks" else "images"
    lines = [f"== {s.split}: {s.dataset}, {s.images} {unit} =="]
    if s.kind == "images":
        lines.append("no annotations to count (an image-only dataset)")
        return "\n".join(lines)
    if s.kind == "masks":
        lines.append(f"slices with lesions: {s.lesion_slices} of {s.images} "
                     f"({_pct(s.lesion_slices / max(s.images, 1))})")
        if s.pixel_fraction is not None:
            inside = (f"; {_pct(s.pixel_fraction_pos)} within slices with lesions"
                      if s.pixel_fraction_pos is not None else "")
            lines.append(f"positive pixel fraction: {_pct(s.pixel_fraction)} of the pixels of "
                         f"{s.scanned} scanned slices{inside}")
        return "\n".join(lines + _counter_lines(s))
    if s.scanned < s.images:
        lines.append(f"scanned {s.scanned} of {s.images} images (--max-samples)")
    total = len(s.rel_areas)
    lines.append(f"images without objects: {s.empty_images} of {s.scanned}")
    classes = f"{len(s.per_class)} class" + ("" if len(s.per_class) == 1 else "es")
    lines.append(f"objects: {total} in {classes}; ignore regions: {s.ignored}")
    width = max([len(n) for n in s.per_class] + [5])
    lines.append(f"  {'class'.ljust(width)}  objects  images")
    for name, (objects, images) in s.per_class.items():
        lines.append(f"  {name.ljust(width)}  {objects:7d}  {images:6d}")
    if total:
        lines.append(f"width px:  {_quantiles(s.widths)}")
        lines.append(f"height px: {_quantiles(s.heights)}")
        lines.append(f"area % of image: median {_pct(float(np.median(s.rel_areas)))}")
        for name, count in s.bucket_counts().items():
            lines.append(f"  {_bucket_label(name).ljust(22)} {count:6d}  {_pct(count / total)}")
    if s.outside or s.no_area:  # only datasets without parse-time repairs can get here
        lines.append(f"loaded objects still outside the image: {s.outside} (clipped for these "
                     f"statistics), without area inside it: {s.no_area} (left out of them)")
    if s.kind == "text":
        lines.append("text regions lost to min_text_size: "
                     + (positives or "n/a (needs detlab.data.positives)"))
    return "\n".join(lines + _counter_lines(s))


def _counter_lines(s: SplitStats) -> list[str]:
    """The ``repairs:`` section: the dataset's DataReport rows (kind, reason, count, first
    place), or why there are none."""
    report = s.report
    if report is None:
        return ["repairs: none counted (the dataset keeps no data report: generated data)"]
    rows = report.as_dict()["counts"]
    read = f"{report.samples} {'cases' if report.unit == 'cases' else 'images'}"
    if report.unit != "cases":
        read += f", {report.objects} {report.unit}"
    if not rows:
        return [f"repairs: none (of {read} read)"]
    reason_w = max(len(r["reason"]) for r in rows + [{"reason": "reason"}])
    lines = [f"repairs (counted when the files were parsed, of {read}):",
             f"  {'kind':8} {'reason'.ljust(reason_w)}  {'count':>5}  first place"]
    for r in rows:
        place = r["examples"][0] if r["examples"] else "-"
        lines.append(f"  {r['kind']:8} {r['reason'].ljust(reason_w)}  {r['count']:5d}  {place}")
    return lines


def _positives(dataset: Any, split: str, max_samples: int) -> str | None:
    try:
        from ..data.positives import count_positives  # H5's module; optional until merged
    except ImportError:
        return None
    return count_positives(dataset, split, max_samples=max_samples).summary()


def size_warning(train: SplitStats, val: SplitStats, factor: float) -> str | None:
    """A WARNING line when the median object area (px² or % of the image) of train and val
    differ by more than ``factor``, else None."""
    if not len(train.rel_areas) or not len(val.rel_areas):
        return None
    found = []
    for what, a, b, show in (
        ("area % of image", np.median(train.rel_areas), np.median(val.rel_areas), _pct),
        ("area px²", np.median(train.areas_px), np.median(val.areas_px), lambda v: f"{v:.4g}"),
    ):
        ratio = max(a, b) / max(min(a, b), 1e-12)
        if ratio > factor:
            found.append(f"{what} train {show(a)} vs val {show(b)} ({ratio:.1f}x)")
    if not found:
        return None
    return (f"WARNING: train and val median object sizes differ by more than {factor:g}x: "
            + "; ".join(found) + ". A model tuned on one size range is validated on another: "
            "check the resizing (img_size), crops and whether both splits come from the same "
            "cameras/resolution.")


def histogram_text(stats: list[SplitStats]) -> str:
    """Histograms of the relative object areas as text, one column per split."""
    counts = [np.histogram(s.rel_areas.clip(_HIST_EDGES[0], 1), _HIST_EDGES)[0] for s in stats]
    lines = ["area % of image      " + "  ".join(s.split.rjust(7) for s in stats)]
    for i in range(len(_HIST_EDGES) - 1):
        if not any(c[i] for c in counts):
            continue
        rng = f"{100 * _HIST_EDGES[i]:.2g}-{100 * _HIST_EDGES[i + 1]:.2g}"
        lines.append(f"  {rng.ljust(18)} " + "  ".join(f"{c[i]:7d}" for c in counts))
    return "\n".join(lines)


def histogram_png(stats: list[SplitStats], path: Path) -> Path:
    """Bar chart (PIL) of the share of objects per log-spaced relative-area bin, one colour per
    split, with the bucket limits (0.1 %, 0.5 %, 5 %) as vertical lines."""
    from .data_stats import BUCKETS

    from PIL import Image, ImageDraw

    colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]
    w, h, left, bottom, top = 720, 360, 50, 40, 30
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    bins = len(_HIST_EDGES) - 1
    plot_w, plot_h = w - left - 10, h - bottom - top
    shares = []
    for s in stats:
        c = np.histogram(s.rel_areas.clip(_HIST_EDGES[0], 1), _HIST_EDGES)[0].astype(float)
        shares.append(c / max(c.sum(), 1))
    peak = max([float(v.max()) for v in shares] + [1e-9])
    bar = plot_w / bins / max(len(stats), 1)
    for k, (s, share) in enumerate(zip(stats, shares)):
        for i, v in enumerate(share):
            x0 = left + i * plot_w / bins + k * bar
            y0 = top + plot_h * (1 - v / peak)
            draw.rectangle([x0, y0, x0 + bar - 1, top + plot_h], fill=colors[k % 3])
        draw.text((left + 10 + 160 * k, 8), f"{s.split} ({len(s.rel_areas)} objects)",
                  fill=colors[k % 3])
    for edge in (lo for lo, _ in BUCKETS.values() if lo > 0):
        x = left + plot_w * (np.log10(edge) + 6) / 6
        draw.line([x, top, x, top + plot_h], fill=(120, 120, 120))
    draw.line([left, top + plot_h, left + plot_w, top + plot_h], fill="black")
    for decade in range(-6, 1):
        x = left + plot_w * (decade + 6) / 6
        draw.text((min(x - 12, w - 40), top + plot_h + 6), f"{100 * 10.0 ** decade:g}%",
                  fill="black")
    draw.text((left, h - 16), "object area, % of the image (log scale); bars: share of the "
              "split's objects; lines: tiny/small/medium/large", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def check_data(recipe: Any, out_dir: str | Path | None = None, size_ratio: float = 4.0,
               max_samples: int = 200) -> tuple[str, list[SplitStats]]:
    """Report on the recipe's train/val/test data (module docstring); returns the report text
    and the per-split statistics. Writes ``object_sizes.png`` and ``check_data.txt`` to
    ``out_dir`` when given."""
    from .data_stats import collect_stats

    from ..data.datamodule import DataModule

    data_cfg = recipe.section("data")
    data = DataModule({**data_cfg, "num_workers": 0, "persistent_workers": False})
    blocks, stats = [], []
    for split in SPLITS:
        if data_cfg.get(split) is None:
            if split != "test":
                blocks.append(f"== {split}: none ==")
            continue
        dataset = data.dataset(split)
        s = collect_stats(dataset, split, max_samples)
        positives = _positives(dataset, split, max_samples) if s.kind == "text" else None
        blocks.append(format_stats(s, positives))
        stats.append(s)
    by_split = {s.split: s for s in stats}
    if "train" in by_split and "val" in by_split and by_split["train"].kind in ("boxes", "text"):
        warning = size_warning(by_split["train"], by_split["val"], size_ratio)
        blocks.append(warning or f"train and val median object sizes agree within "
                                 f"{size_ratio:g}x")
    with_objects = [s for s in stats if len(s.rel_areas)]
    if with_objects:
        blocks.append(histogram_text(with_objects))
    report = "\n".join(blocks)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if with_objects:
            histogram_png(with_objects, out / "object_sizes.png")
        (out / "check_data.txt").write_text(report + "\n", encoding="utf-8")
    return report, stats


def _cmd(args: argparse.Namespace) -> int:
    from ..recipe import load

    recipe = load(args.recipe, args.overrides)
    report, stats = check_data(recipe, args.out, args.size_ratio, args.max_samples)
    print(report)
    if args.out:
        png = " and object_sizes.png (drawn with PIL)" if any(len(s.rel_areas) for s in stats) \
            else ""
        print(f"wrote check_data.txt{png} to {args.out}")
    return 0


def add_command(subparsers: Any) -> None:
    """Register ``detlab check-data RECIPE [overrides] [--out DIR]``."""
    p = subparsers.add_parser(
        "check-data", help="statistics of a recipe's data, before training",
        description="Per split: images, objects per class, object sizes (px and % of the "
                    "image), images without objects, the datasets' clipped/dropped/ignored/"
                    "skipped counts (one repairs: section), text "
                    "regions lost to min_text_size, lesion slices and pixels; warns when train "
                    "and val object sizes differ. Reads annotations; builds no model.")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="e.g. data.train.ann_file=/data/train.json")
    p.add_argument("--out", default=None, help="folder for object_sizes.png and check_data.txt")
    p.add_argument("--size-ratio", type=float, default=4.0,
                   help="warn when train/val median object areas differ by more (default 4)")
    p.add_argument("--max-samples", type=int, default=200,
                   help="images/slices decoded at most per split where annotations alone do "
                        "not tell (masks, synthetic text; default 200)")
    p.set_defaults(func=_cmd)
