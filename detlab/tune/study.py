"""The Optuna study of ``detlab tune``: storage, sampler, pruner, and the objective (one trial =
one ordinary ``detlab train`` run in ``runs/<recipe>/tune/<study>/trial_<N>/``).

* storage: a journal file ``runs/<recipe>/tune/<study>.journal`` by default (safe for several
  processes on one machine); ``--storage journal:PATH``, ``sqlite:///PATH`` or any database URL
  Optuna takes (``postgresql://…``) lets workers on several machines share one study: each runs
  the same ``detlab tune`` command and Optuna hands out the trials.
* ``--trials N`` is the study's total: a worker stops once the study has N finished trials
  (complete, pruned or failed); a trial of a process that died is marked failed
  ("interrupted") by ``--resume`` and does not count.
* the objective is a logged metric (``val/primary`` by default, ``val/<any>``, ``train/loss``…)
  at its best or last epoch; :class:`PruningCallback` reports it to Optuna every epoch.
* a trial that raises (NaN loss, bad value, out of memory, a ``DetlabError``) is marked failed
  with its error in the user attribute ``error``, and the study goes on.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from ..checks import is_int
from ..errors import ConfigError
from ..registry import closest
from .space import Param, as_overrides
from .budget import budget_overrides, wrap_fraction

__all__ = ["TuneOptions", "PruningCallback", "ObjectiveMetricError", "import_optuna",
           "make_storage", "make_sampler", "make_pruner", "open_study", "run_trials",
           "finished_trials"]


def import_optuna() -> Any:
    """``optuna``, or a ``ConfigError`` telling how to install it."""
    try:
        import optuna
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("detlab tune needs Optuna: pip install 'detlab[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class ObjectiveMetricError(ConfigError):
    """The objective metric was never logged (a typo): stops the study, not just the trial."""


@dataclass
class TuneOptions:
    """Settings of one study (recipe ``tune`` section, then command-line flags)."""

    objective: str = "val/primary"
    direction: str | None = None  # "max"/"min"; None: from the evaluator / the metric's name
    at: str = "best"              # "best" or "last" epoch
    sampler: str = "tpe"          # "tpe", "random", "grid"
    pruner: Any = "median"        # "median", "hyperband", "none", or dict(type=..., **kwargs)
    trials: int = 20
    epochs: int | None = None
    fraction: float | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ``ConfigError`` for a bad value."""
        if self.at not in ("best", "last"):
            raise ConfigError(f"tune at={self.at!r}: expected 'best' or 'last'")
        if self.direction not in (None, "max", "min"):
            raise ConfigError(f"tune direction={self.direction!r}: expected 'max' or 'min'")
        if self.sampler not in ("tpe", "random", "grid"):
            raise ConfigError(f"tune sampler={self.sampler!r}: expected tpe, random or grid")
        if not is_int(self.trials) or self.trials < 1:
            raise ConfigError(f"--trials {self.trials!r}: expected an integer >= 1")
        if self.fraction is not None and not 0 < float(self.fraction) <= 1:
            raise ConfigError(f"--fraction {self.fraction!r}: expected a number in (0, 1]")
        budget_overrides(self.epochs)

    def resolved_direction(self, higher_is_better: bool) -> str:
        """``max``/``min``: the given direction, else the evaluator's for ``val/`` metrics
        other than losses, else ``min``."""
        if self.direction:
            return self.direction
        metric = self.objective
        if metric.startswith("val/") and "loss" not in metric:
            return "max" if higher_is_better else "min"
        return "min"


