"""Each detection/text recipe's own model and data: a few optimizer steps on one small batch
lower the total loss (the recipe can learn, before any long run)."""

from pathlib import Path

import pytest
import torch

from detlab.data.collate import collate
from detlab.recipe import load
from detlab.registry import DATASETS, MODELS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "recipe, overrides",
    [
        ("helmet_yolo_p2.py", ["data.train.num_samples=4", "data.train.transforms=[]"]),
        ("helmet_yolo.py", ["data.train.num_samples=4", "data.train.transforms=[]"]),
        # the dense CSP-Darknet backbone variant
        ("helmet_yolo_dense.py", ["data.train.num_samples=4", "data.train.transforms=[]"]),
        # ObjectCrops of full-HD frames; small frames and crops keep the 12 steps fast.
        ("helmet_cctv_fullhd.py", [
            "data.train.dataset.num_samples=4", "data.train.dataset.transforms=[]",
            "data.train.dataset.image_size=(120,200)", "data.train.dataset.img_size=96",
            "data.train.size=96", "data.train.dataset.min_size=10",
            "data.train.dataset.max_size=30"]),
    ],
)
def test_recipe_loss_decreases_on_a_fixed_batch(recipe, overrides):
    cfg = load(ROOT / "recipes" / recipe, overrides)
    torch.manual_seed(0)
    model = MODELS.build(cfg["model"])
    dataset = DATASETS.build(cfg["data"]["train"])
    batch = collate([dataset[i] for i in range(4)], size_divisor=model.size_divisor)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        total = sum(model.loss(batch).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < 0.8 * losses[0], losses
