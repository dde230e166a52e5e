"""``detlab anchors``: hand-checked coverage, k-means finding the true sizes, the cheap box reader,
and the command line."""

import json
from pathlib import Path

import numpy as np
import pytest

from detlab.cli import main
from detlab.data.datasets.synthetic_shapes import SyntheticShapes
from detlab.commands.anchors_cmd import analyse, training_boxes
from detlab.ops.anchors import suggest_anchors

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "recipes" / "digits_faster_rcnn.py"


def test_coverage_by_hand_on_three_boxes():
    # One 8x8 anchor on a stride-8 grid, centres at 8i + 4.
    boxes = np.array([
        [0.0, 0, 8, 8],   # on a centre: shape 1, grid 1
        [4.0, 0, 12, 8],  # centre x = 8, halfway between centres: grid 32 / 96 = 1/3
        [0.0, 0, 4, 16],  # 4x16: shape 32 / 96; grid (2, 8): overlap 4 x 8 = 32 -> 1/3
    ])
    report = analyse(boxes, [8], ((8,),), (1.0,))
    assert report["current"]["shape"] == pytest.approx(
        {"mean_best_iou": 7 / 9, "frac_iou>=0.5": 2 / 3, "frac_iou>=0.7": 2 / 3})
    assert report["current"]["grid"] == pytest.approx(
        {"mean_best_iou": 5 / 9, "frac_iou>=0.5": 1 / 3, "frac_iou>=0.7": 1 / 3})
    assert report["current"]["anchors_per_location"] == 1 and report["num_boxes"] == 3


def test_kmeans_suggests_the_true_sizes_and_ratio():
    # Three box sizes (sqrt(w h) = 9, 13, 40; h/w = 2), each centred on a cell centre of the
    # level that should hold it: only anchors of exactly these shapes reach grid IoU 1.
    rng = np.random.default_rng(0)
    rows = []
    for side, stride in ((9.0, 4), (13.0, 8), (40.0, 16)):
        w, h = side / np.sqrt(2), side * np.sqrt(2)
        for cx, cy in (rng.integers(0, 8, (60, 2)) + 0.5) * stride:
            rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    sizes, ratios, how = suggest_anchors(np.array(rows), [4, 8, 16], 1, 1)
    assert how == "kmeans"
    assert ratios == (2.0,)
    assert np.array(sizes).ravel() == pytest.approx([9.0, 13.0, 40.0], abs=0.5)
    report = analyse(np.array(rows), [4, 8, 16], (8, 16, 32), (1.0,), num_ratios=1)
    assert report["suggested"]["grid"]["mean_best_iou"] > 0.99
    assert report["current"]["grid"]["mean_best_iou"] < 0.8


def test_training_boxes_from_annotations_equal_the_samples():
    ds = SyntheticShapes(num_samples=6, image_size=48, img_size=96, seed=3)  # 2x, no padding
    boxes, images = training_boxes(ds, max_images=10)
    expected = np.concatenate([ds[i]["target"]["boxes"].numpy() for i in range(6)])
    assert images == 6 and boxes == pytest.approx(expected, abs=1e-4)
    assert training_boxes(ds, max_images=2)[1] == 2


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "anchors.json"
    assert main(["anchors", str(DIGITS), "data.train.num_samples=12", "--max-images", "8",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "current" in printed and "suggested" in printed
    assert "model.head.rpn.anchor_generator.sizes=" in printed
    report = json.loads(out.read_text())
    assert report["strides"] == [4, 8, 16]
    assert report["current"]["anchor_sizes"] == [[10, 14.5], [20, 28.5], [40.5, 57]]
    current = report["current"]
    assert 0 < current["grid"]["mean_best_iou"] <= current["shape"]["mean_best_iou"]


def test_cli_refuses_a_head_without_anchors(capsys):
    assert main(["anchors", str(ROOT / "recipes" / "fracture_unet.py")]) == 2
    assert "has no anchor_sizes" in capsys.readouterr().err
