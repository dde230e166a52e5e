"""Tiny untrained models of every head family for the ensemble / TTA tests (64x64 synthetic
images that fill the network input: no padding, so a flip of the input is a flip of the image),
and checkpoints written from them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from detlab.engine.task import RECIPE_KEY, DetlabTask
from detlab.recipe import load

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["data.val.num_samples=2", "data.val.image_size=64", "data.batch_size=2",
          "data.num_workers=0"]
RECIPES = {
    # the model's own NMS at 0.5 < the ensemble's iou_thr 0.55: WBF / NMS of a model with
    # itself then only merges each box with its duplicate
    "yolo": ("helmet_yolo.py", ["data.val.img_size=64", "model.head.postprocessor.iou_threshold=0.5",
                                "model.head.postprocessor.max_detections=50"]),
    "db": ("receipt_dbnet.py", ["model.backbone.name=resnet10t",
                                "model.head.postprocessor.binarize_threshold=0.5",
                                "model.head.postprocessor.box_threshold=0.0"]),
    # every val image with a lesion: Dice / PR-AUC of untrained models are not all 0
    "unet": ("fracture_unet.py", ["model.head.decoder_channels=[16, 16, 16, 8, 8]",
                                  "data.val.positive_fraction=1.0",
                                  "data.val.lesion_fraction=0.05"]),
}
# the last layer of the dense heads (see tiny_task)
_SHARPEN = {"db": "prob_branch.6", "unet": "classifier"}


def tiny_task(kind: str, seed: int = 0, extra: list[str] = ()) -> DetlabTask:
    """An untrained task of ``kind`` (``yolo``, ``db``, ``unet``), weights from ``seed``."""
    name, overrides = RECIPES[kind]
    torch.manual_seed(seed)
    task = DetlabTask(load(ROOT / "recipes" / name, [*COMMON, *overrides, *extra]))
    task.eval()
    layer = _SHARPEN.get(kind)
    if layer is not None:
        # logits of the val images with std 3 and 80 % of the pixels below 0: maps and masks
        # with structure (a random head's are near-constant)
        from detlab.engine.inference import data_module

        module = task.model.head.get_submodule(layer)
        images = next(iter(data_module(task).val_dataloader())).images
        with torch.no_grad():
            key = "prob_logits" if kind == "db" else "logits"
            logits = task.model(images)[key]
            module.weight.mul_(3.0 / float(logits.std()))
            module.bias.zero_()
            logits = task.model(images)[key]
            module.bias.sub_(float(torch.quantile(logits.flatten(), 0.8)))
    return task


def write_checkpoint(task: DetlabTask, path: Path) -> Path:
    """``task`` as a ``.ckpt`` ``detlab eval`` / ``predict`` load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": task.state_dict(),
                RECIPE_KEY: json.dumps(task.recipe.provenance())}, path)
    return path


def prediction_numbers(pred) -> torch.Tensor:
    """A prediction's numbers as one tensor: boxes + scores + labels, probabilities + mask, or
    the DB probability map."""
    if pred.boxes is not None:
        return torch.cat([pred.boxes, pred.scores[:, None], pred.labels[:, None].float()], 1)
    if pred.probs is not None:
        return torch.cat([pred.probs.flatten(), pred.mask.float().flatten()])
    return pred.extras["prob_map"]


def assert_same_predictions(got, want, atol: float) -> None:
    """Two lists of frame predictions agree: numbers within ``atol``, polygons (DB) one for one
    within 1e-4 px; each prediction has numbers to compare."""
    import numpy as np

    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert prediction_numbers(w).numel() > 0
        torch.testing.assert_close(prediction_numbers(g), prediction_numbers(w), atol=atol,
                                   rtol=0)
        if w.polygons is not None:
            assert len(g.polygons) == len(w.polygons)
            for a, b in zip(g.polygons, w.polygons):
                np.testing.assert_allclose(a, b, atol=1e-4)
