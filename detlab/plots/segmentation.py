"""Segmentation plots: prediction vs ground truth per pixel (TP / FP / FN colours)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .common import image_grid

__all__ = ["PIXEL_COLOURS", "error_overlay", "segmentation_overlay_figure"]

PIXEL_COLOURS = {
    "true positive": (0.17, 0.63, 0.17),
    "false positive": (0.84, 0.15, 0.16),
    "false negative (missed)": (0.12, 0.47, 0.95),
}


def error_overlay(image: np.ndarray, pred: np.ndarray, gt: np.ndarray,
                  alpha: float = 0.6) -> np.ndarray:
    """``image`` ``(H, W, 3)`` uint8 with ``pred & gt`` green, ``pred & ~gt`` red and
    ``~pred & gt`` blue blended in (``pred``, ``gt`` ``(H, W)`` bool); float RGB in [0, 1]."""
    out = np.asarray(image, np.float32) / 255.0
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    for mask, colour in zip((pred & gt, pred & ~gt, ~pred & gt), PIXEL_COLOURS.values()):
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    return out


def segmentation_overlay_figure(samples: Sequence[dict[str, Any]], title: str = "",
                                columns: int = 3) -> Figure:
    """Slices with :func:`error_overlay` and a legend of the three colours; each panel titled
    with the slice's name and its TP / FP / FN pixel counts.

    Each sample: ``image`` ``(H, W, 3)`` uint8, ``pred`` and ``gt`` ``(H, W)`` bool, optional
    ``name``.
    """
    from matplotlib.patches import Patch

    fig, axes = image_grid(len(samples), columns=columns, tile=3.6, title=title)
    for ax, s in zip(axes, samples):
        pred, gt = np.asarray(s["pred"], bool), np.asarray(s["gt"], bool)
        ax.imshow(error_overlay(s["image"], pred, gt), interpolation="nearest")
        tp, fp, fn = int((pred & gt).sum()), int((pred & ~gt).sum()), int((~pred & gt).sum())
        ax.set_title(f"{str(s.get('name', ''))[:22]}  TP {tp}  FP {fp}  FN {fn}", fontsize=8)
    handles = [Patch(color=c, label=k) for k, c in PIXEL_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
    return fig
