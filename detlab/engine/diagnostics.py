"""Diagnostics written during training, so a collapsed model or a broken loader shows at once.

In ``<run dir>/diagnostics/``:

* ``train_batch.png`` / ``.txt``: the first training batch after all transforms
  (as ``detlab show-data``);
* ``prob_hist_epoch{N}.png`` / ``.txt``: predicted probabilities on validation, ground-truth
  positive and negative pixels apart (a healthy model pushes them to opposite ends);
* ``attention_epoch{N}.png``: for a few validation slices (those with lesions first), the
  image with its mask, the predicted probabilities and each attention gate of an Attention
  U-Net (``Prediction.extras["attention"]``);
* ``warnings.log``: every collapse warning, also logged as a WARNING.

One checker, three signals, every family (:class:`DiagnosticsCallback`):

* **metrics** (segmentation): :func:`collapse_check` on the evaluator's metrics;
* **assignments** (every head, during training): heads publish per-step counts in
  ``head.last_stats`` (a dict of 0-d tensors, set by their loss code; never loss terms):
  ``num_pos`` (positive anchors / RPN anchors / text or mask pixels), ``num_gt`` (ground-truth
  objects or pixels) and, for box heads, ``num_gt_below_stride`` (boxes whose shorter side is
  below the finest stride). A training epoch with ground truth but no positive assignment is
  reported by :func:`assignment_collapse_check`;
* **scores** (box and text heads, after validation): :func:`score_collapse_check` on the
  validation predictions' scores (no prediction at all, every score at the head's initial
  prior ``head.score_prior``, or all scores equal).

The warnings list the likely causes (EMA without warm-up, learning rate, objects below the
smallest stride, class mapping). Before training, :class:`PositivesCheck` (on even with
``train.diagnostics=false``) counts what the data gives to learn
(:func:`~detlab.data.positives.count_positives`) and stops or warns when it is (near) nothing.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from ..checks import is_number
from . import render
from .positives_check import PositivesCheck, check_training_positives
from .batch_view import batch_summary, render_batch

__all__ = [
    "collapse_check", "assignment_collapse_check", "score_collapse_check", "DiagnosticsCallback",
    "PositivesCheck", "check_training_positives",
]

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


def _causes(stride: float | None = None, small: int = 0, total: int = 0,
            ema_decay: float | None = None, step: int | None = None,
            family: str = "detection") -> str:
    """The likely causes of a detection (or text) collapse, most specific first."""
    causes = []
    if family == "text":
        causes.append("words below min_text_size after the resize, which the targets do not "
                      "learn (see the `positives in data.train` line at the start: raise "
                      "img_size or lower min_text_size)")
    if ema_decay == 0:
        pass  # the trainer runs no EMA: not a cause
    elif ema_decay is not None and step is not None and 1.0 / (1.0 - ema_decay) <= 0.5 * step:
        pass  # the EMA averages a window well inside the run: the init no longer dominates it
    elif ema_decay is not None:
        steps = f" after {step} steps" if step is not None else ""
        causes.append(f"EMA is on (effective decay {ema_decay:.4g}{steps}): the evaluated weights "
                      "average the last ~1 / (1 - decay) steps, so a high decay without a "
                      "warm-up keeps them near the initial ones (train.ema decay / tau, or "
                      "validate='live')")
    else:
        causes.append("EMA with a high decay and no warm-up (train.ema) keeps the evaluated "
                      "weights near the initialisation")
    causes.append("a learning rate too low to move or so high it diverges "
                  "(train.optimizer.lr, train.scheduler warm-up)")
    if family == "text":
        causes.append("post-processing thresholds above what a briefly trained model reaches "
                      "(model.head.postprocessor.binarize_threshold / box_threshold)")
    elif stride and total and not small:
        pass  # the epoch's boxes were all at least one stride wide: not a cause
    elif stride:
        share = f" ({small} of {total} boxes are)" if total else ""
        causes.append(f"objects smaller than the finest stride {stride:g} px{share}: no anchor "
                      "falls inside them (raise img_size or add a finer level, e.g. P2)")
    else:
        causes.append("objects smaller than the smallest stride (raise img_size)")
    if family != "text":
        causes.append("a class mapping that does not match the data (model.head.num_classes, "
                      "classes=, labels outside 0..num_classes-1)")
    return "likely causes: " + "; ".join(causes) + (
        ". Check a training batch: `detlab show-data RECIPE --out DIR`")


def assignment_collapse_check(stats: Mapping[str, float], family: str = "detection",
                              stride: float | None = None, ema_decay: float | None = None,
                              step: int | None = None) -> str | None:
    """A warning when a training epoch had ground truth but not one positive assignment.

    Args:
        stats: the epoch's sums of ``head.last_stats`` (``num_pos``, ``num_gt``, optionally
            ``num_gt_below_stride``) and ``steps``.
        family: ``"detection"`` (anchors), ``"text"`` or ``"segmentation"`` (pixels).
        stride: the finest stride of the head in px (box heads).
        ema_decay, step: EMA decay (0: no EMA; None: unknown) and the global step, for the
            causes.
    """
    num_gt, num_pos = float(stats.get("num_gt", 0)), float(stats.get("num_pos", -1))
    if not stats.get("steps") or num_gt <= 0 or num_pos != 0:
        return None
    steps = int(stats["steps"])
    if family == "detection":
        small, total = int(stats.get("num_gt_below_stride", 0)), int(num_gt)
        return (f"no positive anchor assignment in {steps} training steps although the batches "
                f"held {total} ground-truth boxes: the classification loss only learns "
                "background and every score drifts to 0; "
                + _causes(stride, small, total, ema_decay, step))
    return (f"no positive target pixel in {steps} training steps ({family}): the loss learns "
            "background only; check min_text_size / img_size (text) or the masks "
            "(`detlab show-data RECIPE --out DIR`)")


def score_collapse_check(summary: Mapping[str, float], prior: float | None = None,
                         factor: float = 2.0, family: str = "detection",
                         stride: float | None = None, ema_decay: float | None = None,
                         step: int | None = None, train: Mapping[str, float] | None = None
                         ) -> str | None:
    """A warning when validation scores look like an untrained or collapsed model, else None.

    Fires (validation with ground truth only) when there is no prediction at all (every score
    below the post-processing threshold), when the highest score is within ``factor`` of the
    head's initial class prior ``prior`` (``max <= factor * prior``: nothing was learnt to
    fire), or when every score is the same (``max - min <= 1 % of max``, >= 2 predictions).

    Args:
        summary: ``num_gt``, ``num_pred``, ``max_score``, ``min_score`` over the validation set.
        prior: initial score of every anchor (``head.score_prior``), if the head has one.
        factor, family, stride, ema_decay, step: see above / :func:`assignment_collapse_check`.
        train: the training epoch's ``last_stats`` sums (``num_gt``, ``num_gt_below_stride``),
            to say how many boxes are below the stride.
    """
    num_gt, num_pred = int(summary.get("num_gt", 0)), int(summary.get("num_pred", 0))
    if num_gt <= 0:
        return None
    noun = "text region" if family == "text" else "box"
    top, low = float(summary.get("max_score", 0.0)), float(summary.get("min_score", 0.0))
    if num_pred == 0:
        reason = (f"no {noun} predicted on the validation set (every score is below the "
                  f"post-processing threshold) although it holds {num_gt} objects")
    elif prior is not None and top <= factor * prior:
        reason = (f"every validation score is at the initial prior {prior:.3g} (max "
                  f"{top:.3g} <= {factor:g}x prior over {num_pred} predictions)")
    elif num_pred >= 2 and top - low <= 0.01 * top:
        reason = (f"all {num_pred} validation scores are equal ({low:.4g}..{top:.4g}): they "
                  "do not rank objects above background")
    else:
        return None
    train = train or {}
    small, total = int(train.get("num_gt_below_stride", 0)), int(train.get("num_gt", 0))
    return f"model looks collapsed: {reason}; " + _causes(stride, small, total, ema_decay, step,
                                                          family)


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
        self._train: dict[str, Any] = {}
        self._scores: dict[str, Any] = {}

    def _warn(self, epoch: int, message: str) -> None:
        log.warning("[epoch %d] %s", epoch, message)
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "warnings.log", "a", encoding="utf-8") as f:
            f.write(f"epoch {epoch}: {message}\n")

    # -- positive assignments (head.last_stats) -----------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Start the epoch's sums of ``head.last_stats``."""
        self._train = {"steps": 0}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        """Add the step's ``head.last_stats`` (kept as tensors: no device sync per step)."""
        stats = getattr(_head(pl_module), "last_stats", None)
        if not isinstance(stats, Mapping):
            return
        self._train["steps"] = self._train.get("steps", 0) + 1
        for key, value in stats.items():
            value = value.detach() if isinstance(value, torch.Tensor) else value
            self._train[key] = self._train.get(key, 0) + value

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Warn when the epoch had ground truth but no positive assignment."""
        if not trainer.is_global_zero or not self._train.get("steps"):
            return
        stats = {k: float(v) for k, v in self._train.items()}
        head = _head(pl_module)
        warning = assignment_collapse_check(stats, _family(head), _finest_stride(head),
                                            _ema_decay(trainer), _step(trainer))
        if warning:
            self._warn(trainer.current_epoch, warning)

    # -- validation scores ----------------------------------------------------------------------
    def _score_batch(self, outputs: list[Any], batch: Any) -> None:
        acc = self._scores
        for i, pred in enumerate(outputs):
            if getattr(pred, "boxes", None) is None and getattr(pred, "polygons", None) is None:
                continue
            acc["family"] = "text" if getattr(pred, "polygons", None) is not None else "detection"
            target = batch.targets[i] if i < len(batch.targets) else {}
            acc["num_gt"] = acc.get("num_gt", 0) + _num_objects(target)
            scores = getattr(pred, "scores", None)
            if isinstance(scores, torch.Tensor) and scores.numel():
                scores = scores.detach().float()
                acc["num_pred"] = acc.get("num_pred", 0) + int(scores.numel())
                acc["max_score"] = max(acc.get("max_score", -math.inf), float(scores.max()))
                acc["min_score"] = min(acc.get("min_score", math.inf), float(scores.min()))

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
        """Forget the slices and scores of the previous validation epoch."""
        self._picked, self._fallback = [], []
        self._scores = {}

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Sum the validation scores (box and text heads) and keep the first validation slices
        with a lesion (others as fallback) for the attention picture."""
        if trainer.sanity_checking or not trainer.is_global_zero or not isinstance(outputs, list):
            return
        self._score_batch(outputs, batch)
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
            self._warn(epoch, warning)
        if self._scores:
            head = _head(pl_module)
            warning = score_collapse_check(
                self._scores, getattr(head, "score_prior", None), self.factor,
                self._scores.get("family", "detection"), _finest_stride(head),
                _ema_decay(trainer), _step(trainer),
                {k: float(v) for k, v in self._train.items()})
            if warning:
                self._warn(epoch, warning)
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
        render.with_colorbar(render.grid(tiles, columns, title=title),
                             "probability / attention").save(
            self.out / f"attention_epoch{epoch}.png")


