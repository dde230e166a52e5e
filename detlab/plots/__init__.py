"""Plots of a run, drawn with matplotlib's Agg renderer (no display needed).

One module per kind: :mod:`~detlab.plots.curves` (loss and metric curves per epoch),
:mod:`~detlab.plots.detection` (PR, F1-confidence, confusion matrix),
:mod:`~detlab.plots.text` (H-mean vs binarization threshold, polygon overlays),
:mod:`~detlab.plots.segmentation` (TP/FP/FN overlays), :mod:`~detlab.plots.froc` (FROC).
Every plotting function returns a :class:`matplotlib.figure.Figure` (tests inspect its axes,
titles and legends); :func:`~detlab.plots.common.save_figure` writes it as PNG.
:mod:`detlab.engine.plot_callbacks` draws them during training, under ``<run>/plots/``.
"""
