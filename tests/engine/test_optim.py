"""Optimizers and the warm-up + cosine schedule."""

import math

import pytest
import torch
from torch import nn

from detlab.engine.optim import WarmupCosine, build_optimizer, build_scheduler, warmup_cosine_factor
from detlab.errors import ConfigError


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.001),                      # warm-up starts at warmup_start_ratio
        (5, 0.001 + 0.999 * 0.5),        # half-way through a 10-step warm-up
        (10, 1.0),                       # warm-up done: cosine starts at 1
        (60, 0.1 + 0.9 * 0.5),           # half-way through the 100-step cosine: midpoint
        (110, 0.1),                      # end: min_lr_ratio
        (500, 0.1),                      # past the end: stays at the minimum
    ],
)
def test_warmup_cosine_factor(step, expected):
    assert warmup_cosine_factor(step, 10, 110, min_lr_ratio=0.1) == pytest.approx(expected)


def test_scheduler_steps_per_optimizer_step():
    model = nn.Linear(2, 2)
    opt = build_optimizer({"type": "SGD", "lr": 0.1}, model)
    sched = build_scheduler({"type": "WarmupCosine", "warmup_epochs": 1, "min_lr_ratio": 0.0},
                            opt, total_steps=20, steps_per_epoch=4)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1 * 0.001)
    assert lrs[4] == pytest.approx(0.1)  # warm-up of 1 epoch = 4 steps
    assert lrs[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 15 / 16)))


def test_no_weight_decay_on_norms_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer({"type": "AdamW", "lr": 1e-3, "weight_decay": 0.05}, model)
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3, 3, 3])]
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 3  # conv bias, bn weight, bn bias


def test_optimizer_errors_and_torch_names():
    model = nn.Linear(2, 2)
    assert isinstance(build_optimizer({"type": "RMSprop", "lr": 1e-3}, model), torch.optim.RMSprop)
    with pytest.raises(ConfigError, match="cannot build optimizer"):
        build_optimizer({"type": "AdamW", "lr": 1e-3, "momentum": 0.9}, model)
    with pytest.raises(ConfigError, match="Did you mean: AdamW"):
        build_optimizer({"type": "AdamWW"}, model)
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        WarmupCosine(min_lr_ratio=2.0)
