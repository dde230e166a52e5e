"""Sliced inference for every head family, without training: the U-Net's blended map against
MONAI's ``sliding_window_inference`` (constant weights), the DB map with one whole-frame tile,
and Faster R-CNN boxes merged in frame pixels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from detlab.data.datamodule import DataModule
from detlab.engine.sliced import sliced_predictions
from detlab.engine.task import DetlabTask
from detlab.postprocess.slicing import SlicedInference
from detlab.recipe import load

ROOT = Path(__file__).resolve().parents[2]
torch.manual_seed(0)


def _task(name: str, overrides: list[str]) -> tuple[DetlabTask, DataModule]:
    task = DetlabTask(load(ROOT / "recipes" / name, ["data.num_workers=0", *overrides]))
    task.eval()
    return task, DataModule(task.recipe.section("data"), size_divisor=task.model.size_divisor)


def _first(task, data, settings):
    with torch.inference_mode():
        return next(sliced_predictions(task, data, data.val_dataloader(), settings, "cpu"))


def test_unet_blend_equals_monai_sliding_window():
    monai_inferers = pytest.importorskip("monai.inferers")
    task, data = _task("fracture_unet.py", [
        "data.val.num_samples=2", "data.val.image_size=64", "data.val_batch_size=2",
        "model.head.decoder_channels=[16, 16, 16, 8, 8]", "model.head.prior_prob=0.5"])
    settings = SlicedInference(slice_height=40, overlap=0.25, full_image=False,
                               blend="constant", batch_size=3)
    preds, batch = _first(task, data, settings)

    def predictor(x):
        return task.model(x)["logits"][..., : x.shape[-2], : x.shape[-1]].sigmoid()

    with torch.inference_mode():  # MONAI: windows every int(40 * 0.75) = 30 px, last flush
        want = monai_inferers.sliding_window_inference(
            batch.images[:, :, :64, :64], (40, 40), 3, predictor, overlap=0.25,
            mode="constant")
    for i, pred in enumerate(preds):
        assert pred.probs.shape == (1, 64, 64) and float(want[i].std()) > 1e-5
        torch.testing.assert_close(pred.probs, want[i], atol=1e-6, rtol=0)
        # the head's one threshold, ">=" as everywhere (SegmentationPostProcessor)
        assert torch.equal(pred.mask, pred.probs >= task.model.head.threshold)


def test_db_one_whole_frame_tile_keeps_the_map():
    task, data = _task("receipt_dbnet.py", [
        "data.val.num_samples=1", "model.backbone.name=resnet10t",
        "model.neck.inner_channels=16"])
    frame = data.dataset("val")[0]
    h, w = frame["meta"]["orig_size"]
    settings = SlicedInference(slice_height=max(h, w) + 10, full_image=False, blend="gaussian")
    preds, batch = _first(task, data, settings)
    with torch.inference_mode():
        plain = task.model.predict(batch)[0].extras["prob_map"]
    want = F.interpolate(plain[None, None], size=(h, w), mode="bilinear",
                         align_corners=False)[0, 0]
    assert preds[0].extras["prob_map"].shape == (h, w)
    torch.testing.assert_close(preds[0].extras["prob_map"], want, atol=1e-5, rtol=0)
    assert isinstance(preds[0].polygons, list)


def test_faster_rcnn_tiles_merged_in_frame_pixels():
    task, data = _task("digits_faster_rcnn.py", [
        "data.val.num_samples=1", "model.backbone.name=resnet10t",
        "model.neck.out_channels=16", "model.head.roi.box_head.representation_size=32",
        "model.head.postprocessor.test.score_threshold=0.0"])
    settings = SlicedInference(slice_height=64, overlap=0.25, full_image=True, merge="nms",
                               match_metric="iou", match_threshold=1.0)
    preds, batch = _first(task, data, settings)
    with torch.inference_mode():
        plain = task.model.predict(batch, stage="test")[0]
    boxes = preds[0].boxes
    # 128 px frame, 64 px tiles at 0, 48, 64: 9 tiles of up to 100 boxes + the frame's own
    assert len(boxes) > len(plain.boxes)
    assert float(boxes.min()) >= 0 and float(boxes.max()) <= 128
    # boxes of tiles right of / below x = 64 exist: they were shifted to the frame
    assert float(boxes[:, 0].max()) > 64 and float(boxes[:, 1].max()) > 64
