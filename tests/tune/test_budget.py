"""--fraction's seeded train subset, and the database store (SQLite) of a study."""

import numpy as np
import pytest

from detlab.data.datamodule import DataModule
from detlab.errors import ConfigError
from detlab.recipe import load
from detlab.tune.budget import TrainFraction, wrap_fraction
from detlab.tune.study import make_storage

from tune_utils import RECIPE, TINY


def test_train_fraction_is_a_seeded_subset():
    recipe = load(RECIPE, [*TINY, "data.train.num_samples=20", "data.train.transforms=[]"])
    full = DataModule(recipe["data"]).dataset("train")
    recipe["data"]["train"] = wrap_fraction(recipe["data"]["train"], 0.25, seed=3)
    part = DataModule(recipe["data"]).dataset("train")  # built from its dotted type
    assert isinstance(part, TrainFraction) and len(part) == 5
    again = TrainFraction(recipe["data"]["train"]["dataset"], 0.25, seed=3)
    other = TrainFraction(recipe["data"]["train"]["dataset"], 0.25, seed=4)
    assert part.indices == again.indices != other.indices
    i = part.indices[2]
    assert np.array_equal(part[2]["image"], full[i]["image"])  # no transforms: same sample
    assert list(part.positive_flags()) == list(np.asarray(full.positive_flags())[part.indices])
    with pytest.raises(ConfigError, match="fraction must be in \\(0, 1\\]"):
        TrainFraction(full, 1.5)


def test_sqlite_store_keeps_the_study(tmp_path):
    optuna = pytest.importorskip("optuna")
    url = f"sqlite:///{tmp_path / 'sub' / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=make_storage(url, tmp_path / "x"))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = optuna.load_study(study_name="s", storage=make_storage(url, tmp_path / "x"))
    assert [t.params for t in again.trials] == [t.params for t in study.trials]
    with pytest.raises(ConfigError, match="--storage 'nosuchdb://x'"):
        make_storage("nosuchdb://x", tmp_path / "x")


def test_pruners_and_options():
    optuna = pytest.importorskip("optuna")
    from detlab.tune.study import TuneOptions, make_pruner

    assert isinstance(make_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    median = make_pruner(dict(type="median", n_startup_trials=4))
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert median._n_startup_trials == 4 and median._n_warmup_steps == 1  # detlab's default
    with pytest.raises(ConfigError, match="expected 'median', 'hyperband' or 'none'"):
        make_pruner("mean")
    with pytest.raises(ConfigError, match="tune at='first'"):
        TuneOptions(at="first").check()
    assert TuneOptions(objective="val/loss").resolved_direction(True) == "min"
    assert TuneOptions().resolved_direction(False) == "min"
    assert TuneOptions(objective="val/hmean").resolved_direction(True) == "max"
