"""Plots written during training, under ``<run>/plots/`` and (when the TensorBoard logger is
active) as TensorBoard images; rank 0 only, once per epoch.

* ``curves.png``: every epoch-level training loss term, validation metric and learning rate
  (:mod:`detlab.plots.curves`), redrawn at the end of every training epoch;
* detection (``CocoEvaluator``): ``pr_curve.png``, ``f1_curve.png``, ``confusion_matrix.png``
  (:mod:`detlab.plots.detection`) after every validation;
* segmentation (``SegmentationEvaluator``): ``froc.png`` (:mod:`detlab.plots.froc`);
* overlays (:mod:`detlab.engine.plot_samples`): ``val_predictions.png`` (boxes with class
  name and score), ``val_text.png`` (polygons: true positive / false positive / missed),
  ``val_errors.png`` (TP / FP / FN pixels of the slices with the most wrong pixels) and
  ``train_batch.png`` (the first training batch's boxes with a legend of the class names);
* text: ``hmean_threshold.png``, precision / recall / H-mean of the first 32 validation images
  (rank 0) with the head's post-processor at binarization thresholds 0.05 ... 0.95;
* TensorBoard also gets the learning rate (Lightning's ``LearningRateMonitor``) and, at the
  end of fit, the resolved recipe as hparams with the final validation metrics (``hp/<name>``).

A plot that fails to draw is reported as a warning naming the plot and the error; training
goes on (a picture is never worth a lost run).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from .plot_samples import SampleKeeper, train_batch_samples

__all__ = ["RunPlots", "plot_callbacks", "epoch_values"]


def epoch_values(metrics: dict[str, Any], with_val: bool = True) -> dict[str, float]:
    """Epoch-level ``train/*`` (``_epoch`` suffix dropped, ``_step`` values left out), ``lr-*``
    and, if ``with_val``, ``val/*`` values of a Lightning metrics dict, as floats."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key.endswith("_step") or not key.startswith(("train/", "val/", "lr-")):
            continue
        if key.startswith("val/") and not with_val:
            continue
        try:
            out[key.removesuffix("_epoch")] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _tensorboard(trainer: pl.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


class RunPlots(Callback):
    """Draws the run's plots (see the module docstring) into ``<run_dir>/plots/``.

    Args:
        run_dir: the run folder.
        confusion_iou: IoU at which the confusion matrix matches boxes.
        confusion_conf: lowest confidence of a detection in the confusion matrix.
    """

    def __init__(self, run_dir: str | Path, confusion_iou: float = 0.5,
                 confusion_conf: float = 0.25) -> None:
        self.run_dir = Path(run_dir)
        self.out_dir = self.run_dir / "plots"
        self.confusion_iou = float(confusion_iou)
        self.confusion_conf = float(confusion_conf)
        self.history: dict[int, dict[str, float]] = {}
        self._validated_epoch = -1
        self._samples = SampleKeeper()
        self._best_conf: float | None = None  # overlays show boxes from the best-F1 confidence
        self._train_batch_drawn = False

    # -- hooks ----------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """A resumed run starts its curves from the epochs already in ``metrics.csv``."""
        if trainer.is_global_zero and not self.history:
            self.history = _read_history(self.run_dir / "metrics.csv")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        """The first training batch of this fit with class names (box data only)."""
        if self._train_batch_drawn or not trainer.is_global_zero:
            return
        self._train_batch_drawn = True
        samples = train_batch_samples(batch)
        if samples:
            from ..plots.detection import boxes_figure

            names = _class_names(getattr(pl_module, "evaluator", None), samples)
            self._publish(trainer, "train_batch", lambda: boxes_figure(
                samples, names, f"first training batch (epoch {trainer.current_epoch}), "
                "ground truth"))

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Forget the previous validation's images."""
        self._samples.reset()

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Keep images for the overlays (rank 0)."""
        if trainer.sanity_checking or not trainer.is_global_zero or not isinstance(outputs, list):
            return
        try:
            self._samples.add(outputs, batch, getattr(pl_module, "evaluator", None))
        except Exception as err:  # noqa: BLE001 - reported, the overlays are then partial
            rank_zero_warn(f"overlay images not kept: {type(err).__name__}: {err}")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """After the module computed this epoch's metrics: the evaluator's plots, overlays."""
        if trainer.sanity_checking:
            return
        self._validated_epoch = trainer.current_epoch
        if not trainer.is_global_zero:
            return
        evaluator = getattr(pl_module, "evaluator", None)
        if evaluator is not None:
            for name, draw in _evaluator_plots(self, evaluator):
                self._publish(trainer, name, draw)
        epoch = trainer.current_epoch
        kept = self._samples
        if kept.boxes:
            from ..plots.detection import boxes_figure

            names = _class_names(evaluator, kept.boxes)
            self._publish(trainer, "val_predictions", lambda: boxes_figure(
                kept.boxes, names, f"validation predictions, epoch {epoch}",
                min_score=self.confusion_conf if self._best_conf is None else self._best_conf,
                score_note="" if self._best_conf is None else ", best F1"))
        if kept.polygons:
            from ..plots.text import text_overlay_figure

            self._publish(trainer, "val_text", lambda: text_overlay_figure(
                kept.polygons, f"validation text polygons, epoch {epoch}"))
        if kept.prob_maps:
            self._publish(trainer, "hmean_threshold",
                          lambda: _hmean_plot(kept.prob_maps, pl_module, evaluator, epoch))
        masks = kept.masks
        if masks:
            from ..plots.segmentation import segmentation_overlay_figure

            self._publish(trainer, "val_errors", lambda: segmentation_overlay_figure(
                masks, f"validation slices with the most wrong pixels, epoch {epoch} "
                f"(threshold {getattr(evaluator, 'threshold', 0.5):g})"))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Add this epoch's values to the history and redraw ``curves.png``."""
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        row = epoch_values(dict(trainer.callback_metrics),
                           with_val=self._validated_epoch == epoch)
        for opt in trainer.optimizers:
            groups = opt.param_groups
            for i, group in enumerate(groups):
                # LearningRateMonitor's names, so a resumed run's CSV history continues them
                name = f"lr-{type(opt).__name__}" + (f"/pg{i + 1}" if len(groups) > 1 else "")
                row[name] = float(group["lr"])
        self.history.setdefault(epoch, {}).update(row)
        evaluator = getattr(pl_module, "evaluator", None)
        primary = getattr(evaluator, "primary", None)
        title = f"{self.run_dir.parent.name}/{self.run_dir.name}: epoch {epoch}"

        def draw() -> Any:
            from ..plots.curves import curves_figure

            return curves_figure(self.history, title=title, primary=primary)

        self._publish(trainer, "curves", draw)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """TensorBoard hparams: the resolved recipe with the final validation metrics."""
        tb = _tensorboard(trainer)
        recipe = getattr(pl_module, "recipe", None)
        if tb is None or recipe is None or not trainer.is_global_zero:
            return
        metrics = {
            f"hp/{k}": float(v) for k, v in getattr(pl_module, "last_metrics", {}).items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        }
        tb.log_hyperparams(json.loads(recipe.to_json()), metrics=metrics)

    # -- output ---------------------------------------------------------------------------------
    def _publish(self, trainer: pl.Trainer, name: str, draw: Any) -> None:
        """Draw one figure, write ``plots/<name>.png`` and send it to TensorBoard."""
        from PIL import Image

        from ..plots.common import figure_to_array

        try:
            fig = draw()
            if fig is None:
                return
            pixels = figure_to_array(fig)  # drawn once for the file and TensorBoard
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.out_dir / f"{name}.png"
            tmp = path.with_name(path.name + ".tmp")
            Image.fromarray(pixels).save(tmp, format="PNG")
            tmp.replace(path)  # a viewer never sees half a picture
            tb = _tensorboard(trainer)
            if tb is not None:
                tb.experiment.add_image(f"plots/{name}", pixels, trainer.global_step,
                                        dataformats="HWC")
        except Exception as err:  # noqa: BLE001 - a plot must not end a run; reported
            rank_zero_warn(f"plot {name!r} was not drawn: {type(err).__name__}: {err}")


def _hmean_plot(samples: list[dict[str, Any]], pl_module: Any, evaluator: Any,
                epoch: int) -> Any:
    """H-mean vs binarization threshold with the head's own post-processor (None when it
    has no ``binarize_threshold``)."""
    import numpy as np

    from ..plots.text import hmean_figure, hmean_vs_threshold

    pp = getattr(getattr(getattr(pl_module, "model", None), "head", None), "postprocessor", None)
    if callable(getattr(pp, "for_stage", None)):  # a staged slot: the validation settings
        pp = pp.for_stage("val")
    if not hasattr(pp, "binarize_threshold"):
        return None
    thresholds = np.round(np.arange(0.05, 0.951, 0.05), 2)
    curves = hmean_vs_threshold(samples, pp, thresholds,
                                getattr(evaluator, "iou_threshold", 0.5),
                                getattr(evaluator, "ignore_overlap", 0.5))
    return hmean_figure(thresholds, curves, current=float(pp.binarize_threshold),
                        title=f"H-mean vs binarization threshold, epoch {epoch} "
                              f"({len(samples)} validation images)")


def _class_names(evaluator: Any, samples: list[dict[str, Any]]) -> list[str]:
    """The evaluator's class names, else ``class_<k>`` up to the largest label seen."""
    names = getattr(evaluator, "class_names", None)
    if names:
        return list(names)
    top = max((int(max(s["gt_labels"], default=-1)) for s in samples), default=-1)
    top = max([top] + [int(max(s.get("labels", []), default=-1)) for s in samples])
    return [f"class_{k}" for k in range(top + 1)]


def _evaluator_plots(cb: RunPlots, evaluator: Any) -> list[tuple[str, Any]]:
    """``(name, draw)`` pairs of the plots this evaluator supports."""
    plots: list[tuple[str, Any]] = []
    if callable(getattr(evaluator, "curve_data", None)):  # COCO boxes
        from ..plots import detection as det

        data = evaluator.curve_data()
        names, records = data["class_names"], data["records"]
        plots.append(("pr_curve", lambda: det.pr_figure(
            data["precision"], names, data["recall_thresholds"], data["iou_thresholds"])))
        thresholds, f1, has_gt = det.f1_confidence(records, len(names))
        cb._best_conf = det.best_f1_threshold(thresholds, f1, has_gt)
        plots.append(("f1_curve", lambda: det.f1_figure(thresholds, f1, has_gt, names)))
        plots.append(("confusion_matrix", lambda: det.confusion_figure(
            det.confusion_matrix(records, len(names), cb.confusion_iou, cb.confusion_conf),
            names, cb.confusion_iou, cb.confusion_conf)))
    if callable(getattr(evaluator, "froc_curves", None)):  # segmentation lesions
        from ..plots.froc import froc_figure

        curves = evaluator.froc_curves()
        if curves is not None:
            plots.append(("froc", lambda: froc_figure(curves)))
    return plots


def _read_history(path: Path) -> dict[int, dict[str, float]]:
    """Epoch-level values per epoch from a Lightning ``metrics.csv`` (empty when absent)."""
    history: dict[int, dict[str, float]] = {}
    if not path.is_file():
        return history
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                epoch = int(float(row.get("epoch") or ""))
            except ValueError:
                continue
            values = {k: v for k, v in row.items() if k and v not in (None, "")}
            history.setdefault(epoch, {}).update(epoch_values(values))
    return history


def plot_callbacks(run_dir: str | Path) -> list[Callback]:
    """The callbacks :func:`~detlab.engine.trainer.build_trainer` adds to every run: the
    learning-rate monitor (per epoch, into the loggers) and :class:`RunPlots`."""
    return [LearningRateMonitor(logging_interval="epoch"), RunPlots(run_dir)]