def _head(pl_module: Any) -> Any:
    return getattr(getattr(pl_module, "model", None), "head", None)


def _family(head: Any) -> str:
    name = type(head).__name__
    if name == "DBHead":
        return "text"
    if name == "AttentionUNetHead":
        return "segmentation"
    return "detection"


def _finest_stride(head: Any) -> float | None:
    strides = getattr(head, "strides", None)
    return float(min(strides)) if strides else None


def _ema_decay(trainer: Any) -> float | None:
    """The decay of an EMA callback on ``trainer`` (0.0: none; None: no callback list): the
    ramped decay of detlab's :class:`~detlab.engine.ema.ModelEMA` now, a callback's ``decay``
    attribute, else the ``decay`` Lightning's ``EMAWeightAveraging`` keeps
    in its ``avg_fn`` closure."""
    callbacks = getattr(trainer, "callbacks", None)
    if callbacks is None:
        return None
    for cb in callbacks:
        current = getattr(cb, "current_decay", None)  # detlab's ModelEMA: the ramped decay
        decay = current() if callable(current) else getattr(cb, "decay", None)
        if decay is None:
            fn = (getattr(cb, "_kwargs", None) or {}).get("avg_fn")
            fn = inspect.unwrap(fn) if callable(fn) else fn  # torch.no_grad wraps it
            code = getattr(fn, "__code__", None)
            if code is not None and "decay" in code.co_freevars and fn.__closure__:
                decay = fn.__closure__[code.co_freevars.index("decay")].cell_contents
        if is_number(decay):
            return float(decay)
    return 0.0


def _step(trainer: Any) -> int | None:
    step = getattr(trainer, "global_step", None)
    return int(step) if isinstance(step, int) else None


def _num_objects(target: Mapping[str, Any]) -> int:
    """Non-ignored ground-truth boxes (else polygons) of one validation target."""
    items = target.get("boxes")
    if items is None:
        items = target.get("polygons")
    if items is None:
        return 0
    n = len(items)
    ignore = target.get("ignore")
    if isinstance(ignore, torch.Tensor) and ignore.numel() == n:
        n -= int(ignore.bool().sum())
    return n
