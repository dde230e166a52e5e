"""``detlab predict --split val`` writes a results.json that pycocotools scores against the
user's own ground-truth JSON with exactly ``detlab eval``'s AP: category ids {0, 1}, {3, 7}
and a ``classes=`` subset in another order; plus the YOLO-txt output, categories.json and the
errors of ``--save-probs`` on a box head and of a single DICOM file.

On the old code results.json had ``image_id`` = file stem and ``category_id`` = label + 1
(and there was no ``--split``), so pycocotools could not match a single detection.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data.det_files import coco_dict, write_json, write_png
from detlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(48, 80), (80, 56), (64, 64), (60, 90)]
# Large objects, so that even a one-epoch model's 300 boxes per image match some (AP > 0).
BOXES = [[(4, 4, 44, 40), (40, 10, 78, 46)], [(4, 6, 50, 60)], [(8, 8, 60, 56)],
         [(2, 4, 50, 58), (46, 10, 88, 50)]]


def _gt(path: Path, img_dir: Path, ids: list[int], names: list[str]) -> Path:
    """COCO GT over the images in ``img_dir``: object j of an image gets category
    ``ids[(i + j) % len(ids)]``."""
    images, anns = [], []
    for i, ((h, w), boxes) in enumerate(zip(SIZES, BOXES)):
        images.append({"id": 7 * i + 3, "file_name": f"im{i}.png", "height": h, "width": w})
        for j, (x1, y1, x2, y2) in enumerate(boxes):
            anns.append({"id": len(anns) + 1, "image_id": 7 * i + 3,
                         "category_id": ids[(i + j) % len(ids)],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": 0})
    cats = [{"id": c, "name": n} for c, n in zip(ids, names)]
    return write_json(path, coco_dict(images, anns, cats))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    img = root / "img"
    for i, ((h, w), boxes) in enumerate(zip(SIZES, BOXES)):
        write_png(img / f"im{i}.png", h, w, boxes)
    ann = _gt(root / "train.json", img, [0, 1], ["a", "b"])
    recipe = root / "yolo.py"
    recipe.write_text(
        "from detlab.recipe import load_parent\n"
        f"_base = load_parent({str(ROOT / 'recipes' / 'helmet_yolo_p2.py')!r})\n"
        "model, data, train, evaluator = (_base[k] for k in "
        "('model', 'data', 'train', 'evaluator'))\n"
        f"data['train'] = dict(type='CocoDetection', ann_file={str(ann)!r}, "
        f"img_dir={str(img)!r}, img_size=64)\n"
        "data['val'] = dict(data['train'])\n"
        "data['sampler'] = None\n"
        "evaluator['class_names'] = ['a', 'b']\n")
    work = root / "runs"
    assert main(["train", str(recipe), "data.batch_size=2", "data.num_workers=0",
                 "train.max_epochs=1", "train.progress_bar=false", "--work-dir", str(work)]) == 0
    return root, img, next(work.glob("*/version_0/checkpoints/last.ckpt"))


def _pycocotools_ap(gt_file: Path, results: list[dict], cat_ids: list[int]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.catIds = cat_ids  # the categories the model was trained on
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("ids, names, classes", [
    ([0, 1], ["a", "b"], None),
    ([3, 7], ["a", "b"], None),
    ([1, 2, 5], ["x", "a", "b"], ["b", "a"]),  # a subset, in another order than the ids
])
def test_pycocotools_on_user_gt_gives_eval_ap(run, tmp_path, ids, names, classes):
    root, img, ckpt = run
    gt_file = _gt(tmp_path / "val.json", img, ids, names)
    overrides = [f"data.val.ann_file={gt_file}"]
    if classes is not None:
        overrides += [f"data.val.classes={json.dumps(classes)}",
                      f"evaluator.class_names={json.dumps(classes)}"]
    metrics_file = tmp_path / "m.json"
    assert main(["eval", str(ckpt), *overrides, "--json", str(metrics_file), "--quiet"]) == 0
    metrics = json.loads(metrics_file.read_text())
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), *overrides, "--split", "val", "--yolo-txt",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    used = [c for c, n in zip(ids, names) if classes is None or n in classes]
    assert {r["category_id"] for r in results} <= set(used)
    assert {r["image_id"] for r in results} <= {7 * i + 3 for i in range(len(SIZES))}
    stats = _pycocotools_ap(gt_file, results, used)
    assert metrics["AP"] > 0  # a number worth comparing
    assert stats[0] == pytest.approx(metrics["AP"], abs=1e-6)
    assert stats[1] == pytest.approx(metrics["AP50"], abs=1e-6)
    # categories.json: the category id of each detlab label
    cats = json.loads((out / "categories.json").read_text())
    order = classes or names
    assert cats == [{"id": ids[names.index(n)], "name": n, "label": i}
                    for i, n in enumerate(order)]
    # YOLO txt: class cx cy w h score, normalized by the original size, one file per image
    lines = (out / "labels" / "im1.txt").read_text().splitlines()
    mine = [r for r in results if r["image_id"] == 7 * 1 + 3]
    assert len(lines) == len(mine) > 0
    h, w = SIZES[1]
    for line, r in zip(lines, mine):
        label, cx, cy, bw, bh, score = (float(v) for v in line.split())
        x, y, rw, rh = r["bbox"]
        assert cats[int(label)]["id"] == r["category_id"]
        np.testing.assert_allclose([cx, cy, bw, bh], [(x + rw / 2) / w, (y + rh / 2) / h,
                                                      rw / w, rh / h], atol=2e-6)
        assert score == pytest.approx(r["score"], abs=1e-6)


def test_files_get_names_and_val_category_ids(run, tmp_path):
    root, img, ckpt = run
    gt_file = _gt(tmp_path / "val.json", img, [3, 7], ["a", "b"])
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), str(img), f"data.val.ann_file={gt_file}",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    # plain files: image_id = file name relative to the input folder, val's category ids
    assert {r["image_id"] for r in results} == {f"im{i}.png" for i in range(len(SIZES))}
    assert {r["category_id"] for r in results} <= {3, 7}


def test_save_probs_on_a_box_head_is_a_clear_error(run, tmp_path, capsys):
    _, img, ckpt = run
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), str(img), "--save-probs", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--save-probs" in err and "YOLOHead" in err and "boxes" in err
    assert not out.exists()  # refused before anything is written


def test_single_dicom_file_says_to_pass_the_series_folder(run, tmp_path, capsys):
    _, _, ckpt = run
    series = tmp_path / "series"
    series.mkdir()
    slice_file = series / "IM0001.dcm"
    slice_file.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    assert main(["predict", str(ckpt), str(slice_file), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "single DICOM file" in err and str(series) in err
    assert "data.predict" not in err
