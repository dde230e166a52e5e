"""detlab tune on tiny fracture_unet settings: a 3-trial study (one bad value fails, the study
goes on), resume of an interrupted study, pruning of a diverging trial, two processes sharing
one store."""

import csv
import os
import socket
import subprocess
import sys

import pytest

from detlab.cli import main
from detlab.recipe import load
from detlab.tune.space import space_from_recipe
from detlab.tune.study import (
    TrialSetup, TuneOptions, make_pruner, make_sampler, make_storage, open_study, run_trials,
)

from tune_utils import ROOT, TINY, write_recipe

optuna = pytest.importorskip("optuna")  # the [tune] extra (CI installs .[all])

GRID = ("tune = dict(space={'model.head.loss.terms.0.gamma': grid(0.5, 0.75, -1.0)},\n"
        "            objective='train/loss', sampler='grid', trials=3)\n")


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_three_trial_study(tmp_path, capsys):
    recipe = write_recipe(tmp_path, GRID)
    work = tmp_path / "runs"
    assert main(["tune", str(recipe), *TINY, "--work-dir", str(work)]) == 0
    out = capsys.readouterr().out
    folder = work / "tiny_tune" / "tune" / "tiny_tune"
    rows = _rows(folder / "trials.csv")
    assert sorted(r["state"] for r in rows) == ["complete", "complete", "fail"]
    done = [r for r in rows if r["state"] == "complete"]
    assert float(done[0]["value"]) <= float(done[1]["value"])  # sorted, min first
    assert rows[-1]["model.head.loss.terms.0.gamma"] == "-1.0"
    assert "gamma" in rows[-1]["error"] and "ConfigError" in rows[-1]["error"]
    # every trial is a normal run folder with its values in its recipe
    best = done[0]
    run = json_load(folder / f"trial_{int(best['trial']):03d}" / "recipe.json")
    assert run["model"]["head"]["loss"]["terms"][0]["gamma"] == float(
        best["model.head.loss.terms.0.gamma"])
    assert "tune" not in run and run["train"]["max_epochs"] == 1
    assert f"model.head.loss.terms.0.gamma={best['model.head.loss.terms.0.gamma']}" in out
    variant = load(folder / "tiny_tune_best.py")
    assert variant["model"]["head"]["loss"]["terms"][0]["gamma"] == float(
        best["model.head.loss.terms.0.gamma"]) and "tune" not in variant
    for name in ("history.png", "slice.png", "importance.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    # a second start without --resume is refused: the store already holds the study
    assert main(["tune", str(recipe), *TINY, "--work-dir", str(work)]) == 2
    assert "--resume continues it" in capsys.readouterr().err


def json_load(path):
    import json

    return json.loads(path.read_text())


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_resume_interrupted_study(tmp_path):
    recipe = write_recipe(tmp_path, "")
    work = tmp_path / "runs"
    args = ["tune", str(recipe), *TINY, "--work-dir", str(work), "--objective", "train/loss",
            "--sampler", "random", "--param", "train.optimizer.lr=log_uniform(1e-4, 1e-2)"]
    assert main([*args, "--trials", "2"]) == 0
    # what a killed worker leaves: a RUNNING trial of a process that is gone
    store = work / "tiny_tune" / "tune" / "tiny_tune.journal"
    storage = make_storage(f"journal:{store}", store)
    study = optuna.load_study(study_name="tiny_tune", storage=storage)
    stale = study.ask()
    stale.set_user_attr("worker", f"{socket.gethostname()}:{_dead_pid()}")
    assert main([*args, "--trials", "3", "--resume"]) == 0
    study = optuna.load_study(study_name="tiny_tune", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3
    assert study.trials[stale.number].state == optuna.trial.TrialState.FAIL
    assert study.trials[stale.number].user_attrs["error"] == "interrupted"


def test_diverging_trial_is_pruned(tmp_path):
    # no warm-up: a too-large learning rate hits the first epoch (finite loss, ~100x)
    tiny = [*TINY, "train.scheduler=None"]
    recipe = load(write_recipe(tmp_path, ""), tiny)
    params = space_from_recipe(recipe, ["train.optimizer.lr=log_uniform(1e-5, 100.0)"])
    options = TuneOptions(objective="train/loss", epochs=3, trials=3,
                          pruner=dict(type="median", n_startup_trials=2, n_warmup_steps=0))
    storage = make_storage(None, tmp_path / "study.journal")
    study = open_study("div", storage, "min", make_sampler(options, params),
                       make_pruner(options.pruner), resume=False, shared=False)
    for lr in (1e-3, 2e-3, 3.0):  # two sane trials, then one whose loss explodes
        study.enqueue_trial({"train.optimizer.lr": lr})
    setup = TrialSetup(tmp_path / "tiny_tune.py", tiny, params, options, tmp_path / "trials",
                       "min")
    run_trials(study, setup, work_dir=tmp_path / "runs")
    first, second, bad = study.trials
    assert first.state == second.state == optuna.trial.TrialState.COMPLETE
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert list(bad.intermediate_values) == [0]  # stopped after its first epoch
    assert bad.intermediate_values[0] > 10 * max(first.intermediate_values[0],
                                                 second.intermediate_values[0])
    assert len(first.intermediate_values) == 3 and bad.user_attrs["epochs"] == 1


def test_two_processes_share_one_store(tmp_path):
    recipe = write_recipe(tmp_path, "")
    store = tmp_path / "shared.journal"
    cmd = [sys.executable, "-m", "detlab", "tune", str(recipe), *TINY, "--work-dir",
           str(tmp_path / "runs"), "--objective", "train/loss", "--sampler", "random",
           "--param", "train.optimizer.lr=log_uniform(1e-4, 1e-2)", "--trials", "4",
           "--storage", f"journal:{store}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    study = optuna.load_study(study_name="tiny_tune", storage=make_storage(f"journal:{store}",
                                                                           store))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 4 <= len(done) <= 5  # each worker stops once the study has 4 (one may be in flight)
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers ran trials
    assert len({t.user_attrs["run_dir"] for t in done}) == len(done)
