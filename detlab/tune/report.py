"""What ``detlab tune`` leaves behind: the trials table (CSV + printed), the best overrides as a
command line and as a variant recipe (``load_parent`` + edits), and PNG plots (optimisation
history, parameter importances, one slice plot per parameter)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from ..checks import is_number
from .plots import Panel, Series, draw_bars, draw_panels
from .space import Param
from .study import import_optuna

__all__ = ["trial_rows", "write_table", "format_table", "best_command", "write_variant",
           "write_plots"]


def _state(trial: Any) -> str:
    return trial.state.name.lower()


def trial_rows(study: Any, params: list[Param]) -> list[dict[str, Any]]:
    """One dict per trial: number, state, value (pruned: its last reported value), epochs,
    each parameter, run_dir, error; complete trials first, best first, then pruned, failed."""
    states = import_optuna().trial.TrialState
    maximize = study.direction.name == "MAXIMIZE"
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == states.COMPLETE:
            value = t.value
        elif t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        else:
            value = float("nan")
        row = {"trial": t.number, "state": _state(t), "value": value,
               "epochs": t.user_attrs.get("epochs", "")}
        for p in params:
            row[p.key] = t.params.get(p.key, "")
        row["run_dir"] = t.user_attrs.get("run_dir", "")
        row["error"] = t.user_attrs.get("error", "")
        rows.append(row)
    order = {"complete": 0, "pruned": 1, "running": 2, "fail": 3, "waiting": 4}

    def key(row: dict[str, Any]) -> tuple[int, float]:
        v = row["value"]
        v = v if isinstance(v, float) and math.isfinite(v) else math.inf * (-1 if maximize else 1)
        return order.get(row["state"], 5), -v if maximize else v

    return sorted(rows, key=key)


def write_table(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write ``rows`` as CSV at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def format_table(rows: list[dict[str, Any]], objective: str) -> str:
    """The table as aligned text (run folders left out, errors shortened)."""
    if not rows:
        return "(no trials)"
    cols = [c for c in rows[0] if c != "run_dir"]
    cells = [[(objective if c == "value" else c) for c in cols]]
    for row in rows:
        cells.append([_cell(row[c])[:60] for c in cols])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells)


def best_command(recipe_path: Path, overrides: list[str], best: list[str]) -> str:
    """``detlab train RECIPE <user overrides> <best trial's overrides>`` (quoted for a shell)."""
    import shlex

    return " ".join(["detlab", "train", shlex.quote(str(recipe_path)),
                     *(shlex.quote(o) for o in overrides + best)])


def write_variant(path: Path, recipe_path: Path, overrides: list[str], study_name: str,
                  trial: Any, objective: str) -> Path:
    """A recipe file that loads ``recipe_path`` (``load_parent``) and applies the user's and
    the best trial's overrides: ``detlab train PATH`` trains the winner on the full budget."""
    path.parent.mkdir(parents=True, exist_ok=True)
    source, here = Path(recipe_path).resolve(), path.parent.resolve()
    try:  # relative inside one project tree (the variant moves with it), else absolute
        shared = os.path.commonpath([source, here]) != source.anchor
        parent = os.path.relpath(source, here) if shared else str(source)
    except ValueError:  # another drive (Windows)
        parent = str(source)
    edits = overrides + list(trial.user_attrs.get("overrides", []))
    lines = [
        f'"""Best trial {trial.number} of study {study_name!r}: {objective}={trial.value:.6g}.',
        "",
        f"Written by detlab tune: {Path(recipe_path).name} with these overrides (the tune's",
        "epoch/fraction budget left out). Train it with: detlab train THIS_FILE",
        '"""',
        "",
        "from detlab.recipe import apply_overrides, load_parent, with_defaults",
        "",
        f"_recipe = with_defaults(load_parent({parent!r}))",
        "_recipe.pop('tune', None)",
        "apply_overrides(_recipe, [",
        *[f"    {e!r}," for e in edits],
        "])",
        "globals().update(_recipe)  # model, data, train, evaluator, … as top-level dicts",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def _x_of(param: Param, value: Any) -> float | None:
    """Where a trial's value of ``param`` goes on the x axis (a choice: its index)."""
    if param.kind in ("choice", "grid"):
        options = param.grid_values()
        return float(options.index(value)) if value in options else None
    return float(value) if is_number(value) else None


def write_plots(study: Any, params: list[Param], out_dir: Path, objective: str) -> list[Path]:
    """``history.png``, ``importance.png`` (when Optuna can compute importances: 2+ complete
    trials) and ``slice.png`` in ``out_dir``; returns the written paths."""
    optuna = import_optuna()
    states = optuna.trial.TrialState
    maximize = study.direction.name == "MAXIMIZE"
    done = [t for t in study.get_trials(deepcopy=False) if t.state == states.COMPLETE]
    pruned = [t for t in study.get_trials(deepcopy=False) if t.state == states.PRUNED
              and t.intermediate_values]
    best, best_x, best_y = None, [], []
    for t in sorted(done, key=lambda t: t.number):
        if best is None or (t.value > best if maximize else t.value < best):
            best = t.value
        best_x.append(t.number)
        best_y.append(best)
    history = Panel("optimisation history", "trial", objective, int_x=True, series=[
        Series([t.number for t in done], [t.value for t in done], "dots", "blue", "complete"),
        Series([t.number for t in pruned],
               [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
               "cross", "grey", "pruned (last)"),
        Series(best_x, best_y, "step", "red", "best so far"),
    ])
    written = [draw_panels([history], out_dir / "history.png", columns=1)]
    panels = []
    for p in params:
        series = []
        for trials, style, color, label in ((done, "dots", "blue", "complete"),
                                            (pruned, "cross", "grey", "pruned (last)")):
            xs, ys = [], []
            for t in trials:
                value = t.value if t.state == states.COMPLETE else \
                    t.intermediate_values[max(t.intermediate_values)]
                x = _x_of(p, t.params.get(p.key))
                if x is not None:
                    xs.append(x)
                    ys.append(value)
            series.append(Series(xs, ys, style, color, label))
        names = [str(v) for v in p.values] if p.kind in ("choice", "grid") else None
        panels.append(Panel(p.key, p.key.split(".")[-1], objective, log_x=p.kind == "log_uniform",
                            x_names=names, series=series))
    if panels:
        written.append(draw_panels(panels, out_dir / "slice.png", columns=2))
    if len(done) >= 2:
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):  # e.g. every complete trial has the same values
            importances = {}
        if importances:
            written.append(draw_bars(f"parameter importance ({objective})",
                                     list(importances), list(importances.values()),
                                     out_dir / "importance.png"))
    return written
