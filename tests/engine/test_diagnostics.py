"""Diagnostics: collapse_check on hand-made and evaluator-made metrics, the callback's files
and warning, each loss term logged separately, and batch pictures with masks/boxes/polygons."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from detlab.engine.diagnostics import DiagnosticsCallback, collapse_check
from detlab.engine.batch_view import batch_summary, render_batch
from detlab.evaluation.segmentation import SegmentationEvaluator
from detlab.structures import Batch, Prediction

HEALTHY = dict(pr_auc=0.62, prevalence=0.005, max_prob=0.98, frac_above_min_threshold=0.2,
               best_threshold=0.41)

CASES = [
    # (name, changes to HEALTHY, substring of the warning or None)
    ("healthy", {}, None),
    ("all_below_min", dict(max_prob=5e-5, frac_above_min_threshold=0.0), "below the lowest"),
    ("pr_auc_near_prevalence", dict(pr_auc=0.009), "within 2x of the prevalence"),
    ("pr_auc_just_above_2x", dict(pr_auc=0.0101), None),
    ("best_at_bottom", dict(best_threshold=1e-4), "bottom of the search range"),
    ("no_positives", dict(prevalence=0.0, pr_auc=0.0), "no lesion pixel"),
]


@pytest.mark.parametrize("name,change,expected", CASES, ids=[c[0] for c in CASES])
def test_collapse_check_table(name, change, expected):
    message = collapse_check({**HEALTHY, **change})
    if expected is None:
        assert message is None
    else:
        assert expected in message and "show-data" in message


def test_collapse_check_ignores_other_metrics():
    assert collapse_check({"map": 0.3}) is None


def _metrics(probs: torch.Tensor, gt: torch.Tensor) -> dict:
    ev = SegmentationEvaluator()
    meta = [{"image_id": i, "orig_size": tuple(gt.shape[-2:])} for i in range(len(gt))]
    ev.update([Prediction(probs=p) for p in probs],
              Batch(images=torch.zeros(len(gt), 1, *gt.shape[-2:]),
                    targets=[{"mask": g.float()} for g in gt], meta=meta))
    return ev.compute()


@pytest.fixture
def lesions():
    gen = torch.Generator().manual_seed(0)
    gt = torch.zeros(6, 1, 32, 32, dtype=torch.bool)
    gt[:3, :, 10:13, 8:20] = True  # ~3.5 % of the pixels of half of the slices
    noise = torch.rand(6, 1, 32, 32, generator=gen)
    return gt, noise


@pytest.mark.parametrize("value", [1e-6, 0.02, 0.3])
def test_warning_fires_for_constant_predictor(lesions, value):
    gt, _ = lesions
    m = _metrics(torch.full(gt.shape, value), gt)
    assert m["pr_auc"] == pytest.approx(m["prevalence"])  # a constant scores the prevalence
    assert "collapsed" in collapse_check(m)


def test_no_warning_for_a_good_predictor(lesions):
    gt, noise = lesions
    good = torch.where(gt, 0.6 + 0.4 * noise, 0.3 * noise)  # separates, with noise
    m = _metrics(good, gt)
    assert m["pr_auc"] > 0.9 and collapse_check(m) is None


def _trainer(epoch=2):
    return SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=epoch)


def _val_batch():
    images = torch.rand(2, 3, 32, 32)
    masks = [torch.zeros(1, 32, 32), torch.zeros(1, 32, 32)]
    masks[1][0, 5:9, 5:9] = 1
    meta = [{"image_id": f"c:{i}", "orig_size": (32, 32), "input_size": (32, 32),
             "display_channel": 1} for i in range(2)]
    return Batch(images=images, targets=[{"mask": m} for m in masks], meta=meta)


def test_callback_writes_files_and_warns(tmp_path, caplog):
    cb = DiagnosticsCallback(tmp_path, num_attention_slices=1)
    batch = _val_batch()
    preds = [Prediction(probs=torch.full((1, 32, 32), 0.01),
                        extras={"attention": [torch.rand(1, 8, 8), torch.rand(1, 16, 16)]})
             for _ in range(2)]
    evaluator = SegmentationEvaluator()
    evaluator.update(preds, batch)
    module = SimpleNamespace(evaluator=evaluator, last_metrics=evaluator.compute())
    trainer = _trainer()
    cb.on_validation_epoch_start(trainer, module)
    cb.on_validation_batch_end(trainer, module, preds, batch, 0)
    assert [s["name"] for s in cb._picked] == ["c:1"]  # the slice with a lesion is preferred
    with caplog.at_level(logging.WARNING, logger="detlab.diagnostics"):
        cb.on_validation_end(trainer, module)
    diag = tmp_path / "diagnostics"
    assert Image.open(diag / "prob_hist_epoch2.png").size == (720, 300)
    assert "probability histogram over 2048 pixels (16 positive)" in (
        diag / "prob_hist_epoch2.txt").read_text()
    attention = Image.open(diag / "attention_epoch2.png")
    assert attention.width > 4 * 160  # image, probability, two gates
    assert "collapsed" in caplog.text and "epoch 2" in (diag / "warnings.log").read_text()
    # sanity-check validation writes nothing
    cb2 = DiagnosticsCallback(tmp_path / "b")
    cb2.on_validation_end(SimpleNamespace(sanity_checking=True, is_global_zero=True,
                                          current_epoch=0), module)
    assert not (tmp_path / "b").exists()


def test_callback_writes_first_training_batch_once(tmp_path):
    cb = DiagnosticsCallback(tmp_path)
    cb.on_train_batch_start(_trainer(), None, _val_batch(), 0)
    first = (tmp_path / "diagnostics" / "train_batch.png").stat().st_mtime_ns
    cb.on_train_batch_start(_trainer(), None, _val_batch(), 1)
    assert (tmp_path / "diagnostics" / "train_batch.png").stat().st_mtime_ns == first
    summary = (tmp_path / "diagnostics" / "train_batch.txt").read_text()
    assert "1 of 2 images have foreground" in summary


def test_each_loss_term_logged_separately():
    from detlab.engine.task import DetlabTask
    from detlab.recipe import Recipe

    recipe = Recipe({
        "model": dict(type="Model",
                      backbone=dict(type="UNetEncoder", depth=2, init_features=4),
                      head=dict(type="AttentionUNetHead", num_classes=1, decoder_channels=[4],
                                loss=dict(type="CombinedLoss", terms=[
                                    dict(type="FocalTverskyLoss", weight=1.0),
                                    dict(type="FocalLoss", weight=10.0)]))),
        "train": {},
    })
    task = DetlabTask(recipe)
    logged = {}
    task.log = lambda key, value, **kw: logged.__setitem__(key, float(value))
    batch = _val_batch()
    batch.images = batch.images[:, :1]
    total = task.training_step(batch, 0)
    assert set(logged) == {"train/loss_focal_tversky", "train/loss_focal", "train/loss"}
    assert logged["train/loss"] == pytest.approx(
        logged["train/loss_focal_tversky"] + logged["train/loss_focal"])
    assert float(total.detach()) == pytest.approx(logged["train/loss"])


def test_render_batch_draws_masks_boxes_and_polygons():
    images = torch.zeros(2, 1, 40, 40)
    targets = [
        {"mask": torch.zeros(1, 40, 40)},
        {"boxes": torch.tensor([[5.0, 5.0, 20.0, 30.0]]), "labels": torch.tensor([0]),
         "polygons": [np.array([[25, 25], [35, 25], [35, 35]], dtype=np.float32)]},
    ]
    targets[0]["mask"][0, 10:20, 10:20] = 1
    meta = [{"image_id": "a", "input_size": (40, 40)}, {"image_id": "b", "input_size": (40, 40)}]
    batch = Batch(images=images, targets=targets, meta=meta)
    picture = np.asarray(render_batch(batch, tile=40))
    red = (picture[..., 0] > 150) & (picture[..., 1] < 120)
    assert red.sum() >= 100  # the 10x10 mask overlay (and the red box outline)
    green = (picture[..., 1] > 150) & (picture[..., 0] < 120)
    assert green.any()  # polygon outline
    text = batch_summary(batch)
    assert "1 of 1 images have foreground" in text and "boxes per image: [1]" in text
