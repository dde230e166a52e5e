"""PNG figures of ``detlab analyze``, drawn with PIL (no plotting library is a dependency):
IoU histograms per size bucket, AP per IoU threshold next to the noise ceiling, and the
gallery of the smallest ground-truth boxes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["GalleryItem", "iou_histogram_png", "ap_curve_png", "gallery_png"]

_BLUE, _ORANGE, _GREEN, _RED, _GREY = (31, 119, 180), (255, 127, 14), (0, 200, 0), \
    (230, 30, 30), (150, 150, 150)


def _panel_grid(n: int, cols: int, pw: int, ph: int) -> tuple[object, object, list]:
    from PIL import Image, ImageDraw

    rows = max(1, -(-n // cols))
    img = Image.new("RGB", (cols * pw, rows * ph), "white")
    origins = [((k % cols) * pw, (k // cols) * ph) for k in range(n)]
    return img, ImageDraw.Draw(img), origins


def iou_histogram_png(ious: Mapping[str, np.ndarray], path: Path, bins: int = 20) -> Path:
    """One bar chart per bucket of the matched pairs' IoU over ``[0.5, 1]`` (``bins`` bins),
    dotted lines at the IoU thresholds 0.75 and 0.95."""
    pw, ph, left, bottom, top = 300, 180, 30, 28, 22
    img, draw, origins = _panel_grid(len(ious), 4, pw, ph)
    edges = np.linspace(0.5, 1.0, bins + 1)
    for (name, values), (ox, oy) in zip(ious.items(), origins):
        counts = np.histogram(np.clip(values, 0.5, 1.0), edges)[0]
        peak = max(int(counts.max()) if counts.size else 0, 1)
        w, h = pw - left - 10, ph - top - bottom
        for i, c in enumerate(counts):
            x0 = ox + left + i * w / bins
            draw.rectangle([x0, oy + top + h * (1 - c / peak), x0 + w / bins - 1, oy + top + h],
                           fill=_BLUE)
        for t in (0.75, 0.95):
            x = ox + left + w * (t - 0.5) / 0.5
            draw.line([x, oy + top, x, oy + top + h], fill=_GREY)
        draw.line([ox + left, oy + top + h, ox + left + w, oy + top + h], fill="black")
        for t in (0.5, 0.75, 1.0):
            draw.text((ox + left + w * (t - 0.5) / 0.5 - 8, oy + top + h + 4), f"{t:g}",
                      fill="black")
        draw.text((ox + left, oy + 4), f"{name}: {len(values)} matched, max bin {peak}",
                  fill="black")
    _save(img, path)
    return path


def ap_curve_png(model: Mapping[str, np.ndarray], ceiling: Mapping[str, np.ndarray],
                 thresholds: Sequence[float], path: Path) -> Path:
    """One panel per bucket with a ground truth: the model's AP (blue) and the noise ceiling
    (orange) at each IoU threshold, on a 0-1 axis."""
    names = [k for k, v in model.items() if (np.asarray(v) > -1).any()]
    pw, ph, left, bottom, top = 300, 180, 30, 28, 22
    img, draw, origins = _panel_grid(max(len(names), 1), 4, pw, ph)
    t = np.asarray(thresholds, np.float64)
    for name, (ox, oy) in zip(names, origins):
        w, h = pw - left - 10, ph - top - bottom

        def xy(i: int, v: float, ox: int = ox, oy: int = oy, w: int = w, h: int = h
               ) -> tuple[float, float]:
            return ox + left + w * i / (len(t) - 1), oy + top + h * (1 - max(v, 0.0))

        for series, color in ((ceiling.get(name), _ORANGE), (model[name], _BLUE)):
            if series is None:
                continue
            pts = [xy(i, float(v)) for i, v in enumerate(series)]
            draw.line(pts, fill=color, width=2)
            for x, y in pts:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
        draw.rectangle([ox + left, oy + top, ox + left + w, oy + top + h], outline=_GREY)
        for i in (0, 5, 9):
            draw.text((xy(i, 0)[0] - 10, oy + top + h + 4), f"{t[i]:.2f}", fill="black")
        draw.text((ox + 4, oy + top - 4), "1", fill="black")
        draw.text((ox + left, oy + 4), f"{name}: AP (blue) vs ceiling (orange)", fill="black")
    _save(img, path)
    return path


@dataclass
class GalleryItem:
    """One gallery tile: an original image crop around a ground-truth box.

    Attributes:
        image: ``(H, W, 3)`` uint8 crop. origin: ``(x, y)`` of the crop in the image, px.
        gt: xyxy ground truth, image px. pred: xyxy prediction drawn (or None).
        caption: text under the tile.
    """

    image: np.ndarray
    origin: tuple[float, float]
    gt: np.ndarray
    pred: np.ndarray | None
    caption: str


def gallery_png(items: Sequence[GalleryItem], path: Path, tile: int = 160, cols: int = 6
                ) -> Path:
    """The crops enlarged to ``tile`` px (nearest neighbour, so the pixels stay visible), the
    ground truth in green and the prediction in red, with their captions."""
    from PIL import Image, ImageDraw

    img, draw, origins = _panel_grid(max(len(items), 1), cols, tile, tile + 30)
    for item, (ox, oy) in zip(items, origins):
        h, w = item.image.shape[:2]
        f = tile / max(h, w)
        # Each tile is drawn on its own canvas: a large prediction is cut at the tile's edge.
        canvas = Image.new("RGB", (tile, tile), "white")
        canvas.paste(Image.fromarray(item.image).resize(
            (max(1, round(w * f)), max(1, round(h * f))), Image.NEAREST), (0, 0))
        pen = ImageDraw.Draw(canvas)
        for box, color in ((item.pred, _RED), (item.gt, _GREEN)):
            if box is None:
                continue
            x1, y1, x2, y2 = ((float(v) - o) * f for v, o in
                              zip(box, (*item.origin, *item.origin)))
            pen.rectangle([x1, y1, x2, y2], outline=color, width=2)
        img.paste(canvas, (ox, oy))
        for k, line in enumerate(item.caption.split("\n")[:2]):
            draw.text((ox + 2, oy + tile + 2 + 13 * k), line, fill="black")
    _save(img, path)
    return path


def _save(img: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)  # type: ignore[attr-defined]
