"""recipes/helmet_yolo_dense.py: the cs3darknet_s backbone gives P3-P5 to helmet_yolo's PAN
(that it learns on a fixed batch is checked with the other recipes in test_recipe_training.py)."""

from pathlib import Path

from detlab.recipe import load
from detlab.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]


def test_dense_recipe_builds_p3_p5():
    cfg = load(ROOT / "recipes" / "helmet_yolo_dense.py")
    base = load(ROOT / "recipes" / "helmet_yolo.py")
    assert cfg["model"]["neck"] == base["model"]["neck"]  # only the backbone differs
    assert cfg["model"]["head"] == base["model"]["head"]
    model = MODELS.build(cfg["model"])
    assert model.backbone.channels == [128, 256, 512] and model.backbone.strides == [8, 16, 32]
