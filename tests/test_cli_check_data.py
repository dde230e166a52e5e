"""``detlab check-data`` through the CLI: hand-computed counts and size buckets for a COCO
recipe (with the train/val size warning and the PNG), a text recipe on ReceiptJson files, the
synthetic text recipe, and the fracture recipe's lesion slices and pixels."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent / "data"))
from det_files import coco_dict, write_json, write_png  # noqa: E402

from detlab.cli import main  # noqa: E402
from detlab.data.datasets.synthetic_spine import SyntheticSpineCT  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CATS = [{"id": 1, "name": "helmet_on"}, {"id": 2, "name": "helmet_off"}]


def _ann(i, image_id, cat, bbox, crowd=0):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": crowd}


@pytest.fixture
def coco(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / "img" / name, 100, 100)
    img = [{"id": k, "file_name": n, "width": 100, "height": 100}
           for k, n in ((1, "a.png"), (2, "b.png"), (3, "c.png"))]
    train = write_json(tmp_path / "train.json", coco_dict(img[:2], [
        _ann(1, 1, 1, [10, 10, 5, 5]),       # 25 px² = 0.25 %: small
        _ann(2, 1, 2, [0, 0, 2, 2]),         # 4 px² = 0.04 %: tiny
        _ann(3, 1, 1, [95, 95, 10, 10]),     # clipped to 5 x 5: small, outside
        _ann(4, 1, 1, [50, 50, 20, 20], 1),  # crowd: ignored
        _ann(5, 1, 2, [200, 200, 5, 5]),     # nothing inside the image: dropped
    ], CATS))
    val = write_json(tmp_path / "val.json", coco_dict(img[2:], [
        _ann(1, 3, 1, [0, 0, 30, 30]),       # 9 %: large
        _ann(2, 3, 2, [50, 50, 20, 20]),     # 4 %: medium
    ], CATS))
    return [f"data.train.ann_file={train}", f"data.train.img_dir={tmp_path / 'img'}",
            f"data.val.ann_file={val}", f"data.val.img_dir={tmp_path / 'img'}"]


def test_coco_recipe_counts_buckets_warning_and_png(coco, tmp_path, capsys):
    recipe = str(ROOT / "recipes" / "helmet_yolo_p2_coco.py")
    # 1 of the 5 train boxes has no area inside its image: 20 % > the default 5 %
    assert main(["check-data", recipe, *coco]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: data.train (CocoDetection train.json): dropped 1 of 5 boxes (20.0%), more than "
        "max_bad_fraction=0.05: 1 outside image (e.g. train.json: annotations[4]). Fix the "
        "annotations, or raise max_bad_fraction in the dataset's recipe entry")
    coco = [*coco, "data.train.max_bad_fraction=0.25"]
    out = tmp_path / "report"
    rc = main(["check-data", recipe, *coco, "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    train, val = text.split("== val")[0], text.split("== val")[1]
    assert "== train: CocoDetection, 2 images ==" in train
    assert "images without objects: 1 of 2" in train
    # boxes 1-3 (box 3 clipped when parsed to 95..100: 5 x 5 px), the crowd box an ignore region
    assert "objects: 3 in 2 classes; ignore regions: 1" in train
    assert "  helmet_on         2       1" in train and "  helmet_off        1       1" in train
    # the dataset's parse-time counters, each once, with its first place; nothing recomputed
    assert ("repairs (counted when the files were parsed, of 2 images, 5 boxes):\n"
            "  kind     reason         count  first place\n"
            "  clipped  outside image      1  train.json: annotations[2]\n"
            "  dropped  outside image      1  train.json: annotations[4]\n") in train
    assert "repairs: none (of 1 images, 2 boxes read)" in val
    assert "still outside" not in text
    assert "area % of image: median 0.25 %" in train
    for line in ("tiny (< 0.1 %)              1  33.3 %", "small (0.1-0.5 %)           2  66.7 %",
                 "medium (0.5-5 %)            0  0 %"):
        assert line in train
    assert "medium (0.5-5 %)            1  50 %" in val
    assert "large (> 5 %)               1  50 %" in val
    assert ("WARNING: train and val median object sizes differ by more than 4x: area % of image "
            "train 0.25 % vs val 6.5 % (26.0x); area px² train 25 vs val 650 (26.0x)") in text
    assert main(["check-data", str(ROOT / "recipes" / "helmet_yolo_p2_coco.py"), *coco,
                 "--size-ratio", "30"]) == 0
    assert "agree within 30x" in capsys.readouterr().out
    assert Image.open(out / "object_sizes.png").size == (720, 360)
    assert (out / "check_data.txt").read_text().startswith("== train: CocoDetection")


def test_text_recipe_on_receipt_json_files(tmp_path, capsys, monkeypatch):
    write_png(tmp_path / "r.png", 100, 200)
    words = {"0": {"points": [[10, 10], [50, 10], [50, 20], [10, 20]]},            # 2 %
             "1": {"points": [[60, 60], [70, 60], [70, 70]], "illegible": True},  # ignored
             "2": {"points": [[190, 50], [210, 50], [210, 60], [190, 60]]}}       # outside
    ann = tmp_path / "r.json"
    ann.write_text(json.dumps({"images": {"r.png": {"words": words}}}))
    monkeypatch.setitem(sys.modules, "detlab.data.positives", None)  # as before H5's module
    files = [f"data.{s}.{k}={v}" for s in ("train", "val")
             for k, v in (("ann_file", ann), ("img_dir", tmp_path))]
    assert main(["check-data", str(ROOT / "recipes" / "receipt_dbnet_hrnet.py"), *files]) == 0
    text = capsys.readouterr().out
    assert "== train: ReceiptJson, 1 images ==" in text
    assert "objects: 2 in 1 class; ignore regions: 1" in text
    # text points are pixel indices: word 2 is clipped when parsed to the last column, x 199
    # (text_base.clip_polygons' frame [0, W - 1]), so 9 x 10 px; word 0 is 40 x 10 px
    assert "width px:  min 9 / p10 12.1 / median 24.5 / p90 36.9 / max 40" in text
    assert "area % of image: median 1.23 %" in text  # 400 and 90 px² of 20000: 2 %, 0.45 %
    train = text.split("== val")[0]
    assert ("repairs (counted when the files were parsed, of 1 images, 3 words):\n"
            "  kind     reason         count  first place\n"
            f"  clipped  outside image      1  {ann}: images['r.png'].words['2']\n") in train
    assert train.count("clipped") == 1  # counted once, not again from the clipped polygon
    assert "text regions lost to min_text_size: n/a (needs detlab.data.positives)" in text


def test_synthetic_text_recipe_uses_count_positives(capsys, monkeypatch):
    calls = []

    def count_positives(dataset, split, max_samples=200):
        calls.append((type(dataset).__name__, split, max_samples))
        return types.SimpleNamespace(summary=lambda: f"{split}: 7 of 9 words kept")

    fake = types.ModuleType("detlab.data.positives")
    fake.count_positives = count_positives
    monkeypatch.setitem(sys.modules, "detlab.data.positives", fake)
    rc = main(["check-data", str(ROOT / "recipes" / "receipt_dbnet.py"),
               "data.train.num_samples=3", "data.val.num_samples=2", "--max-samples", "2"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "== train: SyntheticReceipts, 3 images ==" in text
    assert "scanned 2 of 3 images (--max-samples)" in text
    assert "text regions lost to min_text_size: train: 7 of 9 words kept" in text
    assert text.count("repairs: none counted (the dataset keeps no data report: generated "
                      "data)") == 2
    assert calls == [("SyntheticReceipts", "train", 2), ("SyntheticReceipts", "val", 2)]


def test_fracture_recipe_lesion_slices_and_pixels(capsys):
    rc = main(["check-data", str(ROOT / "recipes" / "fracture_unet.py"),
               "data.train.num_samples=30", "data.val.num_samples=10",
               "data.train.image_size=64", "data.val.image_size=64"])
    text = capsys.readouterr().out
    assert rc == 0
    ds = SyntheticSpineCT("train", num_samples=30, image_size=64, seed=0)
    masks = np.stack([ds.render(i)[1] for i in range(30)]) > 0
    lesions = int(masks.any(axis=(1, 2)).sum())
    assert lesions == int(ds.positive_flags().sum()) > 0
    assert "== train: SyntheticSpineCT, 30 slices ==" in text
    assert f"slices with lesions: {lesions} of 30 ({100 * lesions / 30:.3g} %)" in text
    assert f"positive pixel fraction: {100 * masks.mean():.3g} % of the pixels of 30" in text
