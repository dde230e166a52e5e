"""detlab export: onnxruntime parity of raw outputs and post-processing graphs for the four
heads, dynamic batch, metadata, and the errors a user can make."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
import torch

from export_checkpoints import checkpoints  # noqa: F401  (the session fixture)

from detlab.cli import main
from detlab.export.checkpoint import export_checkpoint, val_batch
from detlab.export.onnx import read_metadata
from detlab.export.parity import session

FAMILIES = ["yolo", "frcnn", "db", "unet"]


@pytest.mark.parametrize("family", FAMILIES)
def test_raw_outputs_match_onnxruntime(checkpoints, tmp_path, family):
    path, report = export_checkpoint(checkpoints(family), tmp_path / "m.onnx")
    assert report.ok, report.lines()
    expected = {"yolo": {"cls_logits", "box_dist", "anchor_points", "strides"},
                "frcnn": {"proposals", "cls_logits", "box_deltas"},
                "db": {"prob_logits", "thresh", "binary"},
                "unet": {"logits", "attention.0", "attention.3"}}[family]
    assert expected <= set(report.max_abs_diff)
    assert max(report.max_abs_diff.values()) <= 1e-4
    meta = read_metadata(path)
    assert meta["detlab.head_family"] == {"frcnn": "faster_rcnn", "unet": "segmentation"}.get(
        family, family)
    spec = meta["detlab.input_spec"]
    assert {"channels", "mean", "std", "geometry"} <= set(spec)
    assert meta["detlab.postprocess"] == "none" and meta["detlab.input_size"][0] >= 32


def test_cli_prints_parity_and_metadata_suffices(checkpoints, tmp_path, capsys):
    out = tmp_path / "unet.onnx"
    assert main(["export", str(checkpoints("unet")), "--format", "onnx", "--out", str(out),
                 "--opset", "17"]) == 0
    printed = capsys.readouterr().out
    assert "logits: max abs diff" in printed and "parity: ok" in printed
    model = onnx.load(str(out))
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["detlab.input_spec"]["channels"] == 1  # the grayscale CT recipe
    assert props["detlab.head_type"] == "AttentionUNetHead"
    assert model.opset_import[0].version == 17


def test_dynamic_batch_exported_at_one_runs_two(checkpoints, tmp_path):
    path, report = export_checkpoint(checkpoints("yolo"), tmp_path / "d.onnx",
                                     dynamic_batch=True)
    assert report.ok and report.batch_size == 2  # checked on the val batch of two
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    from detlab.engine.checkpoint import load_task

    task = load_task(checkpoints("yolo"))
    batch, _, _ = val_batch(task)
    images = batch.images[:2].float()
    got = session(path).run(None, {"images": images.numpy()})
    with torch.no_grad():
        ref = task.model(images)
    assert got[0].shape[0] == 2
    assert np.abs(got[0] - ref["cls_logits"].numpy()).max() <= 1e-4
    assert np.abs(got[1] - ref["box_dist"].numpy()).max() <= 1e-4


def test_yolo_postprocess_graph_keeps_identical_boxes(checkpoints, tmp_path):
    path, report = export_checkpoint(checkpoints("yolo"), tmp_path / "p.onnx",
                                     with_postprocess=True, dynamic_batch=True)
    assert report.ok, report.lines()
    assert len(report.kept) == 2 and min(report.kept) > 0
    assert report.max_abs_diff["boxes"] <= 1e-2 and report.max_abs_diff["scores"] <= 1e-4
    # the batch's padding rows: zeros, label -1
    task_images = val_batch(__import__("detlab.engine.checkpoint", fromlist=["x"]).load_task(
        checkpoints("yolo")))[0].images.float()
    boxes, scores, labels, num = session(path).run(None, {"images": task_images.numpy()})
    assert boxes.shape == (2, 300, 4) and list(num) == report.kept
    assert (labels[0, num[0]:] == -1).all() and (scores[0, num[0]:] == 0).all()


@pytest.mark.parametrize("family", ["frcnn", "db", "unet"])
def test_postprocess_graphs_match(checkpoints, tmp_path, family):
    path, report = export_checkpoint(checkpoints(family), tmp_path / "p.onnx",
                                     with_postprocess=True)
    assert report.ok, report.lines()
    if family == "frcnn":  # the full two-stage graph: RPN, RoIAlign, box head, NMS
        assert min(report.kept) > 0
    elif family == "db":
        assert report.max_abs_diff["prob_map"] <= 1e-4
    else:
        assert report.differing_pixels == {"mask": 0}
    assert read_metadata(path)["detlab.postprocess"] == "graph"


def test_parity_failure_exits_nonzero(checkpoints, tmp_path, monkeypatch, capsys):
    import detlab.export.checkpoint as exp

    strict = exp.check_parity
    monkeypatch.setattr(exp, "check_parity", lambda *a, **k: strict(*a, **k, atol=0.0))
    assert main(["export", str(checkpoints("db")), "--out", str(tmp_path / "x.onnx")]) == 1
    assert "parity: FAILED" in capsys.readouterr().out


def test_errors(checkpoints, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, bad)
    out = str(tmp_path / "x.onnx")
    assert main(["export", str(bad), "--out", out]) == 2
    assert "not a detlab checkpoint" in capsys.readouterr().err
    assert main(["export", str(checkpoints("yolo")), "--out", out, "--opset", "11"]) == 2
    assert "opset >= 16" in capsys.readouterr().err
    assert main(["export", str(checkpoints("frcnn")), "--out", out, "--dynamic-batch"]) == 2
    assert "batch 1 only" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    assert main(["export", str(checkpoints("yolo")), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime" in err and "pip install 'detlab[export]'" in err


@pytest.mark.parametrize("family", ["yolo", "unet"])
def test_torchscript_second_format(checkpoints, tmp_path, family):
    path, report = export_checkpoint(checkpoints(family), tmp_path / "m.pt", fmt="torchscript",
                                     with_postprocess=True, dynamic_batch=True)
    assert report.ok and report.runtime == "TorchScript", report.lines()
    extra = {"detlab.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    meta = json.loads(extra["detlab.json"])
    assert meta["detlab.postprocess"] == "graph" and "detlab.input_spec" in meta
    channels = meta["detlab.input_spec"]["channels"]
    h, w = meta["detlab.input_size"]
    assert loaded(torch.zeros(3, channels, h, w))[0].shape[0] == 3  # traced at 1, runs 3


def test_boxes_at_the_cut_may_differ_but_not_above_it():
    """At a max-detections cap among scores tied to float noise either runtime may keep
    either box (found by the export guide on a barely trained model keeping 300 boxes)."""
    import numpy as np

    from detlab.export.parity import match_boxes

    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50.]])
    ref = (boxes[:2], np.array([0.9, 0.001]), np.array([0, 0]))
    swapped = (boxes[[0, 2]], np.array([0.9, 0.001002]), np.array([0, 0]))
    assert match_boxes(ref, swapped, 0.01) == (0.0, pytest.approx(0.0), 1)
    above = (boxes[[0, 2]], np.array([0.9, 0.5]), np.array([0, 0]))
    assert match_boxes(ref, above, 0.01) is None
    four = np.concatenate([boxes, [[60, 60, 70, 70.]]])
    ref3 = (four[[0, 1, 3]], np.array([0.9, 0.6, 0.3]), np.array([0, 0, 0]))
    mid_differs = (four[[0, 2, 3]], np.array([0.9, 0.6, 0.3]), np.array([0, 0, 0]))
    assert match_boxes(ref3, mid_differs, 0.01) is None  # above the cut (0.3): a real change
