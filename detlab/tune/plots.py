"""Small PNG charts drawn with PIL (no matplotlib, no browser): scatter/line panels with axes,
ticks and labels, and horizontal bar charts. Used for the tune and lr-find plots."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["Series", "Panel", "draw_panels", "draw_bars"]

_W, _H, _M = 520, 360, (70, 40, 20, 50)  # panel size; margins left, top, right, bottom
_COLORS = {"blue": (31, 119, 180), "orange": (255, 127, 14), "grey": (150, 150, 150),
           "red": (214, 39, 40), "green": (44, 160, 44)}


@dataclass
class Series:
    """Points of one panel: ``x``/``y`` values, ``style`` ``"dots"``, ``"line"``, ``"step"``
    (best-so-far) or ``"cross"``, a color name and a legend label."""

    x: Sequence[float]
    y: Sequence[float]
    style: str = "dots"
    color: str = "blue"
    label: str = ""


@dataclass
class Panel:
    """One chart: title, axis labels, ``log_x``, series, optional category names of x
    (``x_names[i]`` is written at x = i, the axis spans all of them) and vertical marker
    lines ``vlines``."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    log_x: bool = False
    x_names: list[str] | None = None
    vlines: list[float] = field(default_factory=list)
    int_x: bool = False  # integer x ticks (trial numbers)


def _font(size: int = 13) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v != 0 else "0"


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        decades = [10.0 ** e for e in range(math.floor(lo), math.ceil(hi) + 1)
                   if lo - 1e-9 <= e <= hi + 1e-9]
        return decades if len(decades) >= 2 else [10.0 ** (lo + (hi - lo) * i / 4)
                                                  for i in range(5)]
    return [lo + (hi - lo) * i / 4 for i in range(5)]


def _panel(draw: ImageDraw.ImageDraw, ox: int, oy: int, panel: Panel) -> None:
    font, small = _font(14), _font(11)
    left, top, right, bottom = ox + _M[0], oy + _M[1], ox + _W - _M[2], oy + _H - _M[3]
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    draw.text((ox + _W // 2, oy + 12), panel.title, fill=(0, 0, 0), font=font, anchor="mt")
    draw.text(((left + right) // 2, oy + _H - 14), panel.xlabel, fill=(0, 0, 0), font=small,
              anchor="mm")
    draw.text((ox + 6, top - 18), panel.ylabel, fill=(0, 0, 0), font=small)
    pts = [(x, y) for s in panel.series for x, y in zip(s.x, s.y)
           if math.isfinite(x) and math.isfinite(y) and (x > 0 or not panel.log_x)]
    if not pts:
        draw.text(((left + right) // 2, (top + bottom) // 2), "no finished trials",
                  fill=(0, 0, 0), font=font, anchor="mm")
        return
    tx = (lambda v: math.log10(v)) if panel.log_x else (lambda v: v)
    xs, ys = [tx(x) for x, _ in pts], [y for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad_x = (x1 - x0) * 0.05 or 0.5
    pad_y = (y1 - y0) * 0.08 or (abs(y0) * 0.1 or 0.5)
    x0, x1, y0, y1 = x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y
    if panel.x_names:
        x0, x1 = -0.5, len(panel.x_names) - 0.5

    def px(x: float) -> float:
        return left + (tx(x) - x0) / (x1 - x0) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    for t in _ticks(y0, y1, False):
        draw.line((left - 4, py(t), left, py(t)), fill=(0, 0, 0))
        draw.text((left - 6, py(t)), _fmt(t), fill=(0, 0, 0), font=small, anchor="rm")
    if panel.x_names:
        for i, name in enumerate(panel.x_names):
            draw.text((px(i), bottom + 4), name[:14], fill=(0, 0, 0), font=small, anchor="mt")
    else:
        ticks = _ticks(x0, x1, panel.log_x)
        if panel.int_x:
            ticks = sorted({float(round(t)) for t in ticks if x0 <= round(t) <= x1})
        for t in ticks:
            draw.line((px(t), bottom, px(t), bottom + 4), fill=(0, 0, 0))
            draw.text((px(t), bottom + 6), _fmt(t), fill=(0, 0, 0), font=small, anchor="mt")
    for v in panel.vlines:
        if v > 0 or not panel.log_x:
            draw.line((px(v), top, px(v), bottom), fill=_COLORS["red"], width=2)
    legend_y = top + 6
    for s in panel.series:
        color = _COLORS.get(s.color, _COLORS["blue"])
        seq = [(px(x), py(y)) for x, y in zip(s.x, s.y)
               if math.isfinite(x) and math.isfinite(y) and (x > 0 or not panel.log_x)]
        if s.style in ("line", "step") and len(seq) > 1:
            if s.style == "step":
                seq = [p for a, b in zip(seq, seq[1:]) for p in (a, (b[0], a[1]))] + [seq[-1]]
            draw.line(seq, fill=color, width=2)
        elif s.style == "cross":
            for x, y in seq:
                draw.line((x - 4, y - 4, x + 4, y + 4), fill=color, width=2)
                draw.line((x - 4, y + 4, x + 4, y - 4), fill=color, width=2)
        else:
            for x, y in seq:
                draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=color)
        if s.label:
            draw.rectangle((right - 120, legend_y, right - 110, legend_y + 10), fill=color)
            draw.text((right - 105, legend_y - 1), s.label, fill=(0, 0, 0), font=small)
            legend_y += 16


def draw_panels(panels: list[Panel], path: Path, columns: int = 2) -> Path:
    """Draw ``panels`` in a grid of ``columns`` and save a PNG at ``path``."""
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    image = Image.new("RGB", (_W * columns, _H * rows), "white")
    draw = ImageDraw.Draw(image)
    for i, panel in enumerate(panels):
        _panel(draw, (i % columns) * _W, (i // columns) * _H, panel)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def draw_bars(title: str, names: list[str], values: list[float], path: Path) -> Path:
    """A horizontal bar chart of ``values`` (e.g. parameter importances in [0, 1])."""
    font, small = _font(14), _font(12)
    label_w = 12 + 7 * max((len(n) for n in names), default=4)
    width, height = label_w + 320, 60 + 30 * max(len(names), 1)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((width // 2, 12), title, fill=(0, 0, 0), font=font, anchor="mt")
    top = max(values, default=1.0) or 1.0
    for i, (name, value) in enumerate(zip(names, values)):
        y = 44 + 30 * i
        draw.text((label_w - 8, y + 9), name, fill=(0, 0, 0), font=small, anchor="rm")
        draw.rectangle((label_w, y, label_w + 250 * value / top, y + 18), fill=_COLORS["blue"])
        draw.text((label_w + 250 * value / top + 6, y + 9), f"{value:.3f}", fill=(0, 0, 0),
                  font=small, anchor="lm")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
