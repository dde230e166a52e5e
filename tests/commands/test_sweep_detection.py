"""``detlab sweep`` on a detection checkpoint: every row's metrics (COCO, per-class and
relative-area AP) equal ``detlab eval`` with the same override, and the table shows them all."""

from __future__ import annotations

import json

import pytest

from detlab.cli import main
from detlab.commands.sweep import format_table, run_sweep
from detlab.engine.checkpoint import load_task

KEY = "model.head.postprocessor.iou_threshold"


def test_sweep_rows_equal_eval_with_the_same_override(det_ckpt, tmp_path):
    result = run_sweep(load_task(det_ckpt), {KEY: [0.5, 0.8]})
    assert len(result) == 2 and result.primary == "AP"
    for row in result:
        value = row["settings"][KEY]
        out = tmp_path / f"{value}.json"
        assert main(["eval", det_ckpt, f"{KEY}={value}", "--json", str(out), "--quiet"]) == 0
        expected = json.loads(out.read_text())
        metrics = row["metrics"]
        assert any(k.startswith("AP_rel_") for k in metrics) and "AP/helmet_on" in metrics
        for key, got in metrics.items():
            want = expected[key]
            want = float("nan") if want is None else want
            assert got == pytest.approx(want, abs=1e-9, nan_ok=True), (value, key)


def test_sweep_table_shows_every_metric(det_ckpt):
    result = run_sweep(load_task(det_ckpt), {KEY: [0.6]})
    tables = format_table(result).split("\n\n")  # scalar metrics, then per-class AP
    header = [word for table in tables for word in table.splitlines()[0].split()]
    assert set(result[0]["metrics"]) - set(header) == set()
    assert {"AP_rel_tiny", "AP_rel_large", "AR_large", "AP/helmet_off"} <= set(header)


def test_sweep_decodes_each_batch_once(det_ckpt, monkeypatch):
    # YOLOHead splits post-processing: the DFL decoding is shared by all settings
    from detlab.models.heads.yolo import YOLOHead

    calls = []
    original = YOLOHead.decode_outputs
    monkeypatch.setattr(YOLOHead, "decode_outputs",
                        lambda self, outputs: calls.append(1) or original(self, outputs))
    result = run_sweep(load_task(det_ckpt), {KEY: [0.5, 0.6, 0.8]})
    assert len(result) == 3 and len(calls) == 1  # 4 val images, batch 4: one batch
    assert 0 < result.decode_s <= result.postprocess_s


def test_sweep_in_worker_processes_equals_one_process(det_ckpt):
    from detlab.commands.sweep_workers import can_fork

    if not can_fork():
        pytest.skip("no fork start method here: the settings run in one process")
    # 6 settings, 3 heads: the two evaluator settings of a head share its predictions
    grid = {KEY: [0.5, 0.65, 0.8], "evaluator.max_dets": [100, 10]}
    task = load_task(det_ckpt)
    one = run_sweep(task, grid, workers=1)
    two = run_sweep(task, grid, workers=2)
    assert (one.workers, two.workers) == (1, 2) and len(two) == 6
    assert [r["settings"] for r in two] == [r["settings"] for r in one]
    for a, b in zip(one, two):
        assert a["metrics"].keys() == b["metrics"].keys()
        for key, value in a["metrics"].items():
            assert b["metrics"][key] == pytest.approx(value, abs=0, nan_ok=True), key


def test_sweep_workers_option_is_checked(det_ckpt, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", det_ckpt, f"{KEY}=0.5", "--workers", "-1"])
    assert "expected an integer >= 0, got '-1'" in capsys.readouterr().err


def test_sweep_says_when_workers_are_not_used(det_ckpt, capsys):
    # two evaluator settings, one head: one job, nothing to spread over processes
    assert main(["sweep", det_ckpt, "evaluator.max_dets=100,10", "--workers", "2"]) == 0
    assert ("note: --workers 2 not used: the settings share one post-processing (one job)"
            in capsys.readouterr().out)


def test_sweep_post_processing_stops_at_what_the_evaluator_reads(det_ckpt, monkeypatch):
    # COCO reads max_dets (100) detections per image and class: the sweep's post-processors
    # get that cap; an evaluator that does not say what it reads leaves them uncapped
    import detlab.commands.sweep as sweep_mod
    from detlab.evaluation.coco import CocoEvaluator
    from detlab.postprocess.box_nms import BoxPostProcessor

    caps = []
    original = BoxPostProcessor.batched
    monkeypatch.setattr(BoxPostProcessor, "batched", lambda self, *a: caps.append(
        self.evaluated_per_class) or original(self, *a))
    task = load_task(det_ckpt)
    capped = run_sweep(task, {KEY: [0.5, 0.8], "evaluator.max_dets": [100, 20]})
    assert sorted(set(caps)) == [100]  # a head's settings share it: the largest max_dets
    caps.clear()
    monkeypatch.setattr(CocoEvaluator, "detections_read_per_class", lambda self: None)
    full = run_sweep(task, {KEY: [0.5, 0.8], "evaluator.max_dets": [100, 20]})
    assert set(caps) == {None}
    assert [r["metrics"] for r in capped] == [r["metrics"] for r in full]
    assert sweep_mod._test_postprocessor(task.model.head).evaluated_per_class is None
