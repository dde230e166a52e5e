"""Optimizers and learning-rate schedules from the recipe's ``train`` section.

``train.optimizer = dict(type="AdamW", lr=1e-3, weight_decay=1e-4)`` — any ``torch.optim`` class
by name (AdamW and SGD are registered; other names resolve as ``torch.optim.<Name>``).
``train.scheduler = dict(type="WarmupCosine", warmup_epochs=1, min_lr_ratio=0.01)`` or ``None``.
Schedules step every optimizer step, so warm-up works in runs of a few epochs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import OPTIMIZERS, SCHEDULERS

__all__ = ["build_optimizer", "build_scheduler", "warmup_cosine_factor", "WarmupCosine"]

OPTIMIZERS.register(torch.optim.AdamW, name="AdamW")
OPTIMIZERS.register(torch.optim.SGD, name="SGD")
OPTIMIZERS.register(torch.optim.Adam, name="Adam")


def _param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """Split parameters so norms and biases get no weight decay (the usual detector recipe)."""
    if not no_decay_norm_bias or weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(cfg: dict[str, Any] | None, model: nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer named in ``cfg`` over ``model``'s trainable parameters.

    ``cfg`` keys: ``type`` (default ``"AdamW"``), ``no_decay_norm_bias`` (default True: no
    weight decay on 1-D parameters), then the optimizer's own arguments (``lr``, …).
    """
    cfg = dict(cfg or {"type": "AdamW", "lr": 1e-3})
    type_ = cfg.pop("type", "AdamW")
    no_decay_norm_bias = bool(cfg.pop("no_decay_norm_bias", True))
    if isinstance(type_, str) and type_ not in OPTIMIZERS and hasattr(torch.optim, type_):
        cls = getattr(torch.optim, type_)
    else:
        cls = OPTIMIZERS.get(type_)
    groups = _param_groups(model, float(cfg.get("weight_decay", 0.0)), no_decay_norm_bias)
    if not any(g["params"] for g in groups):
        raise ConfigError("train.optimizer: the model has no trainable parameters")
    try:
        return cls(groups, **cfg)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"cannot build optimizer {getattr(cls, '__name__', cls)}: {err}") from err


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int,
                         min_lr_ratio: float = 0.0, warmup_start_ratio: float = 0.001) -> float:
    """LR multiplier: linear warm-up from ``warmup_start_ratio`` to 1, then cosine to
    ``min_lr_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start_ratio + (1 - warmup_start_ratio) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULERS.register
class WarmupCosine:
    """Linear warm-up then cosine decay, stepped every optimizer step.

    Args:
        warmup_epochs: warm-up length in epochs (fractions allowed); or
        warmup_steps: warm-up length in optimizer steps (wins if given).
        min_lr_ratio: final LR as a fraction of the base LR.
        warmup_start_ratio: first LR as a fraction of the base LR.
    """

    def __init__(self, warmup_epochs: float = 1.0, warmup_steps: int | None = None,
                 min_lr_ratio: float = 0.01, warmup_start_ratio: float = 0.001) -> None:
        if warmup_epochs < 0 or (warmup_steps is not None and warmup_steps < 0):
            raise ConfigError("train.scheduler: warm-up length must be >= 0")
        if not 0 <= min_lr_ratio <= 1:
            raise ConfigError(f"train.scheduler.min_lr_ratio={min_lr_ratio}: expected in [0, 1]")
        self.warmup_epochs = warmup_epochs
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.warmup_start_ratio = warmup_start_ratio

    def __call__(self, optimizer: torch.optim.Optimizer, total_steps: int,
                 steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
        warmup = self.warmup_steps
        if warmup is None:
            warmup = int(round(self.warmup_epochs * steps_per_epoch))
        warmup = min(warmup, max(0, total_steps - 1))
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: warmup_cosine_factor(
                step, warmup, total_steps, self.min_lr_ratio, self.warmup_start_ratio
            ),
        )


def build_scheduler(cfg: dict[str, Any] | None, optimizer: torch.optim.Optimizer,
                    total_steps: int, steps_per_epoch: int) -> Any:
    """Build the per-step LR schedule from ``cfg`` (``None`` → constant LR)."""
    if cfg is None:
        return None
    factory = SCHEDULERS.build(cfg, key="train.scheduler")
    return factory(optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch)


def trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """Parameters that require gradients."""
    return [p for p in params if p.requires_grad]
