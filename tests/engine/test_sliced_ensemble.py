"""Sliced inference with an ensemble or TTA: every member runs sliced (tiles -> frame pixels,
merged / blended as alone), then the members' frame predictions are fused. An ensemble of a
checkpoint with itself is its sliced prediction; the h-flipped view of a frame is the mirrored
sliced prediction of the mirrored frame (a symmetric tile grid); ``detlab eval A.ckpt B.ckpt``
with ``inference.slicing`` in the recipe scores the mean of the two sliced maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detlab.cli import main
from detlab.engine.ensemble import TTASettings, ensemble_predictions
from detlab.engine.inference import array_loader, data_module, predictions
from detlab.engine.sliced import SlicedCollate, SlicedDataset, sliced_loader, sliced_step
from detlab.engine.sliced_views import sliced_views
from detlab.postprocess.ensemble import EnsembleSettings
from detlab.postprocess.slicing import SlicedInference

from ensemble_models import (assert_same_predictions, prediction_numbers, tiny_task,
                             write_checkpoint)

torch.set_num_threads(1)

# 64 px frames, 40 px tiles, overlap 0.25: windows x, y in {[0, 40], [24, 64]}, a grid that is
# its own mirror image. NMS at IoU 0.5 inside a member leaves no two same-label boxes with
# IoU > the ensemble's 0.55, so WBF / NMS of a member with itself only joins duplicates.
SLICED = ["+inference.slicing.slice_height=40", "+inference.slicing.overlap=0.25",
          "+inference.slicing.merge='nms'", "+inference.slicing.match_metric='iou'",
          "+inference.slicing.match_threshold=0.5"]
BOX = ["model.head.postprocessor.score_threshold=0.0"]
DB = ["model.head.postprocessor.min_size=1"]  # polygons of the untrained map's small blobs


@pytest.mark.parametrize("kind, extra, method", [
    ("yolo", BOX, "wbf"), ("yolo", BOX, "nms"), ("db", DB, "wbf"), ("unet", [], "wbf")])
def test_ensemble_of_a_sliced_checkpoint_with_itself_is_its_sliced_prediction(kind, extra,
                                                                              method):
    task = tiny_task(kind, extra=[*SLICED, *extra])
    with torch.inference_mode():
        single = [p for preds, _ in predictions(task, data_module(task).val_dataloader(), "cpu",
                                                data=data_module(task)) for p in preds]
        loaders = [data_module(task).val_dataloader() for _ in range(2)]
        pair = [p for preds, _ in ensemble_predictions(
            [task, task], loaders, "cpu", ["a", "a"], EnsembleSettings(method=method), None)
            for p in preds]
    assert len(single) == 2
    assert_same_predictions(pair, single, atol=1e-5)
    if kind == "db":
        assert sum(len(s.polygons) for s in single) >= 1


def _sliced(task, image: np.ndarray):
    data = data_module(task)
    settings = SlicedInference.from_recipe(task.recipe)
    dataset = SlicedDataset(array_loader(data, [image], ["x"]).dataset, settings)
    return SlicedCollate(data.size_divisor)([dataset[0]]), settings


# DB and U-Net tiles are crops of the frame padded to a multiple of 32: 32 px tiles (step 16) are not
# padded, so the flipped tile is exactly the mirrored frame's tile (a pad would switch sides).
DB_TILES = ["inference.slicing.slice_height=32", "inference.slicing.overlap=0.5"]


@pytest.mark.parametrize("kind, extra", [("yolo", BOX), ("db", DB_TILES), ("unet", DB_TILES)])
def test_sliced_hflip_view_is_the_mirrored_prediction_of_the_mirrored_frame(kind, extra):
    task = tiny_task(kind, extra=[*SLICED, *extra])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sliced, settings = _sliced(task, image)
    mirrored, _ = _sliced(task, np.ascontiguousarray(image[:, ::-1]))
    assert len(sliced.windows) >= 4  # a grid that is its own mirror image
    assert {(64 - x2, y1, 64 - x1, y2) for x1, y1, x2, y2 in sliced.windows} == set(
        sliced.windows)
    with torch.inference_mode():
        (view,), = sliced_views(task, sliced, settings, "cpu", [("h", 1.0)])
        (plain,), _ = sliced_step(task.model, mirrored, settings, "cpu")
    if plain.boxes is not None:  # by hand: x -> 64 - x of the mirrored frame's boxes
        assert len(plain.boxes) > 5
        want = torch.stack([64 - plain.boxes[:, 2], plain.boxes[:, 1], 64 - plain.boxes[:, 0],
                            plain.boxes[:, 3]], 1)
        key_v = view.scores.argsort(descending=True, stable=True)
        key_p = plain.scores.argsort(descending=True, stable=True)
        torch.testing.assert_close(view.boxes[key_v], want[key_p], atol=1e-3, rtol=0)
        torch.testing.assert_close(view.scores[key_v], plain.scores[key_p], atol=1e-6, rtol=0)
    elif plain.probs is not None:  # (tiles are blended in mirrored order: float sums)
        torch.testing.assert_close(view.probs, plain.probs.flip(-1), atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(view.extras["prob_map"], plain.extras["prob_map"].flip(-1),
                                   atol=1e-5, rtol=0)
    # and the view is not the plain (unflipped) sliced prediction of the frame
    with torch.inference_mode():
        (same,), _ = sliced_step(task.model, sliced, settings, "cpu")
    assert prediction_numbers(same).shape != prediction_numbers(view).shape or not torch.allclose(
        prediction_numbers(same), prediction_numbers(view), atol=1e-4)


def test_recipe_tta_with_slicing_fuses_the_sliced_views():
    task = tiny_task("unet", extra=[*SLICED, "+inference.tta.flips=['none', 'h']"])
    data = data_module(task)
    settings = SlicedInference.from_recipe(task.recipe)
    with torch.inference_mode():
        fused = [p for preds, _ in predictions(task, data.val_dataloader(), "cpu", data=data)
                 for p in preds]
        per_view = [views for sliced in sliced_loader(data, data.val_dataloader(), settings)
                    for views in sliced_views(task, sliced, settings, "cpu",
                                              TTASettings(flips=("none", "h")).views)]
    assert len(fused) == len(per_view) == 2
    for p, (a, b) in zip(fused, per_view):  # by hand: the mean of the two views, thresholded
        mean = (a.probs + b.probs) / 2
        torch.testing.assert_close(p.probs, mean, atol=1e-6, rtol=0)
        assert torch.equal(p.mask, mean >= task.model.head.threshold)
        assert not torch.allclose(a.probs, b.probs, atol=1e-4)


def test_cli_eval_of_two_sliced_checkpoints_round_trip(tmp_path):
    a = write_checkpoint(tiny_task("unet", 0, SLICED), tmp_path / "a.ckpt")
    b = write_checkpoint(tiny_task("unet", 1, SLICED), tmp_path / "b.ckpt")

    def run(*argv) -> dict:
        out = tmp_path / f"m{len(list(tmp_path.glob('*.json')))}.json"
        assert main(["eval", *map(str, argv), "--quiet", "--json", str(out)]) == 0
        return json.loads(out.read_text())

    # the oracle: each checkpoint's sliced probabilities (the single-model loop), averaged by
    # hand, thresholded and scored by the first recipe's evaluator
    from detlab.engine.checkpoint import load_task

    ta, tb = load_task(a), load_task(b)
    with torch.inference_mode():
        streams = [predictions(t, data_module(t).val_dataloader(), "cpu", data=data_module(t))
                   for t in (ta, tb)]
        ta.evaluator.reset()
        for (pa, batch), (pb, _) in zip(*streams):
            merged = []
            for x, y in zip(pa, pb):
                probs = (x.probs + y.probs) / 2
                merged.append(type(x)(probs=probs, mask=probs >= ta.model.head.threshold,
                                      extras={"threshold": ta.model.head.threshold}))
            ta.evaluator.update(merged, batch)
        want = ta.evaluator.compute()
    got = run(a, b)
    assert got == pytest.approx(want, abs=1e-6, nan_ok=True)
    assert got["pr_auc"] > 0
    assert run(a, b, "inference.slicing=None") != pytest.approx(got, abs=1e-6, nan_ok=True)
    single = run(a)
    assert run(a, a) == pytest.approx(single, abs=1e-6, nan_ok=True)
    assert run(a, b) != pytest.approx(single, abs=1e-6, nan_ok=True)


def test_cli_predict_of_two_sliced_box_checkpoints(tmp_path):
    from PIL import Image

    from detlab.engine.checkpoint import load_task
    from detlab.engine.inference import file_loader
    from detlab.postprocess.ensemble import merge_boxes
    from test_ensemble import _expected, _rows

    a = write_checkpoint(tiny_task("yolo", 0, [*SLICED, *BOX]), tmp_path / "a.ckpt")
    b = write_checkpoint(tiny_task("yolo", 1, [*SLICED, *BOX]), tmp_path / "b.ckpt")
    images = tmp_path / "img"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(
            images / f"im{i}.png")
    assert main(["predict", str(a), str(b), str(images), "--out", str(tmp_path / "out")]) == 0
    singles = []
    with torch.inference_mode():  # each checkpoint alone, sliced (its recipe's slicing)
        for t in (load_task(a), load_task(b)):
            data = data_module(t)
            singles.append([p for preds, _ in predictions(
                t, file_loader(data, [str(images)]), "cpu", data=data) for p in preds])
    for i, (p, q) in enumerate(zip(*singles)):  # by hand: WBF of the two sliced predictions
        assert float(p.boxes[:, 2].max()) > 64  # tiles right of x = 64 of the 96 px frame
        merged = merge_boxes([p.boxes, q.boxes], [p.scores, q.scores], [p.labels, q.labels],
                             [1.0, 1.0], EnsembleSettings())
        assert 0 < len(merged[0]) < len(p.boxes) + len(q.boxes)
        np.testing.assert_allclose(_rows(tmp_path / "out", f"im{i}.png"), _expected(*merged),
                                   atol=1e-3)
