"""Pictures for diagnostics, drawn with PIL and OpenCV colour maps (no matplotlib needed):
images with mask overlays, boxes and polygons, heat maps, captioned grids, histogram charts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

from .outputs import _COLORS, overlay_mask

__all__ = [
    "to_uint8", "image_to_rgb", "overlay", "heatmap", "draw_boxes", "draw_polygons",
    "caption", "fit", "grid", "probability_chart", "with_colorbar",
]

_BG = (24, 24, 24)
_TEXT = (235, 235, 235)


def _numpy(x: Any) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def to_uint8(image: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.0) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` values → uint8, stretching the ``lo_pct``..``hi_pct``
    percentiles to 0..255 (robust to a few extreme pixels; a constant image is mid-grey)."""
    image = np.nan_to_num(np.asarray(image, dtype=np.float32))
    lo, hi = np.percentile(image, [lo_pct, hi_pct]) if image.size else (0.0, 0.0)
    if hi - lo < 1e-8:
        return np.full(image.shape, 128, dtype=np.uint8)
    return (255 * np.clip((image - lo) / (hi - lo), 0, 1)).astype(np.uint8)


def image_to_rgb(image: Any, display_channel: int | None = None) -> Image.Image:
    """A network input ``(C, H, W)`` as an RGB picture: channel ``display_channel`` in grey when
    given (CT: the centre slice of the first window), RGB when ``C == 3``, else channel 0."""
    arr = _numpy(image)
    if arr.ndim == 2:
        arr = arr[None]
    if display_channel is not None and 0 <= display_channel < arr.shape[0]:
        arr = arr[display_channel : display_channel + 1]
    if arr.shape[0] == 3:
        return Image.fromarray(to_uint8(arr.transpose(1, 2, 0)))
    return Image.fromarray(to_uint8(arr[0])).convert("RGB")


def overlay(picture: Image.Image, mask: Any, alpha: float = 0.45) -> Image.Image:
    """Class colours over ``picture`` where ``mask`` ``(C, H, W)`` / ``(H, W)`` is > 0.5."""
    m = _numpy(mask)
    m = (m[None] if m.ndim == 2 else m) > 0.5
    return overlay_mask(picture, m, alpha)


