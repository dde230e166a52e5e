"""What a dataset holds, from its annotations: images, objects per class, object sizes, images
without objects; for segmentation, lesion slices and pixels. What was clipped, dropped,
ignored or skipped is not recomputed here: the datasets repair their annotations when they
parse them and count it in their ``data_report()`` (:mod:`detlab.data.validation`), which is
passed on as :attr:`SplitStats.report`; the sizes are those of the repaired boxes.

Box datasets (:class:`~detlab.data.datasets.detection_base.DetectionDataset`, the synthetic
ones too) are read through ``annotations(i)``, which decodes no image; YOLO's normalized boxes
get their image size from the file header. Text datasets built from files use their parsed
``records`` (image size from the header); synthetic ones are rendered. Masks have to be read:
at most ``max_samples`` evenly spaced slices are. Wrappers (``MosaicDataset``,
``LesionPatches``) are looked through to the data they draw from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.datasets.detection_base import DetectionDataset
from ..data.file_checks import image_size
from ..data.validation import DataReport
from ..evaluation.coco import HELMET_RELATIVE_AREAS

if TYPE_CHECKING:  # text datasets need the 'text' extra (shapely): imported when used
    from ..data.datasets.text_base import TextDataset

__all__ = ["SplitStats", "collect_stats", "data_report", "dataset_counters", "unwrap",
           "BUCKETS"]

#: relative-area buckets (fraction of the image area) of :mod:`detlab.evaluation.coco`
BUCKETS: dict[str, tuple[float, float]] = HELMET_RELATIVE_AREAS


@dataclass
class SplitStats:
    """Statistics of one split (arrays over the non-ignored objects).

    Attributes:
        split, dataset: split name and dataset description (``MosaicDataset > CocoDetection``).
        kind: ``"boxes"``, ``"text"``, ``"masks"`` or ``"images"`` (nothing to count).
        images: samples in the split; ``scanned``: how many were looked at.
        class_names: label names (box datasets).
        per_class: ``{name: [objects, images]}``.
        widths, heights: object extents in original-image pixels; ``rel_areas``: object area /
            image area.
        empty_images: scanned images without a (non-ignored) object.
        ignored: ignore regions (crowd/difficult/``###`` objects the dataset keeps with the
            ignore flag; not in the arrays).
        report: the dataset's :class:`~detlab.data.validation.DataReport` (what was clipped,
            dropped, ignored or skipped when its files were parsed), None for a dataset that
            keeps none (generated data). The one source of the repair counts.
        outside, no_area: loaded objects still reaching outside the image / with no area
            inside it (0 for every dataset that repairs at parse time); they are clipped for,
            or left out of, the size statistics.
        lesion_slices: slices with a foreground pixel (of ``images``), masks only.
        pixel_fraction: foreground share of the scanned slices' pixels; ``pixel_fraction_pos``:
            the same within slices that have a lesion.
    """

    split: str
    dataset: str
    kind: str
    images: int
    scanned: int = 0
    class_names: list[str] = field(default_factory=list)
    per_class: dict[str, list[int]] = field(default_factory=dict)
    widths: np.ndarray = field(default_factory=lambda: np.zeros(0))
    heights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rel_areas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    empty_images: int = 0
    ignored: int = 0
    outside: int = 0
    no_area: int = 0
    report: DataReport | None = None
    lesion_slices: int | None = None
    pixel_fraction: float | None = None
    pixel_fraction_pos: float | None = None
    _parts: list = field(default_factory=list, repr=False)  # per-image arrays while scanning

    def _finish(self) -> None:
        """Concatenate the per-image arrays once (appending per image would be quadratic)."""
        if self._parts:
            self.widths, self.heights, self.rel_areas = (
                np.concatenate(a).astype(np.float64) for a in zip(*self._parts))
            self._parts = []

    @property
    def areas_px(self) -> np.ndarray:
        """``(M,)`` object areas in original-image px² (box or polygon extent)."""
        return self.widths * self.heights

    def bucket_counts(self) -> dict[str, int]:
        """Objects per relative-area bucket (:data:`BUCKETS`, half-open ``[low, high)``)."""
        return {name: int(((self.rel_areas >= lo) & (self.rel_areas < hi)).sum())
                for name, (lo, hi) in BUCKETS.items()}


def unwrap(dataset: Any) -> tuple[Any, str]:
    """The dataset holding the data (through ``.dataset`` wrappers) and a description."""
    names = [type(dataset).__name__]
    for _ in range(8):
        inner = getattr(dataset, "dataset", None)
        if inner is None or not hasattr(inner, "__len__"):
            break
        dataset = inner
        names.append(type(dataset).__name__)
    return dataset, " > ".join(names)


def data_report(dataset: Any) -> DataReport | None:
    """The dataset's parse-time :class:`~detlab.data.validation.DataReport`
    (``dataset.data_report()``), or None when it keeps none."""
    report = getattr(dataset, "data_report", None)
    return report() if callable(report) else None


def dataset_counters(dataset: Any) -> dict[str, int]:
    """The dataset's repair counters (boxes/words clipped, dropped, ignored; samples skipped)
    as ``{"<kind> (<reason>)": count}``, from its :func:`data_report` (empty without one)."""
    report = data_report(dataset)
    if report is None:
        return {}
    return {f"{row['kind']} ({row['reason']})": int(row["count"])
            for row in report.as_dict()["counts"]}


def collect_stats(dataset: Any, split: str, max_samples: int = 200) -> SplitStats:
    """Statistics of ``dataset`` (see the module docstring for what is decoded)."""
    base, description = unwrap(dataset)
    if isinstance(base, DetectionDataset):
        stats = SplitStats(split, description, "boxes", len(base))
        _boxes(base, stats)
    elif _is_text(base):
        stats = SplitStats(split, description, "text", len(base))
        _text(base, stats, max_samples)
    elif any(callable(getattr(base, a, None)) for a in ("positive_flags", "render",
                                                        "read_slice")):
        stats = SplitStats(split, description, "masks", len(base))
        _masks(base, stats, max_samples)
    else:
        stats = SplitStats(split, description, "images", len(base), scanned=0)
    stats.report = data_report(base)
    stats._finish()
    return stats


def _add_objects(stats: SplitStats, boxes: np.ndarray, ignore: np.ndarray, h: int, w: int,
                 areas: np.ndarray | None = None) -> np.ndarray:
    """Count ``boxes`` (N, 4) xyxy px of one image (already repaired by the dataset; what still
    reaches outside is counted in ``outside``/``no_area``); returns the kept mask."""
    stats.scanned += 1
    stats.ignored += int(ignore.sum())
    keep = ~ignore
    b = boxes[keep]
    outside = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w) | (b[:, 3] > h)
    clipped = b.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, w)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, h)
    bw, bh = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    has_area = (bw > 0) & (bh > 0)
    stats.outside += int((outside & has_area).sum())
    stats.no_area += int((~has_area).sum())
    area = bw * bh
    if areas is not None:  # polygons: their own area, scaled by the share of the box kept
        full = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        area = areas[keep] * np.divide(area, full, out=np.zeros_like(area), where=full > 0)
    area = area[has_area]
    stats._parts.append((bw[has_area], bh[has_area], area / float(h * w)))
    if not has_area.any():
        stats.empty_images += 1
    kept = np.zeros(len(boxes), bool)
    kept[np.flatnonzero(keep)[has_area]] = True
    return kept


def _is_text(ds: Any) -> bool:
    """Whether ``ds`` is a text dataset (False without the 'text' extra: none can exist)."""
    try:
        from ..data.datasets.text_base import TextDataset
    except ImportError:
        return False
    return isinstance(ds, TextDataset)


def _boxes(ds: DetectionDataset, stats: SplitStats) -> None:
    stats.class_names = list(ds.class_names)
    counts = np.zeros((max(len(stats.class_names), 1), 2), np.int64)
    for i in range(len(ds)):
        ann = ds.annotations(i)
        size = ann.size
        if size is None:
            size = image_size(ann.path)
        h, w = size
        boxes = ann.boxes.astype(np.float64).reshape(-1, 4)
        if ann.normalized:
            boxes = boxes * np.array([w, h, w, h], np.float64)
        kept = _add_objects(stats, boxes, ann.ignore.astype(bool), h, w)
        labels = ann.labels[kept]
        if len(labels):
            counts = _grow(counts, int(labels.max()) + 1)
            np.add.at(counts[:, 0], labels, 1)
            counts[np.unique(labels), 1] += 1
    names = stats.class_names + [f"label_{k}" for k in range(len(stats.class_names),
                                                             len(counts))]
    stats.per_class = {n: [int(c[0]), int(c[1])] for n, c in zip(names, counts)}


def _grow(counts: np.ndarray, n: int) -> np.ndarray:
    if n <= len(counts):
        return counts
    return np.concatenate([counts, np.zeros((n - len(counts), 2), np.int64)])


def _polygon_area(p: np.ndarray) -> float:
    x, y = p[:, 0].astype(np.float64), p[:, 1].astype(np.float64)
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _text(ds: TextDataset, stats: SplitStats, max_samples: int) -> None:
    records = getattr(ds, "records", None)
    from_files = isinstance(records, list) and len(records) == len(ds)
    n = len(ds) if from_files else min(len(ds), max_samples)
    words = images_with = 0
    for i in _spread(len(ds), n):
        if from_files:
            path, polygons, ignore = records[i]
            h, w = image_size(path)
        else:
            sample = ds.load(i)
            polygons, ignore = sample.polygons, sample.ignore
            h, w = sample.image.shape[:2]
        ignore = np.asarray(ignore, bool)
        if polygons:
            pts = [np.asarray(p, np.float64) for p in polygons]
            boxes = np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()]
                              for p in pts])
            areas = np.array([_polygon_area(p) for p in pts])
        else:
            boxes, areas = np.zeros((0, 4)), np.zeros(0)
        kept = _add_objects(stats, boxes, ignore, h, w, areas)
        words += int(kept.sum())
        images_with += int(kept.any())
    stats.class_names = ["text"]
    stats.per_class = {"text": [words, images_with]}


def _spread(total: int, n: int) -> list[int]:
    """``n`` evenly spaced indices of ``range(total)`` (all when ``n >= total``)."""
    if n >= total:
        return list(range(total))
    return sorted({int(round(v)) for v in np.linspace(0, total - 1, n)})


def _mask(ds: Any, index: int) -> np.ndarray:
    if callable(getattr(ds, "render", None)):
        return np.asarray(ds.render(index)[1])
    if callable(getattr(ds, "read_slice", None)):
        return np.asarray(ds.read_slice(index)[1])
    mask = ds[index]["target"]["mask"]
    return np.asarray(mask.numpy() if hasattr(mask, "numpy") else mask)


def _masks(ds: Any, stats: SplitStats, max_samples: int) -> None:
    flags = ds.positive_flags() if callable(getattr(ds, "positive_flags", None)) else None
    indices = _spread(len(ds), min(len(ds), max_samples))
    positive = total = positive_in_lesion = total_in_lesion = 0
    seen_lesions = 0
    for i in indices:
        m = _mask(ds, i) > 0
        positive += int(m.sum())
        total += m.size
        if m.any():
            seen_lesions += 1
            positive_in_lesion += int(m.sum())
            total_in_lesion += m.size
    stats.scanned = len(indices)
    stats.lesion_slices = int(np.sum(flags)) if flags is not None else seen_lesions
    stats.empty_images = (len(ds) - stats.lesion_slices if flags is not None
                          else len(indices) - seen_lesions)
    stats.pixel_fraction = positive / total if total else None
    stats.pixel_fraction_pos = positive_in_lesion / total_in_lesion if total_in_lesion else None
