"""Runs: run directories, the Lightning ``Trainer`` from a recipe, checkpoints in and out.

Layout of one run::

    runs/<recipe name>/version_<N>/
        recipe.json          resolved recipe (what was trained)
        recipe_source.py     the recipe file's text (provenance.json has every file + sha256)
        provenance.json
        metrics.csv          Lightning CSV log (one row per logged step/epoch)
        events.out.tfevents… TensorBoard log
        checkpoints/best.ckpt  best monitored metric; checkpoints/last.ckpt  end of the latest
                               finished epoch (what --resume continues from)
        diagnostics/         probability histograms, collapse warnings, attention maps,
                             the first training batch (train.diagnostics=false turns it off)
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from ..checks import check_bool, is_int
from ..defaults import DETLAB_TRAIN_KEYS, TRAIN_DEFAULTS
from ..errors import CheckpointError, ConfigError, DetlabError
from ..recipe import Recipe
from ..registry import closest
from .checkpoint import load_checkpoint, load_task, read_checkpoint
from .callbacks import (
    AppendingCSVLogger,
    AtomicModelCheckpoint,
    DatasetEpochSetter,
    MetricsPrinter,
    StepSeeder,
)
from .diagnostics import DiagnosticsCallback
from .ema import build_ema
from .plot_callbacks import plot_callbacks
from .positives_check import PositivesCheck
from .progress import build_progress_bar
from .resume_check import check_resume
from .task import RECIPE_KEY, DetlabTask

__all__ = [
    "new_run_dir", "latest_checkpoint", "build_trainer", "fit", "trainer_arguments",
    "train_settings", "TRAINER_KEYS", "load_checkpoint", "load_task",
]

# The recipe's ``train`` keys that are ``pl.Trainer`` arguments of the same name, passed through
# as they are: all but the ones detlab reads itself (a new key that is neither fails loudly in
# ``pl.Trainer``, it is not dropped).
TRAINER_KEYS: tuple[str, ...] = tuple(k for k in TRAIN_DEFAULTS if k not in DETLAB_TRAIN_KEYS)


class _DropAdverts(logging.Filter):
    """Lightning prints a cloud-service advert at every fit; it is not information about the
    run, so detlab's console leaves it out."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdverts())
# Lightning 2.6 calls a torch pytree API deprecated in torch 2.14 on every fit.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def _train_cfg(recipe: Recipe) -> dict[str, Any]:
    cfg = dict(recipe.get("train") or {})
    unknown = set(cfg) - set(TRAIN_DEFAULTS)
    if unknown:
        parts = []
        for k in sorted(unknown):
            hint = closest(k, sorted(TRAIN_DEFAULTS), 1)
            parts.append(f"{k!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        raise ConfigError(
            f"unknown key(s) in recipe 'train': {', '.join(parts)}; "
            f"known keys: {', '.join(sorted(TRAIN_DEFAULTS))}"
        )
    cfg = {**TRAIN_DEFAULTS, **cfg}  # recipes from load() are complete; dicts built by hand may not be
    # Lightning takes any truthy value here; a recipe's "yes" is a typo, not a request.
    check_bool("recipe 'train'", "sync_batchnorm", cfg["sync_batchnorm"])
    return cfg


def train_settings(recipe: Recipe) -> dict[str, Any]:
    """The recipe's complete ``train`` section (unknown keys refused), after applying what
    belongs to the whole process: ``train.num_threads`` (torch's CPU threads). Every command
    that trains (``fit``, ``lr-find``) starts with it."""
    cfg = _train_cfg(recipe)
    _set_threads(cfg["num_threads"])
    return cfg


