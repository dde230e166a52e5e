"""Hyper-parameter search (``detlab tune``) and per-epoch schedules of recipe knobs.

* :mod:`.space`: distributions (``uniform``, ``log_uniform``, ``int_range``, ``choice``,
  ``grid``) over dotted recipe keys, from a recipe's ``tune`` section or ``--param``;
* :mod:`.study`: the Optuna study (storage, sampler, pruner) and the trial objective;
* :mod:`.report`: trials table, best overrides, variant recipe, plots;
* :mod:`.schedule`: per-epoch schedules (``dict(schedule="linear_ramp", …)``) of loss weights;
* :mod:`.budget`: ``--epochs`` / ``--fraction`` of a trial.

Optuna is an optional dependency (``pip install 'detlab[tune]'``), imported when a study runs;
the distributions and schedules work without it.
"""

from .space import choice, grid, int_range, log_uniform, uniform

__all__ = ["uniform", "log_uniform", "int_range", "choice", "grid"]
