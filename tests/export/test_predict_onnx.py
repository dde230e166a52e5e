"""detlab predict MODEL.onnx writes the files detlab predict CKPT writes, with the same
boxes / polygons / masks, from the .onnx file alone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from export_checkpoints import checkpoints  # noqa: F401  (the session fixture)

from detlab.cli import main
from detlab.data.datasets.synthetic_receipts import SyntheticReceipts
from detlab.export.checkpoint import export_checkpoint
from detlab.export.runtime import OnnxPredictor, db_polygons


def _image(family: str, folder) -> str:
    if family == "db":
        rgb, *_ = SyntheticReceipts("test", 1, 96, text_height=(0.1, 0.15)).render(0)
        arr = (rgb * 255).round().astype(np.uint8)
    else:
        shape = (64, 64) if family == "unet" else (64, 64, 3)
        arr = (np.random.default_rng(1).random(shape) * 255).astype(np.uint8)
    path = folder / "img.png"
    Image.fromarray(arr).save(path)
    return str(path)


@pytest.mark.parametrize("family,with_post", [("yolo", False), ("yolo", True),
                                              ("frcnn", True), ("db", False), ("db", True),
                                              ("unet", False), ("unet", True)])
def test_predict_onnx_equals_predict_checkpoint(checkpoints, tmp_path, family, with_post):
    ckpt = checkpoints(family)
    onnx_path, report = export_checkpoint(ckpt, tmp_path / "export" / "m.onnx",
                                          with_postprocess=with_post)
    assert report.ok
    image = _image(family, tmp_path)
    alone = tmp_path / "deploy"  # the .onnx file without the checkpoint or the recipe
    alone.mkdir()
    shutil.copy(onnx_path, alone / "m.onnx")
    a, b = tmp_path / "ckpt_out", tmp_path / "onnx_out"
    assert main(["predict", str(ckpt), image, "--out", str(a)]) == 0
    assert main(["predict", str(alone / "m.onnx"), image, "--out", str(b)]) == 0
    names_a = sorted(p.name for p in a.iterdir())
    assert names_a == sorted(p.name for p in b.iterdir())
    if family == "unet":
        ma, mb = (np.asarray(Image.open(d / "img_mask.png")) for d in (a, b))
        assert ma.any() and np.array_equal(ma, mb)
        return
    ra, rb = (json.loads((d / "img.json").read_text()) for d in (a, b))
    if family == "db":
        assert len(ra["polygons"]) > 0 and len(ra["polygons"]) == len(rb["polygons"])
        for pa, pb in zip(ra["polygons"], rb["polygons"]):
            assert np.allclose(pa, pb, atol=1e-3)
        assert np.allclose(ra["scores"], rb["scores"], atol=1e-4)
        return
    assert len(ra["boxes_xyxy"]) > 0 and len(ra["boxes_xyxy"]) == len(rb["boxes_xyxy"])
    # same (label, box, score) rows; boxes whose scores tie to float precision may swap places
    rows_a, rows_b = (sorted(zip(r["labels"], np.round(r["boxes_xyxy"], 2).tolist(),
                                 np.round(r["scores"], 4).tolist())) for r in (ra, rb))
    for (la, ba, sa), (lb, bb, sb) in zip(rows_a, rows_b):
        assert la == lb and np.allclose(ba, bb, atol=2e-2) and abs(sa - sb) <= 2e-4
    ca, cb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert sorted(r["category_id"] for r in ca) == sorted(r["category_id"] for r in cb)


def test_db_polygons_over_exported_map(checkpoints, tmp_path):
    """The Python polygon step over the exported probability map = the head's own path."""
    from detlab.engine.checkpoint import load_task
    from detlab.export.checkpoint import val_batch

    path, _ = export_checkpoint(checkpoints("db"), tmp_path / "db.onnx", with_postprocess=True)
    predictor = OnnxPredictor(path)
    task = load_task(checkpoints("db"))
    batch, _, _ = val_batch(task)
    with torch.no_grad():
        ref = task.model.predict(batch, stage="test")
    prob = predictor.run(batch.images)["prob_map"]
    post = predictor.head.postprocessor.for_stage("test")
    for i, pred in enumerate(ref):
        polygons, scores = db_polygons(prob[i, 0], batch.meta[i], post)
        assert len(polygons) == len(pred.polygons)
        for p, q in zip(polygons, pred.polygons):
            assert np.allclose(p, q, atol=1e-3)


def test_predict_onnx_errors(checkpoints, tmp_path, capsys):
    path, _ = export_checkpoint(checkpoints("frcnn"), tmp_path / "raw.onnx")
    image = _image("frcnn", tmp_path)
    assert main(["predict", str(path), image, "--out", str(tmp_path / "o")]) == 2
    assert "--with-postprocess" in capsys.readouterr().err
    yolo, _ = export_checkpoint(checkpoints("yolo"), tmp_path / "y.onnx")
    assert main(["predict", str(yolo), image, "a.b=1", "--out", str(tmp_path / "o")]) == 2
    assert "overrides" in capsys.readouterr().err
    foreign = tmp_path / "plain.onnx"
    import onnx

    model = onnx.load(str(yolo))
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    assert main(["predict", str(foreign), image, "--out", str(tmp_path / "o")]) == 2
    assert "not written by `detlab export`" in capsys.readouterr().err


def test_a_head_given_as_a_class_is_stored_by_its_registered_name(checkpoints):
    """A variant recipe may give ``type=YOLOHead`` (the class): the ONNX metadata stored
    ``"<class '...YOLOHead'>"`` and ``predict MODEL.onnx`` refused the file (found on the
    VOC face photos of tools/make_real_like_data.py)."""
    from detlab.engine.checkpoint import load_task
    from detlab.export.checkpoint import export_metadata
    from detlab.models.heads.yolo import YOLOHead

    task = load_task(checkpoints("yolo"))
    task.recipe["model"]["head"]["type"] = YOLOHead
    meta = export_metadata(task, family="yolo", input_spec=None, category_ids=None,
                           size=(64, 64), with_postprocess=True, dynamic_batch=False,
                           names=["boxes"])
    assert meta["detlab.head"]["config"]["type"] == "YOLOHead"
