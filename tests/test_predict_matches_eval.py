"""``detlab predict`` on the val images gives exactly the predictions ``detlab eval`` scores,
for every head family: YOLO and Faster R-CNN (COCO files, letterboxed), DB (ICDAR files,
long-side resize) and the attention U-Net (float TIFF slices of the synthetic CT val set).

Each case trains a tiny checkpoint for one epoch, records what the evaluator receives during
``eval`` (predictions and meta, per image) and compares it with the files ``predict`` writes
for the same images. On the old code ``predict`` read files with its own resize + pad and
needed a ``data.predict`` section, so boxes, polygons and probabilities differed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.det_files import coco_dict, write_json, write_png
from detlab.cli import main
from detlab.registry import EVALUATORS

ROOT = Path(__file__).resolve().parents[1]

# (h, w) of the val images: different aspect ratios, same 64x64 letterboxed input.
DET_SIZES = [(48, 80), (80, 56), (64, 64)]
DET_BOXES = [[(10, 8, 30, 28), (44, 20, 70, 40)], [(6, 10, 40, 50)], [(20, 20, 44, 52)]]


def _coco_files(root: Path, num_classes: int) -> tuple[Path, Path]:
    images, anns = [], []
    for i, ((h, w), boxes) in enumerate(zip(DET_SIZES, DET_BOXES)):
        write_png(root / "img" / f"im{i}.png", h, w, boxes)
        images.append({"id": 100 + i, "file_name": f"im{i}.png", "height": h, "width": w})
        for j, (x1, y1, x2, y2) in enumerate(boxes):
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": j % 2,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": 0})
    cats = [{"id": c, "name": str(c)} for c in range(num_classes)]
    ann = write_json(root / "ann.json", coco_dict(images, anns, cats))
    return ann, root / "img"


def _recipe(path: Path, parent: str, body: str) -> Path:
    path.write_text(f"from detlab.recipe import load_parent\n"
                    f"_base = load_parent({str(ROOT / 'recipes' / parent)!r})\n"
                    "model, data, train, evaluator = (_base[k] for k in "
                    "('model', 'data', 'train', 'evaluator'))\n" + body)
    return path


def _eval_predictions(monkeypatch, ckpt: Path, overrides: list[str]) -> dict[str, tuple]:
    """``{file name: (Prediction, meta)}`` of what the evaluator's ``update`` receives."""
    seen: dict[str, tuple] = {}
    from detlab.engine.trainer import load_task

    cls = type(load_task(ckpt).evaluator)
    original = cls.update

    def update(self, predictions, batch):
        for pred, meta in zip(predictions, batch.meta):
            seen[Path(str(meta["path"])).name] = (pred, meta)
        return original(self, predictions, batch)

    monkeypatch.setattr(cls, "update", update)
    assert main(["eval", str(ckpt), *overrides, "--quiet"]) == 0
    monkeypatch.setattr(cls, "update", original)
    assert cls in {EVALUATORS.get(n) for n in EVALUATORS.names()}
    return seen


def _train(recipe: Path, work: Path, extra: list[str]) -> Path:
    tiny = ["data.batch_size=2", "data.num_workers=0", "train.max_epochs=1",
            "train.progress_bar=false", *extra]
    assert main(["train", str(recipe), *tiny, "--work-dir", str(work)]) == 0
    return next(work.glob("*/version_0/checkpoints/last.ckpt"))


def _check_boxes(seen: dict, out: Path) -> None:
    assert len(seen) == len(DET_SIZES)
    total = 0
    for name, (pred, meta) in seen.items():
        record = json.loads((out / f"{Path(name).stem}.json").read_text())
        assert record["orig_size"] == list(meta["orig_size"])
        boxes = np.asarray(record["boxes_xyxy"], np.float64).reshape(-1, 4)
        assert boxes.shape == tuple(pred.boxes.shape)
        np.testing.assert_allclose(boxes, pred.boxes.numpy(), atol=1e-3)
        np.testing.assert_allclose(record["scores"], pred.scores.numpy(), atol=1e-5)
        assert record["labels"] == pred.labels.tolist()
        total += len(boxes)
    assert total > 0  # something to compare


YOLO_BODY = """
data['train'] = dict(type='CocoDetection', ann_file={ann!r}, img_dir={img!r}, img_size=64)
data['val'] = dict(data['train'])
data['sampler'] = None
evaluator['class_names'] = ['0', '1']
"""


def test_yolo_predict_equals_eval(tmp_path, monkeypatch):
    ann, img = _coco_files(tmp_path / "coco", 2)
    recipe = _recipe(tmp_path / "yolo.py", "helmet_yolo_p2.py",
                     YOLO_BODY.format(ann=str(ann), img=str(img)))
    ckpt = _train(recipe, tmp_path / "runs", [])
    seen = _eval_predictions(monkeypatch, ckpt, [])
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), str(img), "--out", str(out)]) == 0
    _check_boxes(seen, out)


