"""``detlab lr-find RECIPE [overrides…]``: Lightning's learning-rate range test on a recipe.

Trains ``--steps`` steps with the learning rate growing exponentially from ``--min-lr`` to
``--max-lr`` (every parameter group gets the same rate; the recipe's scheduler is replaced for
the test, and the weights are restored afterwards by Lightning), plots the smoothed loss against
the rate (``runs/<recipe>/lr_find/lr_find.png``, drawn with PIL) and prints the suggestion
(the steepest descent of the loss) as a ``train.optimizer.lr=`` override.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

__all__ = ["add_command", "find_lr"]


def find_lr(recipe: Any, out_dir: Path, min_lr: float, max_lr: float,
            steps: int) -> tuple[float | None, list[float], list[float]]:
    """Run the range test; returns ``(suggested lr or None, lrs, losses)`` and writes
    ``lr_find.csv`` and ``lr_find.png`` in ``out_dir``."""
    from lightning.pytorch.tuner import Tuner

    from ..data.datamodule import DataModule
    from ..engine.task import DetlabTask
    from ..engine.trainer import build_trainer, train_settings
    from ..errors import ConfigError
    from ..tune.plots import Panel, Series, draw_panels
    from ..tune.schedule import resolve_schedules
    import lightning.pytorch as pl

    if not 0 < min_lr < max_lr:
        raise ConfigError(f"lr-find: need 0 < --min-lr < --max-lr, got {min_lr} and {max_lr}")
    if steps < 5:
        raise ConfigError(f"lr-find: --steps {steps}: need at least 5")
    recipe, schedules = resolve_schedules(recipe)
    cfg = train_settings(recipe)
    pl.seed_everything(int(cfg["seed"]), workers=True, verbose=False)
    data = DataModule(recipe.section("data"), seed=int(cfg["seed"]))
    data.check()
    task = DetlabTask(recipe)
    data.set_size_divisor(task.model.size_divisor)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(recipe, out_dir, monitor=False,
                            extra_callbacks=[schedules] if schedules else None,
                            num_sanity_val_steps=0, max_epochs=-1, max_steps=steps)
    finder = Tuner(trainer).lr_find(task, datamodule=data, min_lr=min_lr, max_lr=max_lr,
                                    num_training=steps, update_attr=False)
    if finder is None:
        raise ConfigError("lr-find: Lightning ran no range test (fast_dev_run?)")
    lrs = [float(v) for v in finder.results.get("lr", [])]
    losses = [float(v) for v in finder.results.get("loss", [])]
    try:
        # Lightning skips the first 10 points by default: fewer for a short test
        suggestion = finder.suggestion(skip_begin=max(1, min(10, len(losses) // 10)),
                                       skip_end=1)
    except Exception:  # too few finite points for a gradient
        suggestion = None
    with open(out_dir / "lr_find.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lr", "loss"])
        writer.writerows(zip(lrs, losses))
    finite = [(a, b) for a, b in zip(lrs, losses) if math.isfinite(b)]
    panel = Panel("learning-rate range test", "learning rate (log)", "smoothed loss", log_x=True,
                  series=[Series([a for a, _ in finite], [b for _, b in finite], "line", "blue",
                                 "loss")],
                  vlines=[suggestion] if suggestion else [])
    draw_panels([panel], out_dir / "lr_find.png", columns=1)
    return (float(suggestion) if suggestion else None), lrs, losses


def _cmd(args: argparse.Namespace) -> int:
    from ..recipe import load

    recipe = load(args.recipe, args.overrides)
    work_dir = Path(args.work_dir or (recipe.get("train") or {}).get("work_dir") or "runs")
    out_dir = Path(args.out) if args.out else work_dir / recipe.name / "lr_find"
    suggestion, lrs, _ = find_lr(recipe, out_dir, args.min_lr, args.max_lr, args.steps)
    print(f"range test: {len(lrs)} steps from {args.min_lr:g} to {args.max_lr:g}")
    print(f"plot: {out_dir / 'lr_find.png'}  values: {out_dir / 'lr_find.csv'}")
    if suggestion is None:
        print("no suggestion: the loss curve has too few finite points (more --steps?)")
        return 0
    print(f"suggested: train.optimizer.lr={suggestion:.3g}")
    return 0


def add_command(subparsers: Any) -> None:
    """Register ``detlab lr-find``."""
    p = subparsers.add_parser(
        "lr-find", help="learning-rate range test (Lightning's LR finder)",
        description="Train a few steps with an exponentially growing learning rate; plot the "
                    "loss and print the suggested train.optimizer.lr override.")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="e.g. data.num_workers=0")
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--max-lr", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=100, help="training steps of the test")
    p.add_argument("--out", default=None, help="default: runs/<recipe>/lr_find/")
    p.add_argument("--work-dir", default=None, help="root of run directories (default: runs/)")
    p.set_defaults(func=_cmd)
    from .cli_args import allow_intermixed

    allow_intermixed(p)
