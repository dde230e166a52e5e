"""Diagnostics written during training, so a collapsed model or a broken loader shows at once.

In ``<run dir>/diagnostics/``:

* ``train_batch.png`` / ``.txt``: the first training batch after all transforms
  (as ``detlab show-data``);
* ``prob_hist_epoch{N}.png`` / ``.txt``: predicted probabilities on validation, ground-truth
  positive and negative pixels apart (a healthy model pushes them to opposite ends);
* ``attention_epoch{N}.png``: for a few validation slices (those with lesions first), the
  image with its mask, the predicted probabilities and each attention gate of an Attention
  U-Net (``Prediction.extras["attention"]``);
* ``warnings.log``: every collapse warning, also logged as a WARNING (:func:`collapse_check`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

from . import render
from .show_data import batch_summary, render_batch

__all__ = ["collapse_check", "DiagnosticsCallback"]

log = logging.getLogger("detlab.diagnostics")


def collapse_check(metrics: Mapping[str, float], min_threshold: float = 1e-4,
                   factor: float = 2.0) -> str | None:
    """A warning when segmentation metrics look like a model that predicts nothing, else None.

    Fires when (any of):
      * every predicted probability is below ``min_threshold``, the lowest threshold of the
        search (``max_prob < min_threshold`` or ``frac_above_min_threshold == 0``);
      * ``pr_auc < factor * prevalence``: a constant predictor scores exactly the prevalence,
        so a PR-AUC within a small factor of it means the scores barely rank lesion pixels
        above the rest;
      * ``best_threshold`` sits at the bottom of the search range (the lesion pixels only
        separate at the lowest probabilities);
      * the validation set has no positive pixel (then none of the above can be judged).

    Args:
        metrics: output of :class:`~detlab.evaluation.segmentation.SegmentationEvaluator`
            (``pr_auc``, ``prevalence``, ``max_prob``, ``frac_above_min_threshold``,
            ``best_threshold``); other metrics dicts give None.
        min_threshold: the evaluator's ``min_threshold``.
        factor: how close to the prevalence a PR-AUC counts as collapsed.
    """
    if "pr_auc" not in metrics or "prevalence" not in metrics:
        return None
    prevalence, pr_auc = float(metrics["prevalence"]), float(metrics["pr_auc"])
    if prevalence <= 0:
        return ("validation set has no lesion pixel: PR-AUC, recall and the collapse check "
                "cannot be judged; check that validation masks are loaded "
                "(`detlab show-data RECIPE --split val --out DIR`)")
    reasons = []
    max_prob = float(metrics.get("max_prob", 1.0))
    if max_prob < min_threshold or float(metrics.get("frac_above_min_threshold", 1.0)) == 0:
        reasons.append(f"every predicted probability is below the lowest searched threshold "
                       f"{min_threshold:g} (max prob {max_prob:.3g})")
    if pr_auc < factor * prevalence:
        reasons.append(f"PR-AUC {pr_auc:.4g} is within {factor:g}x of the prevalence "
                       f"{prevalence:.4g} (what a constant prediction scores)")
    best = metrics.get("best_threshold")
    if best is not None and math.isfinite(best) and float(best) <= min_threshold * (1 + 1e-6):
        reasons.append(f"best threshold {float(best):.3g} is at the bottom of the search range")
    if not reasons:
        return None
    return ("model looks collapsed (its scores do not single out lesion pixels): "
            + "; ".join(reasons)
            + ". Check a training batch (`detlab show-data RECIPE --out DIR`), the masks, the "
            "positive oversampling and the loss weights.")


class DiagnosticsCallback(Callback):
    """Writes the pictures and warnings listed in the module docstring (rank 0 only).

    Args:
        run_dir: the run directory; files go to ``<run_dir>/diagnostics/``.
        num_attention_slices: validation slices shown in the attention picture.
        factor: :func:`collapse_check`'s PR-AUC / prevalence factor.
    """

    def __init__(self, run_dir: str | Path, num_attention_slices: int = 4,
                 factor: float = 2.0) -> None:
        self.out = Path(run_dir) / "diagnostics"
        self.num_attention_slices = num_attention_slices
        self.factor = factor
        self._batch_written = False
        self._picked: list[dict[str, Any]] = []
        self._fallback: list[dict[str, Any]] = []

    # -- first training batch ---------------------------------------------------------------
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any,
                             batch_idx: int) -> None:
        """Write the first training batch as ``train_batch.png`` and ``train_batch.txt``."""
        if self._batch_written or not trainer.is_global_zero:
            return
        self._batch_written = True
        self.out.mkdir(parents=True, exist_ok=True)
        render_batch(batch).save(self.out / "train_batch.png")
        (self.out / "train_batch.txt").write_text(batch_summary(batch) + "\n")

    # -- validation slices for the attention picture ----------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Forget the slices picked in the previous validation epoch."""
        self._picked, self._fallback = [], []

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Keep the first validation slices with a lesion (others as fallback) for the
        attention picture."""
        if trainer.sanity_checking or not trainer.is_global_zero or not isinstance(outputs, list):
            return
        if len(self._picked) >= self.num_attention_slices:
            return
        for i, pred in enumerate(outputs):
            attention = getattr(pred, "extras", {}).get("attention")
            if not attention or pred.probs is None:
                continue
            mask = batch.targets[i].get("mask") if i < len(batch.targets) else None
            has_lesion = isinstance(mask, torch.Tensor) and bool((mask > 0.5).any())
            pool = self._picked if has_lesion else self._fallback
            if len(pool) < self.num_attention_slices:
                pool.append(self._keep(batch, i, pred, mask))

    @staticmethod
    def _keep(batch: Any, i: int, pred: Any, mask: Any) -> dict[str, Any]:
        meta = batch.meta[i]
        h, w = (int(v) for v in meta.get("input_size", batch.images.shape[-2:]))
        return {
            "image": batch.images[i, :, :h, :w].detach().cpu(),
            "mask": None if mask is None else mask[..., :h, :w].detach().cpu(),
            "probs": pred.probs.detach().float().cpu(),
            "attention": [a.detach().float().cpu() for a in pred.extras["attention"]],
            "name": str(meta.get("image_id", i)),
            "display_channel": meta.get("display_channel"),
        }

    # -- end of validation: histogram, collapse warning, attention maps ---------------------
    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Write the epoch's histogram and attention pictures; log a collapse warning."""
        # runs after the task's on_validation_epoch_end, so last_metrics is this epoch's
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        self.out.mkdir(parents=True, exist_ok=True)
        evaluator = getattr(pl_module, "evaluator", None)
        metrics = getattr(pl_module, "last_metrics", {}) or {}
        if evaluator is not None and callable(getattr(evaluator, "split_histogram", None)):
            self._histogram(evaluator, metrics, epoch)
        warning = collapse_check(metrics, getattr(evaluator, "min_threshold", 1e-4), self.factor)
        if warning:
            log.warning("[epoch %d] %s", epoch, warning)
            with open(self.out / "warnings.log", "a", encoding="utf-8") as f:
                f.write(f"epoch {epoch}: {warning}\n")
        slices = (self._picked + self._fallback)[: self.num_attention_slices]
        if slices:
            self._attention(slices, epoch)

    def _histogram(self, evaluator: Any, metrics: Mapping[str, float], epoch: int) -> None:
        edges, pos, neg = evaluator.split_histogram()
        marks = [(evaluator.threshold, f"threshold {evaluator.threshold:g}")]
        best = metrics.get("best_threshold")
        if best is not None and math.isfinite(best):
            marks.append((float(best), f"best {float(best):.3g}"))
        title = (f"epoch {epoch}: {int(pos.sum() + neg.sum())} px, {int(pos.sum())} positive; "
                 f"PR-AUC {metrics.get('pr_auc', float('nan')):.3g}")
        render.probability_chart(edges, pos, neg, marks, title).save(
            self.out / f"prob_hist_epoch{epoch}.png")
        text = getattr(evaluator, "format_histogram", None)
        if callable(text):
            (self.out / f"prob_hist_epoch{epoch}.txt").write_text(text() + "\n")

    def _attention(self, slices: list[dict[str, Any]], epoch: int) -> None:
        tiles, columns = [], 2 + max(len(s["attention"]) for s in slices)
        for s in slices:
            size = tuple(s["image"].shape[-2:])
            picture = render.image_to_rgb(s["image"], s["display_channel"])
            if s["mask"] is not None:
                picture = render.overlay(picture, s["mask"])
            pictures = [(picture, s["name"][:24]),
                        (render.heatmap(s["probs"][0], size), "probability")]
            for j, alpha in enumerate(s["attention"]):
                label = f"gate {j + 1} ({alpha.shape[-2]}x{alpha.shape[-1]})"
                pictures.append((render.heatmap(alpha[0], size), label))
            row = [render.caption(render.fit(p, 160), text) for p, text in pictures]
            tiles += row + [render.caption(render.fit(Image.new("RGB", size[::-1]), 160), "")
                            ] * (columns - len(row))
        title = f"epoch {epoch}: attention gates, coarse to fine (yellow = 1, passes the skip)"
        render.grid(tiles, columns, title=title).save(
            self.out / f"attention_epoch{epoch}.png")
