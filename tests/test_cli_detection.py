"""Detection CLI round trip on tiny settings of recipes/helmet_yolo_p2.py: train → eval (COCO
AP keys) → predict (JSON boxes + overlay PNGs) → sweep of a post-processing threshold; and the
COCO variant: a clear error while its paths are unset, a finite loss on tiny COCO files."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "helmet_yolo_p2.py"
COCO_RECIPE = ROOT / "recipes" / "helmet_yolo_p2_coco.py"
TINY = [
    "data.train.num_samples=8", "data.val.num_samples=4", "data.train.image_size=64",
    "data.train.img_size=64", "data.val.image_size=64", "data.val.img_size=64",
    "data.batch_size=4", "data.num_workers=0",
    "train.max_epochs=1", "train.progress_bar=false",
]


PRINTED: list[str] = []  # Lightning log lines of the training run


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("det_runs")
    handler = logging.Handler()
    handler.emit = lambda record: PRINTED.append(record.getMessage())
    logger = logging.getLogger("lightning.pytorch")
    logger.addHandler(handler)
    try:
        assert main(["train", str(RECIPE), *TINY, "--work-dir", str(work)]) == 0
    finally:
        logger.removeHandler(handler)
    return work / "helmet_yolo_p2" / "version_0"


def test_train_then_eval_reports_coco_metrics(det_run, tmp_path, capsys):
    ckpt = det_run / "checkpoints" / "best.ckpt"
    assert ckpt.is_file() and (det_run / "checkpoints" / "last.ckpt").is_file()
    header = (det_run / "metrics.csv").read_text().splitlines()[0]
    assert all(f"train/loss_{k}_epoch" in header for k in ("cls", "box", "dfl"))
    assert "train/nonfinite_boxes" in header  # the box losses' NaN/inf row counter
    with open(det_run / "metrics.csv") as f:
        counts = [r["train/nonfinite_boxes"] for r in csv.DictReader(f)
                  if r.get("train/nonfinite_boxes")]
    assert counts and all(float(c) == 0.0 for c in counts)
    out = tmp_path / "metrics.json"
    assert main(["eval", str(ckpt), "--json", str(out), "--quiet"]) == 0
    metrics = json.loads(out.read_text())
    keys = {"AP", "AP50", "AP75", "AP_small", "AR100", "AP_rel_tiny", "AP_rel_small",
            "AP/helmet_on", "AP/helmet_off"}
    assert keys <= set(metrics)
    # a size bucket without ground truth is undefined (NaN, COCO's -1), never a score of 0
    assert all(0.0 <= metrics[k] <= 1.0 or math.isnan(metrics[k]) for k in keys)
    assert 0.0 <= metrics["AP"] <= 1.0
    assert "AP=" in capsys.readouterr().out


def test_epoch_printout_shows_that_epochs_metrics(det_run):
    with open(det_run / "metrics.csv") as f:
        ap = [float(r["val/AP"]) for r in csv.DictReader(f) if r.get("val/AP")]
    lines = [line.strip() for line in PRINTED if " val: " in line]
    assert len(lines) == len(ap) == 1
    assert lines[0].startswith(f"[epoch 0] val: AP={ap[0]:.4g} ")


def test_predict_writes_json_boxes_and_overlays(det_run, tmp_path):
    sizes = [(64, 64), (90, 70)]  # the second is letterboxed (img_size 64) and mapped back
    images = []
    for i, (h, w) in enumerate(sizes):
        arr = np.full((h, w, 3), 110, np.uint8)
        arr[10:30, 12:28] = (230, 40, 40)
        images.append(tmp_path / f"frame{i}.png")
        Image.fromarray(arr).save(images[-1])
    out = tmp_path / "pred"
    assert main(["predict", str(det_run / "checkpoints" / "last.ckpt"),
                 *map(str, images), "--out", str(out)]) == 0
    for i, (h, w) in enumerate(sizes):
        record = json.loads((out / f"frame{i}.json").read_text())
        assert record["orig_size"] == [h, w]
        boxes = np.asarray(record["boxes_xyxy"]).reshape(-1, 4)
        assert len(boxes) == len(record["scores"]) == len(record["labels"]) > 0
        assert (boxes >= 0).all()
        assert (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all()
        assert set(record["labels"]) <= {0, 1}
        assert np.asarray(Image.open(out / f"frame{i}_overlay.png")).shape == (h, w, 3)
    # COCO-style results over all images: bbox = xywh of the per-image xyxy boxes, ids 1-based
    results = json.loads((out / "results.json").read_text())
    for i in range(len(sizes)):
        record = json.loads((out / f"frame{i}.json").read_text())
        mine = [r for r in results if r["file_name"] == f"frame{i}.png"]
        assert len(mine) == len(record["boxes_xyxy"])
        for r, (x1, y1, x2, y2), label in zip(mine, record["boxes_xyxy"], record["labels"]):
            assert r["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])
            assert r["category_id"] == label + 1


def test_sweep_score_threshold(det_run, capsys):
    ckpt = str(det_run / "checkpoints" / "best.ckpt")
    assert main(["sweep", ckpt, "model.head.postprocessor.score_threshold=0.01,0.3"]) == 0
    out = capsys.readouterr().out
    assert "0.01" in out and "0.3" in out and "best: model.head.postprocessor.score_threshold" in out
    assert main(["sweep", ckpt, "model.head.reg_max=8"]) == 2  # changes the network: refused


def test_coco_variant_unset_paths_is_one_clear_error(tmp_path, capsys):
    rc = main(["train", str(COCO_RECIPE), "model.backbone.pretrained=false",
               "--work-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "CocoDetection.ann_file is not set" in err and "data.train" in err


def test_coco_variant_trains_on_user_files(tmp_path):
    from detlab.data.datamodule import DataModule
    from detlab.recipe import load
    from detlab.registry import MODELS

    images, annotations = [], []
    for i in range(2):
        arr = np.full((48, 80, 3), 100, np.uint8)
        arr[8:20, 10:18] = 220
        Image.fromarray(arr).save(tmp_path / f"cam{i}.png")
        images.append({"id": i + 1, "file_name": f"cam{i}.png", "width": 80, "height": 48})
        annotations.append({"id": i, "image_id": i + 1, "category_id": 7 + i % 2,
                            "bbox": [10, 8, 8, 12]})
    categories = [{"id": 7, "name": "helmet_on"}, {"id": 8, "name": "helmet_off"}]
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": categories}))
    paths = [f"data.{s}.{k}={v}" for s in ("train", "val")
             for k, v in (("ann_file", ann), ("img_dir", tmp_path))]
    recipe = load(COCO_RECIPE, paths + [
        "model.backbone.pretrained=false", "model.backbone.name=resnet10t",
        "data.train.img_size=64", "data.val.img_size=64", "data.num_workers=0",
        "data.multi_scale=(0.5,1.0)",
    ])
    assert recipe["model"]["head"]["num_classes"] == 2
    model = MODELS.build(recipe.section("model"), key="model")
    data = DataModule(recipe.section("data"), size_divisor=model.size_divisor)
    assert data.dataset("train").class_names == ["helmet_on", "helmet_off"]
    assert [data.dataset("val")[i]["target"]["labels"].tolist() for i in range(2)] == [[0], [1]]
    batch = next(iter(data.train_dataloader()))  # tiny-object oversampler: with replacement
    assert all(t["labels"].tolist() in ([0], [1]) for t in batch.targets)
    losses = model.loss(batch)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_box"] > 0
