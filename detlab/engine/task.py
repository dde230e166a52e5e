"""``DetlabTask``: the LightningModule that trains and validates any detlab ``Model``."""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from ..errors import ConfigError
from ..losses.nonfinite import total_nonfinite
from ..registry import EVALUATORS, MODELS
from ..recipe import Recipe
from ..structures import Batch, Prediction, to_device
from .ema import to_resume_layout
from .optim import build_optimizer, build_scheduler

__all__ = ["DetlabTask", "RECIPE_KEY"]

# Key under which checkpoints store the recipe provenance (JSON text: safe for weights_only).
RECIPE_KEY = "detlab_recipe"


class DetlabTask(pl.LightningModule):
    """Wraps ``Model`` + optimizer/schedule + evaluator for Lightning.

    * every loss term is logged separately (``train/loss_*``) next to their sum (``train/loss``);
    * validation predictions feed the evaluator, whose metrics are logged as ``val/<name>``
      each epoch; the primary one is also logged as ``val/primary`` for checkpointing;
    * the recipe (resolved JSON + recipe file texts) is stored in every checkpoint;
    * with ``inference.slicing.during_training=True`` validation is sliced: the datamodule's
      val loader yields :class:`~detlab.engine.sliced.SlicedBatch` es and each is predicted as
      ``detlab eval`` predicts it (tiles, merge, test post-processing, the recipe's TTA), so
      ``val/*`` equals ``detlab eval`` of the checkpoint.
    """

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.recipe = recipe
        self.model = MODELS.build(recipe.section("model"), key="model")
        eval_cfg = recipe.get("evaluator")
        self.evaluator = EVALUATORS.build(eval_cfg, key="evaluator") if eval_cfg else None
        self.train_cfg: dict[str, Any] = dict(recipe.get("train") or {})
        self.last_metrics: dict[str, float] = {}
        from ..postprocess.slicing import SlicedInference

        slicing = SlicedInference.from_recipe(recipe)
        self.val_slicing = slicing if slicing is not None and slicing.during_training else None

    def setup(self, stage: str) -> None:
        """Sliced validation (``inference.slicing.during_training``): wrap the datamodule's
        val loader in :func:`~detlab.engine.sliced.sliced_loader` (same batch size, workers;
        Lightning adds its distributed sampler to it as to any val loader)."""
        data = getattr(self.trainer, "datamodule", None)
        if data is None:
            return
        from .sliced import sliced_loader

        # set (or cleared) on every setup: a datamodule reused by an unsliced task stays plain
        data.val_loader_wrapper = None if self.val_slicing is None else functools.partial(
            sliced_loader, data, settings=self.val_slicing)

    # -- steps ------------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Any:
        """Raw head outputs of the model for ``images`` ``(B, C, H, W)``."""
        return self.model(images)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Sum of the head's ``loss_*`` terms; logs each term and the sum. Raises
        ``FloatingPointError`` naming the terms when the sum is not finite."""
        terms = self.model.loss(batch)
        bad = [k for k, v in terms.items() if not k.startswith("loss_")]
        if bad:
            raise ConfigError(f"head {type(self.model.head).__name__} returned non-loss keys {bad}")
        total = sum(terms.values())
        bs = len(batch)
        for key, value in terms.items():
            self.log(f"train/{key}", value.detach(), batch_size=bs, on_step=True, on_epoch=True,
                     sync_dist=True)
        self.log("train/loss", total.detach(), batch_size=bs, prog_bar=True, on_step=True,
                 on_epoch=True, sync_dist=True)
        nonfinite = total_nonfinite(self.model)  # box rows with NaN/inf (detlab.losses.nonfinite)
        if nonfinite is not None:
            # a running count: its epoch value is the max, the count at the end of the epoch
            self.log("train/nonfinite_boxes", nonfinite, batch_size=bs, on_step=False,
                     on_epoch=True, reduce_fx="max")
        if not torch.isfinite(total):
            # Fail early with the terms: a NaN loss otherwise shows up epochs later as NaN weights.
            values = {k: float(v.detach()) for k, v in terms.items()}
            raise FloatingPointError(f"non-finite loss at step {self.global_step}: {values}")
        return total

    def on_validation_epoch_start(self) -> None:
        """Reset the evaluator."""
        if self.evaluator is not None:
            self.evaluator.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> list[Prediction]:
        """Predict (``stage="val"``; a sliced batch: as ``detlab eval`` does, stage
        ``"test"``) and feed the evaluator; returns the (frame) predictions."""
        from .inference_model import inference_task
        from .sliced import SlicedBatch

        # The model detlab eval runs (BatchNorm folded, made once per validation epoch): val/*
        # equal eval's numbers to the digit, and validation runs faster.
        view = inference_task(self)
        if isinstance(batch, SlicedBatch):
            from .sliced_views import sliced_batch_predictions

            preds = sliced_batch_predictions(view, batch, self.val_slicing, self.device)
            # eval's sliced loop feeds CPU targets: the same evaluator input
            frames = Batch(batch.images, to_device(batch.targets, "cpu"), batch.meta)
            if self.evaluator is not None:
                self.evaluator.update(preds, frames)
            return preds
        preds = view.model.predict(batch, stage="val")
        if self.evaluator is not None:
            self.evaluator.update(preds, batch)
        return preds

    def on_validation_epoch_end(self) -> None:
        """Compute the evaluator's metrics, log them as ``val/<name>`` and the primary one as
        ``val/primary`` (what checkpoints monitor)."""
        from .inference_model import drop_inference_copy

        drop_inference_copy(self)  # the weights change before the next validation anyway
        if self.evaluator is None:
            return
        metrics = self.evaluator.compute()  # already gathered: identical on every rank
        self.last_metrics = metrics
        # sync_dist averages identical values (a no-op on the numbers) and keeps every rank's
        # logged state consistent for ModelCheckpoint.
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                self.log(f"val/{key}", float(value), sync_dist=True)
        primary = self.evaluator.primary
        if primary in metrics:
            self.log("val/primary", float(metrics[primary]), prog_bar=True, sync_dist=True)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Predict (``stage="test"``) and feed the evaluator."""
        preds = self.model.predict(batch, stage="test")
        if self.evaluator is not None:
            self.evaluator.update(preds, batch)

    def on_test_epoch_start(self) -> None:
        """Reset the evaluator."""
        if self.evaluator is not None:
            self.evaluator.reset()

    def on_test_epoch_end(self) -> None:
        """Store the evaluator's metrics in ``last_metrics``."""
        if self.evaluator is not None:
            self.last_metrics = self.evaluator.compute()

    # -- optimization -----------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """Optimizer from ``train.optimizer`` and, if ``train.scheduler`` is set, its LR schedule
        stepped every optimizer step."""
        optimizer = build_optimizer(self.train_cfg.get("optimizer"), self.model)
        sched_cfg = self.train_cfg.get("scheduler")
        if sched_cfg is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        max_epochs = max(1, int(self.trainer.max_epochs or 1))
        steps_per_epoch = max(1, math.ceil(total / max_epochs))
        scheduler = build_scheduler(sched_cfg, optimizer, total, steps_per_epoch)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def check_optimization(self) -> None:
        """Build ``train.optimizer`` and ``train.scheduler`` once on throwaway objects, so a
        wrong name or argument is a ``ConfigError`` before the run folder is created."""
        optimizer = build_optimizer(self.train_cfg.get("optimizer"), self.model)
        sched_cfg = self.train_cfg.get("scheduler")
        if sched_cfg is not None:
            epochs = max(1, int(self.train_cfg.get("max_epochs") or 1))
            build_scheduler(sched_cfg, optimizer, 10 * epochs, 10)  # 10 steps an epoch

    # -- checkpoints ------------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume from the live (trained) weights, whichever weights ``state_dict`` holds for
        evaluation (EMA checkpoints: :func:`detlab.engine.ema.to_resume_layout`)."""
        to_resume_layout(checkpoint)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the recipe provenance (JSON text) and the last metrics in the checkpoint."""
        checkpoint[RECIPE_KEY] = json.dumps(self.recipe.provenance())
        checkpoint["detlab_metrics"] = {
            k: float(v) for k, v in self.last_metrics.items() if isinstance(v, (int, float))
        }
