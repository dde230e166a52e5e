"""Callbacks: atomic checkpoints, a per-epoch metrics printout, dataset epoch updates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_info

__all__ = [
    "AtomicModelCheckpoint", "AppendingCSVLogger", "MetricsPrinter", "DatasetEpochSetter",
    "StepSeeder", "format_metrics",
]


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes to a temporary file and renames it into place, and whose
    ``last.ckpt`` is always the end of the latest finished training epoch.

    A run killed while saving never leaves a truncated ``last.ckpt`` behind: the previous file
    stays valid until ``os.replace`` swaps in the complete new one.

    Lightning writes ``last`` only in a step where a top-k save happened, so after the best
    epoch it stops moving and ``--resume`` repeats every later epoch. Here ``last`` is written
    by :meth:`on_train_epoch_end` only, at every epoch (Lightning runs the epoch's validation
    before that hook, so the metrics and ``best.ckpt`` of that epoch are already known),
    whatever the monitored metric does.
    """

    _writing_last = False
    _last_written_step = -1

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        # Lightning's own calls (after a top-k save, at train end, on exception) are skipped:
        # one place writes ``last``, so its content does not depend on the metric.
        if self._writing_last:
            super()._save_last_checkpoint(trainer, monitor_candidates)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning's epoch-end top-k logic, then ``last.ckpt`` of this finished epoch."""
        super().on_train_epoch_end(trainer, pl_module)
        from lightning.pytorch.trainer.states import TrainerFn

        if (not self.save_last or trainer.fast_dev_run or trainer.sanity_checking
                or trainer.state.fn != TrainerFn.FITTING
                or self._last_written_step == trainer.global_step):
            return
        self._writing_last = True
        try:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        finally:
            self._writing_last = False
        self._last_written_step = trainer.global_step

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        trainer.strategy.barrier("atomic_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv``; a resumed run must keep the
    epochs before the interruption, so this one appends and keeps the existing header."""

    def _check_log_dir_exists(self) -> None:
        path = os.path.join(self.log_dir, self.NAME_METRICS_FILE)
        if os.path.isfile(path):
            with open(path, newline="") as f:
                header = f.readline().strip()
            self.metrics_keys = [k for k in header.split(",") if k]


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to ``metrics.csv`` when resuming into the same run folder."""

    @property
    @rank_zero_experiment  # as CSVLogger's: other ranks get a no-op, create no run folder
    def experiment(self) -> ExperimentWriter:  # type: ignore[override]
        """The CSV writer of this run (created on first use; appends to an existing file)."""
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def format_metrics(metrics: dict[str, Any], primary: str | None = None,
                   keys: tuple[str, ...] = ()) -> str:
    """One line ``dice=0.712  pr_auc=0.803 …`` with the primary metric first."""
    order = [k for k in ((primary,) if primary else ()) + keys if k in metrics]
    order += [k for k in metrics if k not in order and "/" not in k]
    parts = []
    for k in order:
        v = metrics[k]
        if isinstance(v, float):
            parts.append(f"{k}=n/a" if v != v else f"{k}={v:.4g}")  # NaN: undefined metric
        elif isinstance(v, int):
            parts.append(f"{k}={v}")
    return "  ".join(parts)


class MetricsPrinter(Callback):
    """Prints the evaluator's metrics after each validation epoch (rank 0 only), and the
    evaluator's own text report (e.g. the probability histogram) when it has one.

    Runs in ``on_validation_end``: Lightning calls callbacks' ``on_validation_epoch_end``
    before the module's, which is where the task computes ``last_metrics``, so printing there
    would show the previous epoch's numbers."""

    def __init__(self, run_dir: str | Path | None = None) -> None:
        self.run_dir = Path(run_dir) if run_dir else None

    # on_validation_end runs after the LightningModule's on_validation_epoch_end, where the
    # metrics of *this* epoch are computed (callback epoch-end hooks run before the module's).
    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Print ``pl_module.last_metrics`` (primary first) and the evaluator's report."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        evaluator = getattr(pl_module, "evaluator", None)
        metrics = getattr(pl_module, "last_metrics", {})
        if evaluator is None or not metrics:
            return
        line = format_metrics(metrics, evaluator.primary)
        rank_zero_info(f"\n[epoch {trainer.current_epoch}] val: {line}")
        report = getattr(evaluator, "format_histogram", None)
        if callable(report):
            rank_zero_info(report())


class DatasetEpochSetter(Callback):
    """Calls ``set_epoch(current_epoch)`` on the training dataset at every epoch start.

    Lightning does this for samplers only; datasets whose samples depend on the epoch
    (``MosaicDataset``: new mosaics each epoch, mosaic off for the last ``close_mosaic_epochs``)
    need it too. From the second epoch on the hook runs before the epoch's loader is iterated,
    so workers (persistent or not) see the new epoch from the first batch. Lightning iterates
    the first epoch's loader before any epoch hook (and, with a step-based scheduler, before a
    resumed run restores its epoch), so after a resume the batches prefetched by then (at most
    ``num_workers x prefetch_factor``) still use the epoch the loader was built with.
    Wrapped datasets (``.dataset`` chains, e.g. ``Subset``) are searched for the first one that
    has ``set_epoch`` (:func:`~detlab.data.datamodule.set_dataset_epoch`).
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Set the training dataset's epoch to ``trainer.current_epoch``."""
        from ..data.datamodule import set_dataset_epoch

        loaders = trainer.train_dataloader
        if loaders is None:
            return
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            set_dataset_epoch(getattr(loader, "dataset", None), trainer.current_epoch)


class StepSeeder(Callback):
    """Seeds Python's, NumPy's and torch's (all devices) global generators before every
    training batch from ``(seed, epoch, batch index)``.

    Random ops of a training step (dropout, drop-path, random sampling in a loss) then do not
    depend on how the run got there: an epoch replayed after ``--resume`` (Lightning does not
    store generator states) draws what the uninterrupted run drew. Data loading has its own
    per-sample seeds (:mod:`detlab.data.seeding`).
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any,
                             batch_idx: int) -> None:
        """Seed the global generators for this batch."""
        import random

        import numpy as np
        import torch

        from ..data.seeding import derive_seed

        # the rank too: under DDP each process draws its own dropout masks
        seed = derive_seed(self.seed, trainer.current_epoch, batch_idx, 3, trainer.global_rank)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also every CUDA device
