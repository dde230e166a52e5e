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


def _coco_split(folder: Path, rng, truths, k: float) -> Path:
    """COCO JSON of the images in ``folder`` whose boxes are ``truths`` jittered by ±k px."""
    images, annotations = [], []
    for i, boxes in enumerate(truths):
        images.append({"id": i + 1, "file_name": f"img{i}.png", "width": 160, "height": 160})
        for j, b in enumerate(boxes):
            x1, y1, x2, y2 = (b + rng.uniform(-k, k, 4)).tolist()
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1]})
    path = folder / f"ann_{len(list(folder.glob('ann_*.json')))}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "helmet_on"},
                                               {"id": 2, "name": "helmet_off"}]}))
    return path


def test_noise_from_a_second_annotation_sets_the_ceiling(tmp_path, capsys):
    """Two annotators boxed the same 6 images with ±3 px uniform noise per edge: analyze
    estimates k from them (48 objects) and scores the ceiling at that k."""
    import numpy as np

    rng = np.random.default_rng(0)
    truths = []
    for i in range(6):
        Image.fromarray(np.full((160, 160, 3), 90, np.uint8)).save(tmp_path / f"img{i}.png")
        xy = np.stack([np.arange(4) * 38 + 6, np.full(4, 10)], 1).repeat(2, 0).astype(float)
        xy[1::2, 1] = 90
        truths.append(np.concatenate([xy, xy + 30], 1))
    first, second = (_coco_split(tmp_path, rng, truths, 3.0) for _ in range(2))
    paths = [f"data.{s}.{k}={v}" for s in ("train", "val")
             for k, v in (("ann_file", first), ("img_dir", tmp_path))]
    small = ["model.backbone.pretrained=false", "model.backbone.name=resnet10t",
             "data.train.img_size=64", "data.val.img_size=64", "data.num_workers=0",
             "data.batch_size=6", "train.max_epochs=1", "train.progress_bar=false"]
    work = tmp_path / "runs"
    assert main(["train", str(ROOT / "recipes" / "helmet_yolo_p2_coco.py"), *paths, *small,
                 "--work-dir", str(work)]) == 0
    ckpt = next(work.glob("*/version_0/checkpoints/last.ckpt"))
    out = tmp_path / "report"
    assert main(["analyze", str(ckpt), "--out", str(out), "--seeds", "1", "--gallery", "0",
                 "--noise-from", f"data.val.ann_file={second}"]) == 0
    numbers = json.loads((out / "analysis.json").read_text())
    est = numbers["noise_estimate"]
    assert est["pairs"] == 48 and est["only_a"] == est["only_b"] == 0
    assert est["noise_px"] == pytest.approx(3.0, rel=0.2)
    assert numbers["noise_px"] == est["noise_px"]  # the ceiling used the estimate
    assert "estimated from 48 objects boxed twice" in capsys.readouterr().out
    assert "Noise from repeated annotations" in (out / "analysis.md").read_text()
    # a second annotation of other images is a one-line error naming them
    other = json.loads(second.read_text())
    other["images"][0]["id"] = 99
    for a in other["annotations"]:
        a["image_id"] = 99 if a["image_id"] == 1 else a["image_id"]
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps(other))
    assert main(["analyze", str(ckpt), "--out", str(out), "--seeds", "1", "--gallery", "0",
                 "--noise-from", f"data.val.ann_file={bad}"]) == 2
    assert "covers other images" in capsys.readouterr().err