def heatmap(values: Any, size: tuple[int, int] | None = None) -> Image.Image:
    """``(H, W)`` values in [0, 1] as a viridis picture, resized to ``size`` (h, w) if given."""
    v = np.clip(np.nan_to_num(_numpy(values).squeeze().astype(np.float32)), 0.0, 1.0)
    if size is not None and v.shape != tuple(size):
        v = cv2.resize(v, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    bgr = cv2.applyColorMap((255 * v).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    return Image.fromarray(bgr[..., ::-1].copy())


def draw_boxes(picture: Image.Image, boxes: Any, labels: Any = None) -> Image.Image:
    """Outline ``boxes`` ``(N, 4)`` xyxy pixels (colour per label)."""
    draw = ImageDraw.Draw(picture)
    boxes = _numpy(boxes).reshape(-1, 4)
    labels = _numpy(labels).reshape(-1).astype(int) if labels is not None else None
    for i, box in enumerate(boxes.tolist()):
        label = int(labels[i]) if labels is not None and i < len(labels) else 0
        color = _COLORS[label % len(_COLORS)]
        draw.rectangle(box, outline=color, width=1)
        draw.text((box[0] + 1, box[1]), str(label), fill=color)
    return picture


def draw_polygons(picture: Image.Image, polygons: Sequence[Any]) -> Image.Image:
    """Closed outlines of ``(K, 2)`` (x, y) pixel polygons."""
    draw = ImageDraw.Draw(picture)
    for poly in polygons or []:
        pts = [tuple(map(float, p)) for p in _numpy(poly).reshape(-1, 2)]
        if len(pts) >= 2:
            draw.line(pts + [pts[0]], fill=_COLORS[1], width=1)
    return picture


def caption(picture: Image.Image, text: str, height: int = 14) -> Image.Image:
    """``picture`` with a strip of ``text`` above it."""
    out = Image.new("RGB", (picture.width, picture.height + height), _BG)
    out.paste(picture, (0, height))
    ImageDraw.Draw(out).text((2, 1), text, fill=_TEXT)
    return out


def fit(picture: Image.Image, tile: int) -> Image.Image:
    """``picture`` scaled so its longer side is ``tile`` px (nearest-neighbour when enlarging,
    so single pixels of a small patch stay visible)."""
    scale = tile / max(picture.width, picture.height)
    if abs(scale - 1) < 1e-6:
        return picture
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    method = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
    return picture.resize(size, method)


def grid(tiles: Sequence[Image.Image], columns: int, pad: int = 4,
         title: str = "") -> Image.Image:
    """Tiles (scale them with :func:`fit` first) laid out row by row, with an optional title."""
    if not tiles:
        tiles = [Image.new("RGB", (64, 16), _BG)]
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    cell_w = max(t.width for t in tiles) + pad
    cell_h = max(t.height for t in tiles) + pad
    top = 18 if title else 0
    width = max(columns * cell_w + pad, 8 + 6 * len(title))
    out = Image.new("RGB", (width, rows * cell_h + pad + top), _BG)
    for i, t in enumerate(tiles):
        out.paste(t, (pad + (i % columns) * cell_w, top + pad + (i // columns) * cell_h))
    if title:
        ImageDraw.Draw(out).text((pad, 3), title, fill=_TEXT)
    return out


def with_colorbar(picture: Image.Image, label: str, width: int = 256,
                  height: int = 12) -> Image.Image:
    """``picture`` with a viridis colour bar below it (the scale of :func:`heatmap`): a
    ``width`` px gradient from 0 to 1 with ticks at 0, 0.25 ... 1 and ``label`` beside it."""
    width = max(64, min(width, picture.width - 16))
    values = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
    bar = heatmap(values)
    left = 8
    beside = left + width + 8 + 6 * len(label) <= picture.width
    strip = Image.new("RGB", (picture.width, height + (24 if beside else 36)), _BG)
    strip.paste(bar, (left, 4))
    draw = ImageDraw.Draw(strip)
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + round(v * (width - 1))
        draw.line([x, 4 + height, x, 8 + height], fill=_TEXT)
        text = f"{v:g}"
        draw.text((min(max(x - 3 * len(text), 0), strip.width - 6 * len(text)), 9 + height),
                  text, fill=_TEXT)
    if beside:
        draw.text((left + width + 8, 4), label, fill=_TEXT)
    else:  # no room beside the bar: under the ticks
        draw.text((left, 20 + height), label, fill=_TEXT)
    out = Image.new("RGB", (picture.width, picture.height + strip.height), _BG)
    out.paste(picture, (0, 0))
    out.paste(strip, (0, picture.height))
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def probability_chart(edges: np.ndarray, positives: np.ndarray, negatives: np.ndarray,
                      marks: Sequence[tuple[float, str]] = (), title: str = "",
                      bins: int = 64, size: tuple[int, int] = (720, 300)) -> Image.Image:
    """Bar chart of a probability histogram on a logit axis, ground-truth negatives grey and
    positives red, bar heights ``log10(1 + pixels)``; ``marks`` are labelled vertical lines
    (e.g. the evaluation threshold). ``edges`` ``(K+1,)``, counts ``(K,)``."""
    width, height = size
    left, right, top, bottom = 56, 12, 24, 36
    lo, hi = _logit(np.array([1e-6]))[0], _logit(np.array([1 - 1e-6]))[0]
    centre = _logit((edges[:-1] + edges[1:]) / 2)
    row = np.clip(((centre - lo) / (hi - lo) * bins).astype(int), 0, bins - 1)
    neg = np.log10(1 + np.bincount(row, weights=negatives, minlength=bins))
    pos = np.log10(1 + np.bincount(row, weights=positives, minlength=bins))
    peak = max(float(neg.max()), float(pos.max()), 1.0)
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(logit: float) -> float:
        return left + (logit - lo) / (hi - lo) * plot_w

    step = plot_w / bins
    for b in range(bins):
        x0 = left + b * step
        for value, color, inset in ((neg[b], (150, 150, 150), 0.0), (pos[b], (220, 40, 40), 0.3)):
            if value > 0:
                y = top + plot_h * (1 - value / peak)
                draw.rectangle([x0 + inset * step, y, x0 + (1 - inset) * step - 1,
                                top + plot_h], fill=color)
    draw.line([left, top + plot_h, left + plot_w, top + plot_h], fill=(0, 0, 0))
    draw.line([left, top, left, top + plot_h], fill=(0, 0, 0))
    for p in (1e-6, 1e-4, 1e-2, 0.5, 0.99, 0.9999):
        x = x_of(float(_logit(np.array([p]))[0]))
        draw.line([x, top + plot_h, x, top + plot_h + 4], fill=(0, 0, 0))
        draw.text((x - 12, top + plot_h + 6), f"{p:g}", fill=(0, 0, 0))
    for k in range(int(peak) + 1):
        y = top + plot_h * (1 - k / peak)
        draw.text((4, y - 6), f"1e{k}", fill=(0, 0, 0))
    for i, (p, label) in enumerate(marks):
        x = x_of(float(_logit(np.array([p]))[0]))
        draw.line([x, top, x, top + plot_h], fill=(40, 90, 220), width=1)
        draw.text((x + 3, top + 2 + 12 * i), label, fill=(40, 90, 220))
    draw.text((left, 4), title, fill=(0, 0, 0))
    draw.text((width - right - 190, 4), "grey: gt negative  red: gt positive", fill=(0, 0, 0))
    draw.text((left + plot_w // 2 - 60, height - 14), "predicted probability (logit axis)",
              fill=(0, 0, 0))
    return img
