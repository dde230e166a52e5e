"""``detlab sweep``: value parsing, key checks, and agreement with ``detlab eval``."""

import json

import pytest

from detlab.cli import main
from detlab.commands.sweep import parse_sweep, run_sweep, sort_rows, split_values
from detlab.engine.trainer import load_task
from detlab.errors import ConfigError


@pytest.mark.parametrize(
    "raw, expected",
    [("1,2,3", ["1", "2", "3"]), ("[1, 2],[3]", ["[1, 2]", "[3]"]), ("(1,2), x", ["(1,2)", "x"]),
     ("0.5", ["0.5"])],
)
def test_split_values(raw, expected):
    assert split_values(raw) == expected


def test_parse_sweep_types_values():
    grid = parse_sweep(["evaluator.threshold=0.1,0.5", "model.head.threshold=None,0.3"])
    assert grid == {"evaluator.threshold": [0.1, 0.5], "model.head.threshold": [None, 0.3]}
    with pytest.raises(ConfigError, match="key=v1,v2"):
        parse_sweep(["evaluator.threshold"])


def test_sweep_refuses_keys_that_change_the_network(trained):
    _, run_dir = trained
    task = load_task(run_dir / "checkpoints/best.ckpt")
    with pytest.raises(ConfigError, match="cannot sweep 'model.backbone.name'"):
        run_sweep(task, {"model.backbone.name": ["resnet34"]})


def test_sweep_rows_equal_eval_with_the_same_override(trained, tmp_path, capsys):
    _, run_dir = trained
    ckpt = str(run_dir / "checkpoints/best.ckpt")
    result = run_sweep(load_task(ckpt), {"model.head.postprocessor.threshold": [0.001, 0.5]})
    assert len(result) == 2 and result.primary == "pr_auc"
    by_thr = {r["settings"]["model.head.postprocessor.threshold"]: r["metrics"] for r in result}
    for thr, metrics in by_thr.items():
        out = tmp_path / f"{thr}.json"
        assert main(["eval", ckpt, f"model.head.postprocessor.threshold={thr}", "--json", str(out),
                     "--quiet"]) == 0
        expected = json.loads(out.read_text())
        for key in ("dice", "pr_auc", "best_threshold"):
            assert metrics[key] == pytest.approx(expected[key], abs=1e-9), (thr, key)
    assert main(["sweep", ckpt, "model.head.postprocessor.threshold=0.001,0.5"]) == 0
    printed = capsys.readouterr().out
    assert "model.head.postprocessor.threshold" in printed and "best:" in printed


@pytest.mark.parametrize("higher, order", [(True, [0.7, 0.2, "nan", "missing"]),
                                           (False, [0.2, 0.7, "nan", "missing"])])
def test_undefined_primary_sorts_last(higher, order):
    rows = [{"metrics": {"AP": float("nan")}, "id": "nan"}, {"metrics": {"AP": 0.2}, "id": 0.2},
            {"metrics": {}, "id": "missing"}, {"metrics": {"AP": 0.7}, "id": 0.7}]
    sort_rows(rows, "AP", higher)
    assert [r["id"] for r in rows][:2] == order[:2]
    assert {r["id"] for r in rows[2:]} == {"nan", "missing"}
