"""Sliced inference through the CLI: ``detlab eval`` and ``detlab predict`` with
``inference.slicing`` give the same frame predictions, a frame smaller than the tile is predicted
whole (== the unsliced prediction), and ``detlab sweep`` runs the network once per tile
geometry while it varies the merge knobs."""

from __future__ import annotations

import json

import pytest
import torch

from detlab.cli import main
from detlab.models.fuse import is_tracing  # the fold's own forwards are not counted
from detlab.postprocess.slicing import merge_detections
from test_predict_matches_eval import (YOLO_BODY, _check_boxes, _coco_files, _eval_predictions,
                                       _recipe, _train)

# Val frames 48x80, 80x56, 64x64 (letterboxed to 64): 40 px tiles, overlap 0.25 (step 30)
# give 3x2, 2x3 and 2x2 tiles, each letterboxed 40 -> 64 like a whole val image.
SLICED = ["+inference.slicing.slice_height=40", "+inference.slicing.overlap=0.25",
          "model.head.postprocessor.score_threshold=0.0",
          "model.head.postprocessor.max_detections=20"]


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    root = tmp_path_factory.mktemp("slicing")
    ann, img = _coco_files(root / "coco", 2)
    recipe = _recipe(root / "yolo.py", "helmet_yolo_p2.py",
                     YOLO_BODY.format(ann=str(ann), img=str(img)))
    return _train(recipe, root / "runs", []), img, root


def test_sliced_eval_equals_sliced_predict(yolo, monkeypatch, tmp_path):
    ckpt, img, _ = yolo
    seen = _eval_predictions(monkeypatch, ckpt, SLICED)
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), str(img), *SLICED, "--out", str(out)]) == 0
    _check_boxes(seen, out)
    # merged over tiles (greedy NMM, IoS 0.5, the defaults): boxes inside their frame
    for pred, meta in seen.values():
        h, w = meta["orig_size"]
        assert len(pred.boxes) > 0 and float(pred.boxes.min()) >= 0
        assert float(pred.boxes[:, 2].max()) <= w and float(pred.boxes[:, 3].max()) <= h


def test_frame_smaller_than_tile_is_predicted_whole(yolo, monkeypatch):
    ckpt, _, _ = yolo
    plain = _eval_predictions(monkeypatch, ckpt, SLICED[2:])
    # 100 px tiles > every frame: one tile = the frame, preprocessed like the val image; NMS at
    # IoU >= 1 drops only exact duplicates, so the merge keeps the head's own boxes.
    whole = _eval_predictions(monkeypatch, ckpt, [
        "+inference.slicing.slice_height=100", "+inference.slicing.full_image=False",
        "+inference.slicing.merge='nms'", "+inference.slicing.match_metric='iou'",
        "+inference.slicing.match_threshold=1.0",
        *SLICED[2:]])
    # (The untrained model's boxes are clipped to the frame, so some are exact duplicates:
    # the same NMS on the unsliced predictions is the reference.)
    assert plain.keys() == whole.keys()
    for name, (pred, _) in plain.items():
        got = whole[name][0]
        want = merge_detections(pred.boxes, pred.scores, pred.labels, "nms", "iou", 1.0)
        assert len(want[0]) > 0
        torch.testing.assert_close(got.boxes, want[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(got.scores, want[1], atol=1e-6, rtol=0)
        assert got.labels.tolist() == want[2].tolist()


def test_sweep_merge_knobs_reuse_tile_outputs(yolo, monkeypatch, tmp_path, capsys):
    ckpt, _, _ = yolo
    from detlab.commands.sweep import run_sweep
    from detlab.engine.trainer import load_task
    from detlab.models.model import Model

    calls = []
    forward = Model.forward
    monkeypatch.setattr(Model, "forward", lambda self, x: (
        None if is_tracing() else calls.append(len(x))) or forward(self, x))
    task = load_task(ckpt, SLICED)
    grid = {"inference.slicing.merge": ["nms", "greedy_nmm"],
            "inference.slicing.match_threshold": [0.3, 0.6]}
    result = run_sweep(task, grid)
    assert len(result) == 4 and result.network_passes == 1
    # 16 tiles (2 per forward on the CPU) + the 3 frames: the network ran once in all
    assert sum(calls) == 16 + 3 and max(calls) == 2
    calls.clear()
    # each row equals `detlab eval` with that setting
    row = next(r for r in result if r["settings"] == {"inference.slicing.merge": "nms",
                                                      "inference.slicing.match_threshold": 0.3})
    js = tmp_path / "m.json"
    assert main(["eval", str(ckpt), *SLICED, "+inference.slicing.merge='nms'",
                 "+inference.slicing.match_threshold=0.3", "--quiet", "--json", str(js)]) == 0
    metrics = json.loads(js.read_text())
    assert metrics == pytest.approx(row["metrics"], abs=1e-12, nan_ok=True)
    # a tile-size knob re-runs the network once per value; CLI prints the table
    assert main(["sweep", str(ckpt), "inference.slicing.slice_height=40,48"]) == 0
    assert "inference 2x" in capsys.readouterr().out


def test_bad_slicing_setting_is_one_error_line(yolo, capsys):
    ckpt, _, _ = yolo
    assert main(["eval", str(ckpt), "+inference.slicing.overlap=1.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: inference.slicing.overlap=1.0: expected a number in [0, 1)"]


def test_sweep_head_and_merge_knobs_together(yolo, monkeypatch, tmp_path):
    # A head post-processing key too: the raw tile outputs are cached, the head re-runs.
    ckpt, _, _ = yolo
    from detlab.commands.sweep import run_sweep
    from detlab.engine.trainer import load_task
    from detlab.models.model import Model

    calls = []
    forward = Model.forward
    monkeypatch.setattr(Model, "forward", lambda self, x: (
        None if is_tracing() else calls.append(len(x))) or forward(self, x))
    grid = {"model.head.postprocessor.score_threshold": [0.0, 0.02],
            "inference.slicing.merge": ["nms", "greedy_nmm"]}
    result = run_sweep(load_task(ckpt, SLICED), grid)
    assert len(result) == 4 and sum(calls) == 16 + 3
    row = next(r for r in result if r["settings"] == {
        "model.head.postprocessor.score_threshold": 0.02, "inference.slicing.merge": "nms"})
    js = tmp_path / "m.json"
    assert main(["eval", str(ckpt), *SLICED, "model.head.postprocessor.score_threshold=0.02",
                 "+inference.slicing.merge='nms'", "--quiet", "--json", str(js)]) == 0
    assert json.loads(js.read_text()) == pytest.approx(row["metrics"], abs=1e-12, nan_ok=True)
    with pytest.raises(Exception, match="cannot sweep 'inference.slicing.tile'"):
        run_sweep(load_task(ckpt, SLICED), {"inference.slicing.tile": [1, 2]})
