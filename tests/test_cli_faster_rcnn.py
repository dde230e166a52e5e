"""CLI round trip of recipes/digits_faster_rcnn.py on tiny settings: train → eval → predict JSON."""

import json

import numpy as np
import torch
from PIL import Image

from detlab.cli import main
from detlab.commands.sweep import run_sweep
from detlab.engine.trainer import load_task

from conftest import ROOT

DIGITS = ROOT / "recipes" / "digits_faster_rcnn.py"
TINY = [
    "data.train.num_samples=8", "data.val.num_samples=4", "data.train.image_size=64",
    "data.val.image_size=64", "data.train.digit_height=[8, 24]", "data.val.digit_height=[8, 24]",
    "data.batch_size=4", "data.num_workers=0", "train.max_epochs=1", "train.progress_bar=false",
    "train.scheduler=None", "model.backbone.name=resnet10t", "model.neck.out_channels=16",
    "model.head.roi.box_head.representation_size=32", "model.head.roi.sampler.num=32",
]


def test_digits_train_eval_predict(tmp_path, capsys):
    torch.set_num_threads(2)
    try:
        assert main(["train", str(DIGITS), *TINY, "--work-dir", str(tmp_path)]) == 0
        assert torch.get_num_threads() == 1  # the recipe's train.num_threads
    finally:
        torch.set_num_threads(1)
    assert main(["train", str(DIGITS), "train.num_threads=0"]) == 2
    assert "train.num_threads=0: expected an int >= 1" in capsys.readouterr().err
    run_dir = tmp_path / "digits_faster_rcnn" / "version_0"
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    for key in ("train/loss_rpn_objectness_epoch", "train/loss_roi_box_epoch", "val/AP50",
                "val/AP75", "val/AP_small", "val/AR_small", "val/AP/7"):
        assert key in header, key
    metrics_json = tmp_path / "m.json"
    assert main(["eval", str(run_dir / "checkpoints/best.ckpt"),
                 "model.head.postprocessor.test.score_threshold=0.3", "--json", str(metrics_json)]) == 0
    metrics = json.loads(metrics_json.read_text())
    assert {"AP", "AP50", "AP75", "AP_small", "AR100"} <= set(metrics)
    # sweep re-runs only the test post-processor on cached outputs: same numbers as eval
    swept = run_sweep(load_task(run_dir / "checkpoints/best.ckpt"),
                      {"model.head.postprocessor.test.score_threshold": [0.3]})
    np.testing.assert_equal(swept[0]["metrics"], metrics)  # NaN-aware: empty size buckets
    image = tmp_path / "house.png"
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "pred"
    assert main(["predict", str(run_dir / "checkpoints/last.ckpt"), str(image),
                 "model.head.postprocessor.test.score_threshold=0.0", "--out", str(out)]) == 0
    record = json.loads((out / "house.json").read_text())
    assert record["orig_size"] == [50, 70]
    assert len(record["boxes_xyxy"]) == len(record["scores"]) == len(record["labels"]) > 0
    boxes = np.array(record["boxes_xyxy"])
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 70).all() and (boxes[:, [1, 3]] <= 50).all()
    assert set(record["labels"]) <= set(range(10))
    assert (out / "house_overlay.png").is_file()