def make_storage(spec: str | None, default_path: Path) -> Any:
    """An Optuna storage: the journal file ``default_path`` (``spec`` None), ``journal:PATH``,
    or a database URL (``sqlite:///runs/x.db``, ``postgresql://user@host/db``)."""
    optuna = import_optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if spec is None or spec.startswith("journal:"):
        path = Path(default_path if spec is None else spec[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if spec.startswith("sqlite:///"):
        Path(spec[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(spec)
    except Exception as err:  # bad URL, missing driver: the user's to fix
        raise ConfigError(f"--storage {spec!r}: {type(err).__name__}: {err}") from None


def make_sampler(options: TuneOptions, params: list[Param]) -> Any:
    """TPE (default), random or grid sampler, seeded with ``options.seed``."""
    optuna = import_optuna()
    if options.sampler == "random":
        return optuna.samplers.RandomSampler(seed=options.seed)
    if options.sampler == "grid":
        return optuna.samplers.GridSampler({p.key: p.grid_values() for p in params},
                                           seed=options.seed)
    return optuna.samplers.TPESampler(seed=options.seed)


def make_pruner(spec: Any) -> Any:
    """``"median"`` (default: 2 trials first, no pruning in epoch 0), ``"hyperband"``,
    ``"none"``, or ``dict(type="median"|"hyperband", **kwargs)`` with Optuna's arguments."""
    optuna = import_optuna()
    kwargs: dict[str, Any] = {}
    if isinstance(spec, dict):
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        spec = spec.get("type")
    if spec in (None, "none"):
        return optuna.pruners.NopPruner()
    if spec == "median":
        kwargs = {"n_startup_trials": 2, "n_warmup_steps": 1, **kwargs}
        cls = optuna.pruners.MedianPruner
    elif spec == "hyperband":
        kwargs = {"min_resource": 1, **kwargs}
        cls = optuna.pruners.HyperbandPruner
    else:
        raise ConfigError(f"tune pruner={spec!r}: expected 'median', 'hyperband' or 'none'")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"tune pruner {spec!r}: {err}") from None


class PruningCallback(pl.Callback):
    """Reports the objective metric to the Optuna ``trial`` after every epoch (``val/…``
    metrics after validation, others at the end of the training epoch) and raises
    ``optuna.TrialPruned`` when the pruner says so. ``history`` holds ``(epoch, value)``."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.history: list[tuple[int, float]] = []

    def _record(self, trainer: pl.Trainer, after_validation: bool) -> None:
        if trainer.sanity_checking or self.metric.startswith("val/") != after_validation:
            return
        metrics = trainer.callback_metrics
        if self.metric not in metrics:
            names = sorted(str(k) for k in metrics)
            hint = closest(self.metric, names, 1)
            raise ObjectiveMetricError(
                f"objective {self.metric!r} was not logged"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; logged: {', '.join(names)}")
        value = float(metrics[self.metric])
        epoch = int(trainer.current_epoch)
        self.history.append((epoch, value))
        if not math.isfinite(value):
            raise FloatingPointError(f"objective {self.metric}={value} at epoch {epoch}")
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            optuna = import_optuna()
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: {self.metric}={value:.4g}")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record ``val/`` objectives."""
        self._record(trainer, True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record other objectives."""
        self._record(trainer, False)


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's trial: not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_study(name: str, storage: Any, direction: str, sampler: Any, pruner: Any,
               resume: bool, shared: bool) -> Any:
    """Create the study, or load it (``resume``; always for a ``shared`` ``--storage``).
    Loading marks the trials of dead local processes failed (``interrupted``)."""
    optuna = import_optuna()
    names = optuna.study.get_all_study_names(storage)
    if name in names and not (resume or shared):
        raise ConfigError(f"study {name!r} exists in its store: --resume continues it, "
                          "--study-name NAME starts another")
    if name not in names and resume and not shared:
        raise ConfigError(f"--resume: no study {name!r} in the store (start it without --resume)")
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                pruner=pruner, direction="maximize" if direction == "max"
                                else "minimize", load_if_exists=True)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        if worker and not _alive(worker):
            storage.set_trial_user_attr(trial._trial_id, "error", "interrupted")
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    return study


def finished_trials(study: Any) -> int:
    """Trials that count towards ``--trials``: complete, pruned, and failed but not
    interrupted."""
    optuna = import_optuna()
    states = optuna.trial.TrialState
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (states.COMPLETE, states.PRUNED)
               or (t.state == states.FAIL and t.user_attrs.get("error") != "interrupted"))


@dataclass
class TrialSetup:
    """What every trial shares: the recipe file, the user's overrides, the space, the options
    and the folder of the study's trial runs."""

    recipe_path: Path
    overrides: list[str]
    params: list[Param]
    options: TuneOptions
    trials_dir: Path
    direction: str = "max"


def trial_recipe(setup: TrialSetup, values: dict[str, Any]) -> Any:
    """The recipe of a trial: file + user overrides + budget + the trial's values."""
    from ..recipe import load

    overrides = setup.overrides + budget_overrides(setup.options.epochs) + as_overrides(values)
    recipe = load(setup.recipe_path, overrides)
    if setup.options.fraction is not None and float(setup.options.fraction) < 1:
        seed = int((recipe.get("train") or {}).get("seed", 0))
        recipe["data"]["train"] = wrap_fraction(recipe["data"]["train"],
                                                float(setup.options.fraction), seed)
    recipe.pop("tune", None)  # a trial is an ordinary run
    return recipe


def objective_value(history: list[tuple[int, float]], at: str, direction: str) -> float:
    """The objective from the per-epoch ``history``: its best (``max``/``min``) or last."""
    if not history:
        raise ConfigError("no epoch logged the objective (is validation running?)")
    values = [v for _, v in history]
    if at == "last":
        return values[-1]
    return max(values) if direction == "max" else min(values)


def run_trials(study: Any, setup: TrialSetup, work_dir: Path | None = None) -> None:
    """Run trials until the study has ``setup.options.trials`` finished ones."""
    optuna = import_optuna()
    from ..engine.trainer import fit

    def objective(trial: Any) -> float:
        values = {p.key: p.suggest(trial) for p in setup.params}
        run_dir = setup.trials_dir / f"trial_{trial.number:03d}"
        trial.set_user_attr("worker", _worker())
        trial.set_user_attr("overrides", as_overrides(values))
        trial.set_user_attr("run_dir", str(run_dir))
        pruning = PruningCallback(trial, setup.options.objective)
        try:
            recipe = trial_recipe(setup, values)
            fit(recipe, work_dir=work_dir, run_dir=run_dir, extra_callbacks=[pruning])
            return objective_value(pruning.history, setup.options.at, setup.direction)
        except optuna.TrialPruned:
            trial.set_user_attr("epochs", len(pruning.history))
            raise
        except ObjectiveMetricError:
            study.stop()
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:2000])
            raise
        finally:
            trial.set_user_attr("epochs", len(pruning.history))

    def enough(study: Any, _trial: Any) -> None:
        if finished_trials(study) >= setup.options.trials:
            study.stop()

    remaining = setup.options.trials - finished_trials(study)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, catch=(Exception,), callbacks=[enough],
                       gc_after_trial=True)
    failed = [t for t in study.get_trials(deepcopy=False)
              if str(t.user_attrs.get("error", "")).startswith("ObjectiveMetricError")]
    if failed:
        raise ConfigError(failed[-1].user_attrs["error"].split(": ", 1)[1])