def trainer_arguments(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``pl.Trainer`` keyword arguments a complete ``train`` section sets: every key named
    like a Trainer argument (:data:`TRAINER_KEYS`), except those set to ``None`` (Lightning's
    default)."""
    return {k: cfg[k] for k in TRAINER_KEYS if cfg.get(k) is not None}


def new_run_dir(work_dir: str | Path, name: str) -> Path:
    """``<work_dir>/<name>/version_<N>`` with N one more than the highest existing."""
    root = Path(work_dir) / name
    versions = [
        int(m.group(1)) for p in root.glob("version_*")
        if (m := re.fullmatch(r"version_(\d+)", p.name))
    ] if root.is_dir() else []
    return root / f"version_{max(versions, default=-1) + 1}"


def latest_checkpoint(work_dir: str | Path, name: str) -> Path:
    """``last.ckpt`` of the newest run of recipe ``name`` that has one."""
    root = Path(work_dir) / name
    candidates = sorted(
        root.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime
    ) if root.is_dir() else []
    if not candidates:
        raise CheckpointError(
            f"--resume: no run of recipe {name!r} with a checkpoint under {root}/ "
            "(give the checkpoint path: --resume PATH)"
        )
    return candidates[-1]


def _write_run_files(run_dir: Path, recipe: Recipe) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.json").write_text(recipe.to_json())
    if recipe.path is not None and recipe.path.is_file():
        (run_dir / "recipe_source.py").write_text(recipe.path.read_text(encoding="utf-8"))
    prov = recipe.provenance()
    prov["files"] = {k: {"path": v["path"], "sha256": v["sha256"]} for k, v in prov["files"].items()}
    (run_dir / "provenance.json").write_text(json.dumps(prov, indent=2))


def build_trainer(recipe: Recipe, run_dir: Path, higher_is_better: bool = True,
                  monitor: bool = True, extra_callbacks: list[Any] | None = None,
                  **overrides: Any) -> pl.Trainer:
    """A Lightning ``Trainer`` configured from the recipe's ``train`` section (plus
    ``extra_callbacks``, e.g. a tuning trial's pruning callback)."""
    cfg = _train_cfg(recipe)
    callbacks: list[Any] = [
        AtomicModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor="val/primary" if monitor else None,
            mode="max" if higher_is_better else "min",
            save_top_k=1 if monitor else 0,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        MetricsPrinter(run_dir),
        DatasetEpochSetter(),
        StepSeeder(int(cfg["seed"])),
        PositivesCheck(cfg["positives"], run_dir),  # on even without diagnostics
        *plot_callbacks(run_dir),  # plots/*.png, TensorBoard images, lr, hparams
    ]
    if cfg["diagnostics"]:
        callbacks.append(DiagnosticsCallback(run_dir))
    ema = build_ema(cfg["ema"])
    if ema is not None:
        callbacks.append(ema)
    if cfg["progress_bar"]:
        callbacks.append(build_progress_bar(cfg["progress_every"]))
    callbacks += list(extra_callbacks or [])
    loggers = [
        AppendingCSVLogger(save_dir=run_dir.parent.parent, name=run_dir.parent.name, version=run_dir.name),
        TensorBoardLogger(save_dir=run_dir.parent.parent, name=run_dir.parent.name,
                          version=run_dir.name, default_hp_metric=False),
    ]
    kwargs = dict(
        trainer_arguments(cfg), callbacks=callbacks, logger=loggers,
        default_root_dir=str(run_dir), enable_progress_bar=bool(cfg["progress_bar"]),
        enable_model_summary=False,
    )
    kwargs.update(overrides)
    try:
        return pl.Trainer(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"recipe 'train' section: {err}") from err


def fit(recipe: Recipe, resume: str | Path | None = None,
        work_dir: str | Path | None = None, run_dir: str | Path | None = None,
        extra_callbacks: list[Any] | None = None) -> tuple[Path, DetlabTask, pl.Trainer]:
    """Train ``recipe``; returns the run directory, the task and the trainer.

    ``resume`` is a checkpoint path or ``"latest"`` (newest ``last.ckpt`` of this recipe). A
    resumed run continues in the run directory of its checkpoint, restoring weights, optimizer,
    scheduler, EMA and epoch counter, after :func:`~detlab.engine.resume_check.check_resume`
    compared the recipes. The data is checked before the model is built, and the run folder is
    written only once every check passed (a ``DetlabError`` during training removes a new folder
    that holds no checkpoint yet). ``run_dir`` replaces ``<work_dir>/<name>/version_<N>`` for
    a new run (``detlab tune`` trials); ``extra_callbacks`` go to the trainer. Per-epoch
    schedules in the recipe (:mod:`detlab.tune.schedule`) are resolved here.
    """
    from ..data.datamodule import DataModule
    from ..tune.schedule import resolve_schedules

    recipe, schedule_cb = resolve_schedules(recipe)
    extra_callbacks = list(extra_callbacks or []) + ([schedule_cb] if schedule_cb else [])

    cfg = train_settings(recipe)
    root = Path(work_dir or cfg["work_dir"])
    seed = int(cfg["seed"])
    ckpt_path, start_epoch = None, None
    if resume is not None:
        ckpt_path = latest_checkpoint(root, recipe.name) if resume == "latest" else Path(resume)
        # validates: exists, detlab checkpoint, weights_only-safe, and builds nothing from the
        # stored recipe (the user's own recipe file is what runs); then compare the recipes
        ckpt = read_checkpoint(ckpt_path)
        check_resume(json.loads(recipe.to_json()), ckpt, ckpt_path)
        start_epoch = int(ckpt.get("epoch", -1)) + 1  # checkpoints are end-of-epoch
        del ckpt
    # Data first: a wrong path or class name fails in seconds, not after building (and maybe
    # downloading) the backbone; nothing is written before every check has passed.
    pl.seed_everything(seed, workers=True, verbose=False)
    data = DataModule(recipe.section("data"), seed=seed)
    data.start_epoch = start_epoch
    data.check()
    pl.seed_everything(seed, workers=True, verbose=False)  # model init independent of data
    task = DetlabTask(recipe)
    task.check_optimization()
    data.set_size_divisor(task.model.size_divisor)
    evaluator = task.evaluator
    if ckpt_path is not None:
        run_dir, created = ckpt_path.parent.parent, False
    else:
        run_dir = Path(run_dir) if run_dir is not None else new_run_dir(root, recipe.name)
        created = not run_dir.exists()
    trainer = build_trainer(
        recipe, run_dir,
        higher_is_better=getattr(evaluator, "higher_is_better", True),
        monitor=evaluator is not None, extra_callbacks=extra_callbacks,
    )
    try:
        if trainer.is_global_zero:  # other ranks pick their own version_N before they know
            _write_run_files(run_dir, recipe)  # the rank; rank 0's folder is the run's
        trainer.fit(task, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except DetlabError:
        # A configuration or data error found once training started (first batch, a worker):
        # a new run folder without a checkpoint is not a run; give its version number back.
        if created and trainer.is_global_zero and not any(run_dir.glob("checkpoints/*.ckpt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir, task, trainer


def _set_threads(num_threads: Any) -> None:
    """Apply ``train.num_threads``: OpenMP threads that wait for each other at every op are
    slow when other processes hold the cores, so a busy small CPU trains faster with fewer."""
    if num_threads is None:
        return
    if not is_int(num_threads) or num_threads < 1:
        raise ConfigError(f"train.num_threads={num_threads!r}: expected an int >= 1 or None")
    torch.set_num_threads(num_threads)
