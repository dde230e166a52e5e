"""Checkpoints for the export tests, written without training: the recipe's model with its
initial weights, nudged by a seeded perturbation so outputs are not all alike, saved in the
format ``detlab train`` writes (``state_dict`` + ``detlab_recipe`` provenance).

A helper module the export tests import, not a ``conftest.py``: a second module named
``conftest`` shadows ``tests/conftest.py`` for the tests that import from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detlab.engine.task import RECIPE_KEY, DetlabTask
from detlab.recipe import load

ROOT = Path(__file__).resolve().parents[2]

# Tiny settings per head family: (recipe, overrides).
TINY = {
    "unet": ("fracture_unet.py", [
        "data.val.num_samples=2", "data.val.image_size=64", "data.batch_size=2",
        "data.num_workers=0", "model.head.decoder_channels=[16, 16, 16, 8, 8]"]),
    "yolo": ("helmet_yolo_p2.py", [
        "data.val.num_samples=2", "data.val.image_size=64", "data.val.img_size=64",
        "data.batch_size=2", "data.num_workers=0",
        "model.head.postprocessor.score_threshold=0.05"]),
    "frcnn": ("digits_faster_rcnn.py", [
        "data.val.num_samples=2", "data.val.image_size=64", "data.val.digit_height=[8, 24]",
        "data.batch_size=2", "data.num_workers=0", "model.backbone.name=resnet10t",
        "model.neck.out_channels=16", "model.head.roi.box_head.representation_size=32"]),
    "db": ("receipt_dbnet.py", [
        "data.val.num_samples=2", "data.val.image_size=96", "data.val.text_height=[0.1, 0.15]",
        "data.batch_size=2", "data.num_workers=0", "model.neck.inner_channels=16",
        "model.head.postprocessor.binarize_threshold=0.45",
        "model.head.postprocessor.box_threshold=0.4"]),
}


def write_checkpoint(family: str, path: Path, seed: int = 0) -> Path:
    """A detlab checkpoint of the tiny ``family`` model (see the module docstring)."""
    name, overrides = TINY[family]
    recipe = load(ROOT / "recipes" / name, overrides)
    torch.manual_seed(seed)
    task = DetlabTask(recipe)
    with torch.no_grad():  # random, non-degenerate outputs (BN running stats stay valid)
        for name_, p in task.named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
            if name_.endswith("bias") and float(p.max()) < -2:
                p.zero_()  # a low-prior output bias: probabilities then cross the thresholds
    torch.save({"state_dict": task.state_dict(), RECIPE_KEY: json.dumps(recipe.provenance())},
               path)
    return path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """``family -> checkpoint path``, written on first use."""
    folder = tmp_path_factory.mktemp("export_ckpts")
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = write_checkpoint(family, folder / f"{family}.ckpt")
        return cache[family]

    return get
