"""``ModelEMA``: an exponential moving average of the weights with the YOLOv5/v8 warm-up ramp.

After ``n`` optimizer steps the average is updated with the effective decay

    ``d(n) = decay * (1 - exp(-n / tau))``

so it follows the live weights closely at the start (``d(1)`` ≈ 0.0005 for ``tau=2000``) and
averages over ~``1 / (1 - decay)`` steps once ``n >> tau``. Without the ramp a decay of 0.9999
keeps 99.4 % of the random initial weights after 60 steps (``0.9999 ** 60``) and 29 % after
12,500, so the evaluated model predicts nothing for most of a short run.

Recipe: ``train.ema = dict(decay=0.9999, tau=2000, validate="ema", buffers="ema")``
(``train.ema=True`` takes these defaults; ``None``/``False``: no EMA).

* ``validate="ema"``: validation, ``best.ckpt``/``last.ckpt`` model weights and therefore
  ``detlab eval``/``predict``/``sweep`` use the EMA weights; ``"live"``: the trained weights.
* ``buffers="ema"``: floating-point buffers (BatchNorm running mean/var) are averaged like the
  weights (YOLOv5/v8, timm, ``torch.optim.swa_utils.AveragedModel(use_buffers=True)``) so the
  statistics match the averaged weights; ``"copy"`` takes the live ones. Integer buffers
  (``num_batches_tracked``) are always copied.

Checkpoint format (every tensor plain, so ``torch.load(weights_only=True)`` reads it)::

    state_dict    the weights validation used: EMA for validate="ema", live for "live"
    detlab_ema    {"updates": int, "decay": float, "tau": float, "validate": str,
                   "buffers": str,
                   "live_state": {...}   (validate="ema": the live weights, for resume)
                   "ema_state": {...}}   (validate="live": the EMA weights, for resume)

On resume :func:`to_resume_layout` (called from ``DetlabTask.on_load_checkpoint``, before
Lightning loads ``state_dict`` into the model) puts the live weights into ``state_dict`` and the
EMA weights into ``detlab_ema["ema_state"]``, so training always continues from the live weights
(even when the resumed recipe turns EMA off), and :class:`ModelEMA` continues the average and
its update count. Checkpoints of Lightning's ``EMAWeightAveraging`` (``current_model_state``)
are read the same way, with the update count taken from ``global_step``.

After ``fit`` the LightningModule holds the live weights (the EMA ones are in the callback's
:attr:`ModelEMA.ema` and in every checkpoint's ``state_dict``).
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from ..checks import is_number
from ..errors import ConfigError
from ..registry import closest

__all__ = ["ModelEMA", "EMA_KEY", "ema_decay", "build_ema", "to_resume_layout"]

EMA_KEY = "detlab_ema"
_DEFAULTS: dict[str, Any] = {"decay": 0.9999, "tau": 2000.0, "validate": "ema", "buffers": "ema"}


def ema_decay(updates: int, decay: float = 0.9999, tau: float = 2000.0) -> float:
    """Effective decay after ``updates`` optimizer steps: ``decay * (1 - exp(-updates / tau))``
    (``tau <= 0``: no ramp, ``decay`` itself)."""
    if tau <= 0:
        return float(decay)
    return float(decay) * (1.0 - math.exp(-float(updates) / float(tau)))


def build_ema(cfg: Any) -> ModelEMA | None:
    """``ModelEMA`` from the recipe's ``train.ema`` (``None``/``False``: none; ``True``: the
    defaults; a dict: its keys over the defaults). Raises ``ConfigError`` on unknown keys."""
    if cfg is None or cfg is False:
        return None
    if cfg is True:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"train.ema={cfg!r}: expected None, True or a dict like "
                          "dict(decay=0.9999, tau=2000, validate='ema')")
    unknown = sorted(set(cfg) - set(_DEFAULTS))
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {h[0]!r}?)" if (h := closest(k, list(_DEFAULTS), 1))
                             else "") for k in unknown]
        raise ConfigError(f"unknown key(s) in train.ema: {', '.join(hints)}; "
                          f"known keys: {', '.join(_DEFAULTS)}")
    return ModelEMA(**{**_DEFAULTS, **cfg})


def to_resume_layout(checkpoint: dict[str, Any]) -> None:
    """Rewrite a loaded checkpoint in place so ``state_dict`` holds the live (trained) weights
    and ``checkpoint["detlab_ema"]["ema_state"]`` the EMA weights (see the module docstring).
    Checkpoints without EMA are left alone."""
    info = checkpoint.get(EMA_KEY)
    if isinstance(info, dict) and "live_state" in info:
        info["ema_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = info.pop("live_state")
    elif "current_model_state" in checkpoint:  # Lightning's EMAWeightAveraging
        checkpoint[EMA_KEY] = {"updates": int(checkpoint.get("global_step", 0)),
                               "ema_state": checkpoint["state_dict"]}
        checkpoint["state_dict"] = checkpoint.pop("current_model_state")
        checkpoint.pop("averaging_state", None)


class ModelEMA(Callback):
    """EMA of the LightningModule's ``state_dict`` with the YOLOv5/v8 ramp (module docstring).

    Args:
        decay: final decay (per optimizer step), in ``[0, 1)``.
        tau: ramp time constant in optimizer steps (``0``: no ramp).
        validate: ``"ema"`` or ``"live"``: weights used by validation and stored as the
            checkpoint's ``state_dict``.
        buffers: ``"ema"`` (average floating buffers too) or ``"copy"`` (live buffers).
    """

    def __init__(self, decay: float = 0.9999, tau: float = 2000.0, validate: str = "ema",
                 buffers: str = "ema") -> None:
        if not is_number(decay) or not 0 <= decay < 1:
            raise ConfigError(f"train.ema.decay={decay!r}: expected a number in [0, 1)")
        if not is_number(tau) or tau < 0:
            raise ConfigError(f"train.ema.tau={tau!r}: expected a number of steps >= 0")
        if validate not in ("ema", "live"):
            raise ConfigError(f"train.ema.validate={validate!r}: expected 'ema' or 'live'")
        if buffers not in ("ema", "copy"):
            raise ConfigError(f"train.ema.buffers={buffers!r}: expected 'ema' or 'copy'")
        self.decay, self.tau = float(decay), float(tau)
        self.validate, self.buffers = validate, buffers
        self.updates = 0
        self.ema: dict[str, torch.Tensor] | None = None
        self._loaded: dict[str, torch.Tensor] | None = None
        self._buffer_names: set[str] = set()
        self._seen_step = -1
        self._swapped = False

    # -- the average --------------------------------------------------------------------------
    def current_decay(self) -> float:
        """Decay the next update uses (``updates`` counts it already)."""
        return ema_decay(self.updates, self.decay, self.tau)

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """One EMA step towards ``module``'s current ``state_dict``."""
        assert self.ema is not None
        self.updates += 1
        d = self.current_decay()
        for name, live in module.state_dict().items():
            avg = self.ema[name]
            if avg.dtype.is_floating_point and not (
                    self.buffers == "copy" and name in self._buffer_names):
                avg.lerp_(live.detach().to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(live)

    @torch.no_grad()
    def _swap(self, module: torch.nn.Module) -> None:
        """Exchange the module's weights and the EMA weights in place (no new memory kept)."""
        assert self.ema is not None
        for name, live in module.state_dict().items():
            tmp = live.detach().clone()
            live.copy_(self.ema[name])
            self.ema[name].copy_(tmp)
        self._swapped = not self._swapped

    # -- Lightning hooks ----------------------------------------------------------------------
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Keep the stored EMA weights and update count (the task has already moved the live
        weights into ``state_dict``: :func:`to_resume_layout`)."""
        info = checkpoint.get(EMA_KEY)
        if isinstance(info, dict) and "ema_state" in info:
            self._loaded = info["ema_state"]
            self.updates = int(info.get("updates", 0))
        else:
            rank_zero_info("EMA: the checkpoint has no EMA state; the average starts from its "
                           "weights with 0 updates")

    @torch.no_grad()
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Create the average on the module's device (from the loaded EMA state on resume)."""
        state = pl_module.state_dict()
        self._buffer_names = {n for n, _ in pl_module.named_buffers()}
        self.ema = {k: v.detach().clone() for k, v in state.items()}
        if self._loaded is not None:
            missing = sorted(set(state) - set(self._loaded))
            if missing:
                raise ConfigError(f"EMA state in the checkpoint lacks {missing[:5]}: it was "
                                  "written for another model")
            for k, v in self.ema.items():
                v.copy_(self._loaded[k])
            self._loaded = None
        self._seen_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        """Update once per optimizer step (``global_step`` moved; accumulation steps don't)."""
        if self.ema is not None and trainer.global_step != self._seen_step:
            self._seen_step = trainer.global_step
            self.update(pl_module)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                                  ) -> None:
        """Validate the EMA weights (``validate="ema"``)."""
        if self.validate == "ema" and self.ema is not None and not self._swapped:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                                ) -> None:
        """Put the live weights back for training."""
        if self._swapped:
            self._swap(pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Store the average, the update count and the live weights (module docstring)."""
        if self.ema is None:
            return
        info: dict[str, Any] = {"updates": self.updates, "decay": self.decay, "tau": self.tau,
                                "validate": self.validate, "buffers": self.buffers}
        if self.validate == "ema":
            info["live_state"] = checkpoint["state_dict"]
            checkpoint["state_dict"] = {k: v.detach().clone() for k, v in self.ema.items()}
        else:
            info["ema_state"] = {k: v.detach().clone() for k, v in self.ema.items()}
        checkpoint[EMA_KEY] = info
