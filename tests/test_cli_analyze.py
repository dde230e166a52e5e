"""`detlab analyze` round trip on a 1-epoch tiny YOLO run of recipes/helmet_yolo_p2.py: the
report files, its numbers agreeing with `detlab eval`, the ceiling's bounds and bad options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from detlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "helmet_yolo_p2.py"
TINY = [
    "data.train.num_samples=8", "data.val.num_samples=4", "data.train.image_size=64",
    "data.train.img_size=64", "data.val.image_size=64", "data.val.img_size=64",
    "data.batch_size=4", "data.num_workers=0", "train.max_epochs=1", "train.progress_bar=false",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    work = tmp_path_factory.mktemp("analyze_runs")
    assert main(["train", str(RECIPE), *TINY, "--work-dir", str(work)]) == 0
    return work / "helmet_yolo_p2" / "version_0" / "checkpoints" / "last.ckpt"


def test_analyze_writes_the_report_and_agrees_with_eval(ckpt, tmp_path, capsys):
    metrics_file = tmp_path / "eval.json"
    assert main(["eval", str(ckpt), "--json", str(metrics_file), "--quiet"]) == 0
    metrics = json.loads(metrics_file.read_text())
    capsys.readouterr()
    assert main(["analyze", str(ckpt), "--seeds", "2", "--gallery", "4",
                 "--noise-px", "1"]) == 0  # default folder: <run>/analysis
    out = ckpt.parent.parent / "analysis"
    printed = capsys.readouterr().out
    assert "against a" in printed and str(out) in printed
    for name in ("analysis.md", "analysis.json", "iou_hist.png", "ap_vs_ceiling.png",
                 "gallery.png", "object_sizes.png"):
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        with Image.open(png) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    numbers = json.loads((out / "analysis.json").read_text())
    # The same records and COCOeval as `detlab eval`: mAP and AP50/AP75 agree exactly.
    assert numbers["map"]["all"] == pytest.approx(metrics["AP"], abs=1e-9)
    assert numbers["ap_per_iou"]["all"][0] == pytest.approx(metrics["AP50"], abs=1e-9)
    assert numbers["ap_per_iou"]["all"][5] == pytest.approx(metrics["AP75"], abs=1e-9)
    for bucket in ("small", "rel_tiny", "rel_small", "rel_medium", "rel_large"):
        if numbers["objects"].get(bucket):
            key = f"AP_rel_{bucket[4:]}" if bucket.startswith("rel_") else f"AP_{bucket}"
            assert numbers["map"][bucket] == pytest.approx(metrics[key], abs=1e-9), bucket
    mean, std = numbers["ceiling_map"]["all"]
    assert 0.0 < mean <= numbers["oracle_map"]["all"] + 1e-9 <= 1.0 + 1e-9 and std >= 0
    report = (out / "analysis.md").read_text()
    assert "annotation-noise ceiling (±1 px per edge)" in report
    assert "| all |" in report and "![gallery](gallery.png)" in report
    assert "Train and val median object sizes" in report or "WARNING" in report


def test_analyze_without_noise_gives_a_ceiling_of_one(ckpt, tmp_path):
    out = tmp_path / "report"
    assert main(["analyze", str(ckpt), "--out", str(out), "--seeds", "1", "--gallery", "0",
                 "--noise-px", "0"]) == 0
    numbers = json.loads((out / "analysis.json").read_text())
    assert numbers["ceiling_map"]["all"] == [pytest.approx(1.0), 0.0]
    assert numbers["localisation"]["large"]["offset_median"] is None  # no match: null, not NaN
    assert not (out / "gallery.png").exists()


def test_bad_options_are_one_error_line(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing.ckpt"), "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: detlab analyze: --seeds must be >= 1, got 0")
