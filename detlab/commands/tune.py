"""``detlab tune RECIPE --trials N [overrides…]``: hyper-parameter search over recipe keys.

The search space comes from the recipe's ``tune`` section and ``--param KEY=DIST`` flags
(:mod:`detlab.tune.space`); every trial is an ordinary training run
(``runs/<recipe>/tune/<study>/trial_<N>/``). At the end (also after ``--report-only``) the
trials table, the best overrides, a variant recipe and the plots are written next to the store.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .cli_args import allow_intermixed

__all__ = ["add_command", "options_from", "allow_intermixed"]


def options_from(section: dict[str, Any], args: argparse.Namespace) -> Any:
    """:class:`~detlab.tune.study.TuneOptions` from a recipe's ``tune`` section, then flags."""
    from ..tune.study import TuneOptions

    opts = TuneOptions(**{k: v for k, v in section.items() if k != "space"})
    for name in ("objective", "direction", "at", "sampler", "pruner", "trials", "epochs",
                 "fraction", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(opts, name, value)
    opts.check()
    return opts


def _cmd(args: argparse.Namespace) -> int:
    from ..recipe import load
    from ..tune import report
    from ..tune.space import space_from_recipe, tune_section
    from ..tune.study import (
        TrialSetup, import_optuna, make_pruner, make_sampler, make_storage, open_study,
        run_trials,
    )

    import_optuna()
    recipe_path = Path(args.recipe)
    recipe = load(recipe_path, args.overrides)
    section = tune_section(recipe)
    params = space_from_recipe(recipe, args.param)
    opts = options_from(section, args)
    evaluator = recipe.get("evaluator") or {}
    higher = True
    if evaluator:
        from ..registry import EVALUATORS

        higher = bool(getattr(EVALUATORS.get(evaluator["type"]), "higher_is_better", True))
    direction = opts.resolved_direction(higher)
    work_dir = Path(args.work_dir or (recipe.get("train") or {}).get("work_dir") or "runs")
    name = args.study_name or recipe.name
    tune_dir = work_dir / recipe.name / "tune"
    storage = make_storage(args.storage, tune_dir / f"{name}.journal")
    study = open_study(name, storage, direction, make_sampler(opts, params),
                       make_pruner(opts.pruner), resume=args.resume or args.report_only,
                       shared=args.storage is not None)
    setup = TrialSetup(recipe_path, list(args.overrides), params, opts, tune_dir / name,
                       direction)
    print(f"study {name!r}: {len(params)} parameter(s), objective {opts.objective} "
          f"({direction}, {opts.at} epoch), sampler {opts.sampler}, target {opts.trials} trials")
    if not args.report_only:
        run_trials(study, setup, work_dir=work_dir)
    rows = report.trial_rows(study, params)
    out = tune_dir / name
    csv_path = report.write_table(rows, out / "trials.csv")
    print(report.format_table(rows, opts.objective))
    print(f"\ntrials table: {csv_path}")
    states = import_optuna().trial.TrialState
    if any(t.state == states.COMPLETE for t in study.get_trials(deepcopy=False)):
        best = study.best_trial
        variant = report.write_variant(out / f"{recipe.name}_best.py", recipe_path,
                                       list(args.overrides), name, best, opts.objective)
        print(f"best trial {best.number}: {opts.objective}={best.value:.4g}")
        print("best overrides: " + " ".join(best.user_attrs.get("overrides", [])))
        print("train it: " + report.best_command(recipe_path, list(args.overrides),
                                                 list(best.user_attrs.get("overrides", []))))
        print(f"variant recipe: {variant}")
    else:
        print("no trial completed: no best overrides")
    plots = report.write_plots(study, params, out, opts.objective)
    print("plots: " + ", ".join(str(p) for p in plots))
    return 0


def add_command(subparsers: Any) -> None:
    """Register ``detlab tune``."""
    p = subparsers.add_parser(
        "tune", help="hyper-parameter search over recipe keys (Optuna)",
        description="Search recipe keys with Optuna: the space from the recipe's tune section "
                    "and --param flags; each trial is a normal run under "
                    "runs/<recipe>/tune/<study>/. Needs pip install 'detlab[tune]'.")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="applied to every trial, e.g. data.num_workers=0")
    p.add_argument("--trials", type=int, default=None,
                   help="finished trials the study should have (default: recipe tune.trials, 20)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=DIST",
                   help="a searched key, e.g. 'train.optimizer.lr=log_uniform(1e-5,5e-4)' "
                        "(repeatable; replaces the recipe's entry of that key)")
    p.add_argument("--objective", default=None,
                   help="logged metric to optimise (default val/primary; e.g. val/f1, train/loss)")
    p.add_argument("--direction", choices=("max", "min"), default=None,
                   help="default: the evaluator's for val/ metrics, min for losses")
    p.add_argument("--at", choices=("best", "last"), default=None,
                   help="objective at the best (default) or the last epoch of a trial")
    p.add_argument("--sampler", choices=("tpe", "random", "grid"), default=None)
    p.add_argument("--pruner", choices=("median", "hyperband", "none"), default=None)
    p.add_argument("--epochs", type=int, default=None, help="train.max_epochs of each trial")
    p.add_argument("--fraction", type=float, default=None,
                   help="share of the train set per trial (a subset drawn from train.seed)")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (default 0)")
    p.add_argument("--study-name", default=None, help="default: the recipe's name")
    p.add_argument("--storage", default=None,
                   help="journal:PATH, sqlite:///PATH or a database URL shared by workers "
                        "(default: runs/<recipe>/tune/<study>.journal)")
    p.add_argument("--resume", action="store_true", help="continue the study in its store")
    p.add_argument("--report-only", action="store_true",
                   help="run no trial: write the table, variant recipe and plots")
    p.add_argument("--work-dir", default=None, help="root of run directories (default: runs/)")
    p.set_defaults(func=_cmd)
    allow_intermixed(p)
