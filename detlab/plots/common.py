"""Figure creation and output shared by the plot modules (Agg only, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["new_figure", "panel_grid", "save_figure", "figure_to_array", "image_grid", "class_colour",
           "halo"]

DPI = 100


def new_figure(width: float, height: float) -> Figure:
    """A ``Figure`` of ``width`` x ``height`` inches on an Agg canvas, with constrained layout
    (titles, labels and legends do not overlap neighbouring panels)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def panel_grid(n: int, columns: int = 4, panel: tuple[float, float] = (3.6, 2.7),
               title: str = "", min_width: float = 0.0) -> tuple[Figure, list]:
    """A figure with ``n`` panels in rows of ``columns`` (at least ``min_width`` inches wide,
    so a title and a legend below fit over a single panel); returns ``(figure, axes)`` with
    exactly ``n`` axes (unused grid cells get none)."""
    n = max(1, n)
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    fig = new_figure(max(min_width, panel[0] * columns),
                     panel[1] * rows + (0.3 if title else 0.0))
    axes = [fig.add_subplot(rows, columns, i + 1) for i in range(n)]
    if title:
        fig.suptitle(title, fontsize=12)
    return fig, axes


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parents created; written to a temporary file and
    renamed, so a viewer never sees half a picture)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=DPI)
    tmp.replace(path)
    return path


def figure_to_array(fig: Figure) -> np.ndarray:
    """The rendered figure as ``(H, W, 3)`` uint8 RGB (for TensorBoard's ``add_image``)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def image_grid(n: int, columns: int = 4, tile: float = 3.2,
               title: str = "") -> tuple[Figure, list]:
    """A figure of ``n`` image panels (axes off, square tiles of ``tile`` inches) in rows of
    ``columns``; returns ``(figure, axes)``."""
    # legends below image grids need ~8 inches (4 entries); titles about as much
    fig, axes = panel_grid(n, columns=columns, panel=(tile, tile), title=title, min_width=8.0)
    for ax in axes:
        ax.set_axis_off()
    return fig, axes


def halo(width: float) -> list:
    """Path effects that outline a line of ``width`` in black, so thin boxes and polygons
    stay visible on any image colour."""
    from matplotlib import patheffects

    return [patheffects.Stroke(linewidth=width + 1.6, foreground="black", alpha=0.8),
            patheffects.Normal()]


def class_colour(k: int) -> tuple[float, float, float]:
    """A distinct RGB colour (0..1) for class index ``k`` (matplotlib's tab10, cycled)."""
    from matplotlib import colormaps

    return tuple(colormaps["tab10"](int(k) % 10)[:3])
