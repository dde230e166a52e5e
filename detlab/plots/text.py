"""Text plots: predicted vs ground-truth polygons (true positive / false positive / missed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .common import image_grid

__all__ = ["STATUS_COLOURS", "text_overlay_figure"]

STATUS_COLOURS = {
    "true positive": "#2ca02c",
    "false positive": "#d62728",
    "missed ground truth": "#ffbf00",
    "not scored (don't care)": "#9e9e9e",
}


def text_overlay_figure(samples: Sequence[dict[str, Any]], title: str = "",
                        columns: int = 4) -> Figure:
    """Images with their polygons in three colours (legend :data:`STATUS_COLOURS`).

    Each sample: ``image`` ``(H, W, 3)`` uint8, ``preds``/``gts`` lists of ``(K, 2)`` (x, y)
    px polygons, ``pred_status``/``gt_status`` as
    :func:`~detlab.evaluation.text_hmean.match_text_status` (1 matched, 0 not, -1 not
    scored), optional ``name``. Matched ground truth is not drawn again (its prediction is).
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Polygon

    fig, axes = image_grid(len(samples), columns=columns, title=title)
    for ax, s in zip(axes, samples):
        ax.imshow(s["image"])
        counts = {"TP": 0, "FP": 0, "missed": 0}
        for poly, st in zip(s["preds"], s["pred_status"]):
            key = {1: "true positive", 0: "false positive"}.get(int(st), "not scored (don't care)")
            counts["TP" if st == 1 else "FP"] += int(st >= 0)
            ax.add_patch(Polygon(np.asarray(poly).reshape(-1, 2), closed=True, fill=False,
                                 linewidth=1.4, edgecolor=STATUS_COLOURS[key]))
        for poly, st in zip(s["gts"], s["gt_status"]):
            if st == 1:
                continue
            key = "missed ground truth" if st == 0 else "not scored (don't care)"
            counts["missed"] += int(st == 0)
            ax.add_patch(Polygon(np.asarray(poly).reshape(-1, 2), closed=True, fill=False,
                                 linewidth=1.4, linestyle="--", edgecolor=STATUS_COLOURS[key]))
        name = str(s.get("name", ""))[:24]
        ax.set_title(f"{name}  TP {counts['TP']}  FP {counts['FP']}  missed {counts['missed']}",
                     fontsize=8)
    handles = [Line2D([], [], color=c, linewidth=2, label=k,
                      linestyle="--" if "ground truth" in k or "care" in k else "-")
               for k, c in STATUS_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8)
    return fig
