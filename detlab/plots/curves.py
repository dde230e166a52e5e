"""``curves.png``: every logged loss term and validation metric per epoch, one panel each.

Input is a history ``{epoch: {key: value}}`` of epoch-level values as logged by
:class:`~detlab.engine.task.DetlabTask` (``train/loss``, ``train/loss_<term>``, ``val/<metric>``)
and by Lightning's ``LearningRateMonitor`` (``lr-<optimizer>``). Related series share a panel
so a report stays readable: per-class values (``AP/<class>``, ``dice/<i>``), values at several
operating points (``froc_sens@<fp>``), COCO's size buckets (``AP_small`` ...), relative size
buckets (``AP_rel_<name>``), AR at each detection limit and the learning rates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from matplotlib.figure import Figure

from .common import panel_grid

__all__ = ["panel_key", "group_series", "curves_figure"]

_SIZES = ("small", "medium", "large")
_SKIP = {"val/primary", "epoch", "step"}


def panel_key(key: str) -> tuple[str, str]:
    """``(panel title, legend label)`` of one logged ``key``."""
    stage, _, name = key.partition("/") if "/" in key else ("", "", key)
    if key.startswith("lr-"):
        return "learning rate", key[3:]
    prefix = f"{stage} " if stage else ""
    if "/" in name:  # per-class value: "AP/helmet", "dice/0"
        base, _, cls = name.partition("/")
        return f"{prefix}{base} per class", cls
    if "@" in name:  # operating points: "froc_sens@0.5"
        base, _, point = name.partition("@")
        return f"{prefix}{base}", f"@{point}"
    m = re.fullmatch(r"(AP|AR)_rel_(\w+)", name)
    if m:
        return f"{prefix}{m.group(1)} by relative size", m.group(2)
    m = re.fullmatch(r"(AP|AR)_(small|medium|large)", name)
    if m:
        return f"{prefix}{m.group(1)} by size", m.group(2)
    if re.fullmatch(r"AR\d+", name):
        return f"{prefix}AR", f"max {name[2:]} dets"
    return f"{prefix}{name}", ""


def group_series(history: Mapping[int, Mapping[str, float]]
                 ) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{panel title: {label: [(epoch, value), ...]}}``, panels ordered: training losses,
    validation metrics, the rest (each in first-seen order); NaN values are left out."""
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for epoch in sorted(history):
        for key, value in history[epoch].items():
            if key in _SKIP or value is None:
                continue
            value = float(value)
            if not math.isfinite(value):
                continue
            title, label = panel_key(key)
            panels.setdefault(title, {}).setdefault(label, []).append((int(epoch), value))

    def rank(title: str) -> int:  # the total training loss first, then its terms
        if title == "train loss":
            return 0
        return 1 if title.startswith("train") else 2 if title.startswith("val") else 3

    return dict(sorted(panels.items(), key=lambda kv: rank(kv[0])))


def curves_figure(history: Mapping[int, Mapping[str, float]], title: str = "",
                  primary: str | None = None, columns: int = 4) -> Figure:
    """One panel per series group of ``history`` (see :func:`group_series`), epoch on x.

    ``primary`` (a metric name such as ``"AP"``) gets its panel title marked ``(primary)``.
    Grouped panels (named series) have a legend; every point is marked.
    """
    panels = group_series(history)
    if not panels:
        panels = {"no epoch-level values logged yet": {}}
    fig, axes = panel_grid(len(panels), columns=columns, title=title)
    for ax, (name, series) in zip(axes, panels.items()):
        for label, points in series.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.4, label=label or None)
        shown = name + (" (primary)" if primary and name == f"val {primary}" else "")
        ax.set_title(shown, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if name.startswith("train") and "loss" in name:
            ax.set_ylabel("loss", fontsize=8)
        if any(series):  # a grouped panel names its series, even when only one is left
            ax.legend(fontsize=6, ncol=2 if len(series) > 4 else 1, loc="best")
    return fig
