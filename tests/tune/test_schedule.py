"""Per-epoch schedules: values by hand, errors, and a run that logs them and resumes."""

import csv

import pytest

from detlab.cli import main
from detlab.errors import ConfigError
from detlab.engine.trainer import fit
from detlab.recipe import load
from detlab.tune.schedule import check_schedule, resolve_schedules, schedule_value

from tune_utils import TINY, write_recipe


def test_digits_lambda_ramp():
    # the digits team's lambda = min(0.1 + 0.05 * (epoch - 6), 0.5) from epoch 6, 0 before
    spec = dict(schedule="linear_ramp", start_epoch=6, start=0.1, step=0.05, max=0.5)
    got = [schedule_value(spec, e) for e in range(20)]
    want = [0.0] * 6 + [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45] + [0.5] * 6
    assert got == pytest.approx(want)
    steps = dict(schedule="steps", values={0: 1.0, 3: 0.5, "5": 0.1})  # JSON keys are strings
    assert [schedule_value(steps, e) for e in range(7)] == [1, 1, 1, 0.5, 0.5, 0.1, 0.1]


@pytest.mark.parametrize("spec, message", [
    (dict(schedule="ramp", start=0.1, step=0.1), "unknown kind 'ramp'"),
    (dict(schedule="linear_ramp", start=0.1), "missing \\['step'\\]"),
    (dict(schedule="linear_ramp", start=0.1, step=0.1, stop=3), "unknown \\['stop'\\]"),
    (dict(schedule="linear_ramp", start=0.1, step=0.1, min=1, max=0.5), "min=1 > max=0.5"),
    (dict(schedule="steps", values={2: 1.0}), "with a key 0"),
    (dict(schedule="linear_ramp", start="a", step=0.1), "start='a' is not a finite number"),
])
def test_bad_schedule(spec, message):
    with pytest.raises(ConfigError, match=message):
        check_schedule("model.head.loss.terms.1.weight", spec)


def _epoch_values(run_dir, key):
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get(key)]
    return {int(r["epoch"]): float(r[key]) for r in rows}


def test_schedule_logged_per_epoch_and_resumed(tmp_path):
    path = write_recipe(tmp_path, (
        "model['head']['loss']['terms'][1]['weight'] = dict(\n"
        "    schedule='linear_ramp', start_epoch=1, start=2.0, step=3.0, max=6.0, before=0.5)\n"))
    key = "model.head.loss.terms.1.weight"
    resolved, callback = resolve_schedules(load(path, TINY))
    assert resolved["model"]["head"]["loss"]["terms"][1]["weight"] == 0.5  # epoch 0 value
    assert resolved["schedules"][key]["start"] == 2.0 and callback is not None
    work = tmp_path / "runs"
    assert main(["train", str(path), *TINY, "train.max_epochs=2", "--work-dir", str(work)]) == 0
    run_dir = work / "tiny_tune" / "version_0"
    assert _epoch_values(run_dir, f"schedule/{key}") == {0: 0.5, 1: 2.0}
    # resume continues the epochs: the values depend on the epoch number alone
    _, task, _ = fit(load(path, [*TINY, "train.max_epochs=4"]), resume="latest", work_dir=work)
    assert _epoch_values(run_dir, f"schedule/{key}") == {0: 0.5, 1: 2.0, 2: 5.0, 3: 6.0}
    assert task.model.head.loss_fn.terms[1].weight == 6.0  # the built term's weight moved


def test_schedule_key_must_exist_on_the_model(tmp_path, capsys):
    path = write_recipe(tmp_path, (
        "model['head']['prior_prob'] = dict(schedule='constant', value=0.01)\n"))
    assert main(["train", str(path), *TINY, "--work-dir", str(tmp_path / "runs")]) == 2
    assert "schedule model.head.prior_prob: AttentionUNetHead has no numeric attribute " \
           "'prior_prob'" in capsys.readouterr().err