FRCNN_BODY = YOLO_BODY.replace("['0', '1']", "[str(d) for d in range(10)]")
FRCNN_TINY = ["model.backbone.name=resnet10t", "model.neck.out_channels=16",
              "model.head.roi.box_head.representation_size=32", "model.head.roi.sampler.num=32",
              "train.scheduler=None"]


def test_faster_rcnn_predict_equals_eval(tmp_path, monkeypatch):
    ann, img = _coco_files(tmp_path / "coco", 10)
    recipe = _recipe(tmp_path / "frcnn.py", "digits_faster_rcnn.py",
                     FRCNN_BODY.format(ann=str(ann), img=str(img)))
    ckpt = _train(recipe, tmp_path / "runs", FRCNN_TINY)
    low = ["model.head.postprocessor.test.score_threshold=0.0"]
    seen = _eval_predictions(monkeypatch, ckpt, low)
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), *(str(img / f"im{i}.png") for i in range(3)), *low,
                 "--out", str(out)]) == 0
    _check_boxes(seen, out)


TEXT_BODY = """
data['train'] = dict(type='IcdarTxt', img_dir={img!r}, ann_dir={ann!r}, img_size=96,
                     target_generator=dict(min_text_size=2.0))
data['val'] = dict(data['train'])
"""


def test_db_predict_equals_eval(tmp_path, monkeypatch):
    img, ann = tmp_path / "img", tmp_path / "gt"
    img.mkdir()
    ann.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):  # 120x150 photos, resized to long side 96 (scale 0.64)
        arr = (rng.random((120, 150, 3)) * 60 + 150).astype(np.uint8)
        arr[30:50, 20:110] = 20
        Image.fromarray(arr).save(img / f"t{i}.png")
        (ann / f"gt_t{i}.txt").write_text("20,30,110,30,110,50,20,50,word\n")
    recipe = _recipe(tmp_path / "db.py", "receipt_dbnet.py",
                     TEXT_BODY.format(img=str(img), ann=str(ann)))
    ckpt = _train(recipe, tmp_path / "runs", ["model.neck.inner_channels=16",
                                              "model.backbone.name=resnet10t"])
    # An untrained model's probabilities are flat: a threshold at their median gives polygons.
    from detlab.engine.trainer import load_task

    task = load_task(ckpt)
    from detlab.data.datamodule import DataModule

    batch = next(iter(DataModule(task.recipe.section("data")).val_dataloader()))
    with torch.no_grad():
        prob = task.model(batch.images)["prob_logits"].sigmoid()
    t = float(torch.quantile(prob.flatten(), 0.7))
    post = [f"model.head.postprocessor.binarize_threshold={t}",
            "model.head.postprocessor.box_threshold=0.0", "model.head.postprocessor.min_size=0.0"]
    seen = _eval_predictions(monkeypatch, ckpt, post)
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), str(img), *post, "--save-probs", "--out", str(out)]) == 0
    total = 0
    for name, (pred, meta) in seen.items():
        record = json.loads((out / f"{Path(name).stem}.json").read_text())
        assert len(record["polygons"]) == len(pred.polygons)
        for got, want in zip(record["polygons"], pred.polygons):
            np.testing.assert_allclose(np.asarray(got), want, atol=1e-3)
        np.testing.assert_allclose(record["scores"], pred.scores.numpy(), atol=1e-5)
        probs = np.load(out / f"{Path(name).stem}_probs.npy")
        assert probs.shape == (1, 120, 150)  # the DB map at the original size
        total += len(pred.polygons)
    assert total > 0


def test_unet_predict_equals_eval_on_float_tiffs(tmp_path, monkeypatch):
    from conftest import RECIPE, TINY
    from detlab.data.datasets.synthetic_spine import SyntheticSpineCT

    ckpt = _train(RECIPE, tmp_path / "runs",
                  [t for t in TINY if not t.startswith(("data.batch_size", "data.num_workers",
                                                        "train.max_epochs", "train.progress"))]
                  # prior 0.5: probabilities that follow the input (not all at a 0.01 prior)
                  + ["data.val.num_samples=3", "data.train.num_samples=4",
                     "model.head.prior_prob=0.5"])
    seen = _eval_predictions(monkeypatch, ckpt, [])
    val = SyntheticSpineCT("val", num_samples=3, image_size=64, seed=0)
    files = []
    for i in range(3):  # the slice exported with the window [-250, 1250] HU as [0, 1]
        hu = val.render(i)[0].astype(np.float64) * 240.0 + 55.0
        files.append(tmp_path / "tif" / f"val-{i}.tif")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(((hu + 250.0) / 1500.0).astype(np.float32), mode="F").save(files[-1])
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), *map(str, files), "--save-probs", "--out",
                 str(out)]) == 0
    for i in range(3):
        pred, meta = seen[str(i)]  # synthetic://spine/val/<i>
        probs = np.load(out / f"val-{i}_probs.npy")
        # The tiny model's map varies by ~1e-3 around 0.5: compare far below that.
        assert probs.shape == (1, 64, 64) and np.ptp(probs) > 1e-3
        np.testing.assert_allclose(probs, pred.probs.numpy(), rtol=0, atol=1e-6)
