"""Class names stated once (``data.classes``) fill the datasets, the head and the evaluator;
a place that disagrees is one ConfigError naming both places and values."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data"))
from det_files import coco_dict, write_json, write_png  # noqa: E402

from detlab.classes import apply_classes  # noqa: E402
from detlab.data.datamodule import DataModule  # noqa: E402
from detlab.errors import ConfigError  # noqa: E402
from detlab.recipe import load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COCO_RECIPE = ROOT / "recipes" / "helmet_yolo_p2_coco.py"


def _coco_files(tmp_path: Path) -> list[str]:
    write_png(tmp_path / "img" / "a.png", 40, 60)
    cats = [{"id": 1, "name": "helmet_on"}, {"id": 2, "name": "helmet_off"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 2, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 2, 10, 10]}]
    ann = write_json(tmp_path / "ann.json", coco_dict(
        [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}], anns, cats))
    return [f"data.{s}.{k}={v}" for s in ("train", "val")
            for k, v in (("ann_file", ann), ("img_dir", tmp_path / "img"))]


def test_one_override_points_the_coco_recipe_at_one_class(tmp_path):
    paths = _coco_files(tmp_path)
    two = load(COCO_RECIPE, paths)
    assert two["model"]["head"]["num_classes"] == 2
    assert two["evaluator"]["class_names"] == ["helmet_on", "helmet_off"]
    one = load(COCO_RECIPE, paths + ["data.classes=['helmet_off']"])
    assert one["data"]["train"]["classes"] == one["data"]["val"]["classes"] == ["helmet_off"]
    assert one["model"]["head"]["num_classes"] == 1
    assert one["evaluator"]["class_names"] == ["helmet_off"]
    train = DataModule(one["data"]).dataset("train")
    assert train.class_names == ["helmet_off"] and train.category_ids == [2]
    assert train.annotations(0).labels.tolist() == [0]  # the helmet_on box is dropped


@pytest.mark.parametrize("override, message", [
    ("model.head.num_classes=2", r"model\.head\.num_classes=2 disagrees with "
                                 r"data\.classes=\['helmet_off'\] \(which gives num_classes=1\)"),
    ("evaluator.class_names=['helmet_on']",
     r"evaluator\.class_names=\['helmet_on'\] disagrees with data\.classes=\['helmet_off'\]"),
    ("+data.val.classes=['a']", r"data\.val\.classes=\['a'\] disagrees with data\.classes"),
])
def test_a_second_place_with_another_value_names_both(override, message):
    with pytest.raises(ConfigError, match=message):
        load(COCO_RECIPE, ["data.classes=['helmet_off']", override])


def test_the_same_value_twice_is_fine_and_bad_names_are_refused():
    recipe = load(COCO_RECIPE, ["model.head.num_classes=2"])  # agrees with data.classes
    assert recipe["model"]["head"]["num_classes"] == 2
    for bad in ("data.classes=[]", "data.classes=['a','a']"):
        with pytest.raises(ConfigError, match="data.classes="):
            load(COCO_RECIPE, [bad])


def test_yolo_wrappers_and_fixed_class_datasets():
    recipe = {
        "data": {
            "classes": ["a", "b"],
            "train": {"type": "MosaicDataset",
                      "dataset": {"type": "YoloDetection", "root": "/x"}},
            "val": {"type": "YoloDetection", "root": "/x", "names_file": "data.yaml"},
            "test": {"type": "SyntheticShapes"},
        },
        "model": {"head": {"type": "YOLOHead"}},
        "evaluator": {"type": "CocoEvaluator"},
    }
    with pytest.raises(ConfigError, match=r"data\.test \(SyntheticShapes\), whose classes are "
                                          r"fixed: \['rectangle', 'ellipse', 'triangle'\]"):
        apply_classes(recipe)
    recipe["data"]["test"] = None
    apply_classes(recipe)
    assert recipe["data"]["train"]["dataset"]["class_names"] == ["a", "b"]
    assert "class_names" not in recipe["data"]["val"]  # its names_file gives them
    assert recipe["model"]["head"]["num_classes"] == 2
    assert recipe["evaluator"]["class_names"] == ["a", "b"]


def test_recipes_without_data_classes_are_unchanged():
    recipe = load(ROOT / "recipes" / "helmet_yolo_p2.py")
    assert recipe["data"]["classes"] is None
    assert recipe["model"]["head"]["num_classes"] == 2
    assert "classes" not in recipe["data"]["train"]
