"""Training progress on the console: a tqdm bar in a terminal, plain lines anywhere else.

Lightning's tqdm bar redraws one line with carriage returns; written to a CI log or a file it
becomes one huge line, the run name is cut to its last four characters (``v_num=on_1``) and
Lightning's closing ``Trainer.fit stopped: ...`` message is glued to the end of the bar. Here:

* a terminal gets the tqdm bar with the run's full name in its description and one finished bar
  per epoch (so every later message starts on its own line);
* anything else gets one line every ``train.progress_every`` steps and at the end of each epoch::

      [helmet_yolo_p2/version_3] epoch 0  step 20/50  train/loss=1.234  6.51 it/s
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from ..checks import check_int

__all__ = ["LineProgressBar", "RunNameTQDMBar", "build_progress_bar", "run_name"]


def run_name(trainer: pl.Trainer) -> str:
    """``<recipe>/<version>`` of the run's first logger (``""`` without a logger)."""
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None:
        return ""
    version = logger.version
    version = version if isinstance(version, str) else f"version_{version}"
    return f"{logger.name}/{version}" if logger.name else version


def _metrics_without_version(bar: ProgressBar, trainer: pl.Trainer,
                             pl_module: pl.LightningModule) -> dict[str, Any]:
    items = ProgressBar.get_metrics(bar, trainer, pl_module)
    items.pop("v_num", None)  # the run's name is shown whole, elsewhere
    return items


class RunNameTQDMBar(TQDMProgressBar):
    """Lightning's tqdm bar with the full run name in the description instead of ``v_num``,
    and one bar per epoch, closed with its newline at the epoch's end."""

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=True)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Logged progress-bar metrics, without the cut version number."""
        return _metrics_without_version(self, trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        """A new bar described ``<run> epoch N``."""
        super().on_train_epoch_start(trainer, *args)
        name = run_name(trainer)
        self.train_progress_bar.set_description(
            f"{name} epoch {trainer.current_epoch}" if name else f"Epoch {trainer.current_epoch}"
        )


class LineProgressBar(ProgressBar):
    """One plain line every ``every`` training steps and after the last step of each epoch:
    run name, epoch, step (of the epoch's total when known), the logged progress-bar metrics
    (``train/loss``) and the steps per second since the previous line.

    Args:
        every: steps between lines (``train.progress_every``), an int >= 1.
        stream: where lines go (default: ``sys.stdout`` at the time of writing).
    """

    def __init__(self, every: int = 20, stream: TextIO | None = None) -> None:
        super().__init__()
        self.every = check_int("train", "progress_every", every, low=1)
        self.stream = stream
        self._enabled = True
        self._last_step = 0
        self._last_time = 0.0

    def disable(self) -> None:
        """Stop writing (Lightning calls it on ranks other than 0)."""
        self._enabled = False

    def enable(self) -> None:
        """Write again."""
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        """Whether lines are written."""
        return self._enabled

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Logged progress-bar metrics, without the cut version number."""
        return _metrics_without_version(self, trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start this epoch's step and time counters."""
        self._last_step, self._last_time = 0, time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        """Write a line at every ``every``-th step and at the epoch's last step."""
        step = batch_idx + 1
        total = self.total_train_batches
        last = isinstance(total, int) and step == total
        if not self._enabled or not (step % self.every == 0 or last):
            return
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        of = f"/{total}" if isinstance(total, int) else ""
        metrics = "  ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in self.get_metrics(trainer, pl_module).items()
        )
        name = run_name(trainer)
        parts = [f"epoch {trainer.current_epoch}", f"step {step}{of}", metrics, f"{rate:.3g} it/s"]
        stream = self.stream or sys.stdout
        stream.write((f"[{name}] " if name else "") + "  ".join(p for p in parts if p) + "\n")
        stream.flush()


def build_progress_bar(every: int = 20, stream: TextIO | None = None) -> ProgressBar:
    """The tqdm bar when ``stream`` (default ``sys.stdout``) is a terminal, else a
    :class:`LineProgressBar` writing every ``every`` steps."""
    out = stream or sys.stdout
    isatty = getattr(out, "isatty", None)
    if callable(isatty) and isatty():
        return RunNameTQDMBar(refresh_rate=1)
    return LineProgressBar(every, stream)
