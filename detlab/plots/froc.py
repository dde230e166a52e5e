"""FROC plot: lesion sensitivity vs mean false positives per scan (log x axis)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..evaluation.froc import FROC_FP_RATES, froc_sensitivities
from .common import new_figure

__all__ = ["froc_figure"]


def froc_figure(curves: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                class_names: Sequence[str] | None = None,
                rates: Sequence[float] = FROC_FP_RATES) -> Figure:
    """One line per class (``(thresholds, fps_per_scan, sensitivity)`` of
    :func:`~detlab.evaluation.froc.froc_curve`), the sensitivity at each FP rate of ``rates``
    marked, the legend giving the FROC score (mean of those sensitivities)."""
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = min(rates) / 2, max(rates) * 2
    drawn = 0
    for c, (_, fps, sens) in enumerate(curves):
        if len(sens) == 0 or np.isnan(sens).all():
            continue
        name = class_names[c] if class_names and c < len(class_names) else f"class {c}"
        m = froc_sensitivities(fps, sens, rates)
        # extend the last operating point to the right edge: the sensitivity stays there
        xs = np.concatenate([np.maximum(fps, lo), [max(hi, float(fps[-1]))]])
        ys = np.concatenate([sens, [sens[-1]]])
        (line,) = ax.plot(xs, ys, linewidth=1.5, label=f"{name}: FROC score {m['froc_score']:.3f}")
        at = [m[f"froc_sens@{r:g}"] for r in rates]
        ax.plot(rates, at, "o", color=line.get_color(), markersize=4)
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no ground-truth lesion evaluated", ha="center",
                transform=ax.transAxes)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(rates), [f"{r:g}" for r in rates])
    ax.set(xlim=(lo, hi), ylim=(0, 1.02), xlabel="mean false positives per scan",
           ylabel="lesion sensitivity", title="FROC (dots: 1/8 ... 8 FP per scan)")
    ax.grid(True, alpha=0.3, which="both")
    if drawn:
        ax.legend(fontsize=8, loc="lower right")
    return fig
