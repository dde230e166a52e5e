"""recipes/helmet_yolo_dense.py: the cs3darknet_s backbone gives P3-P5 to helmet_yolo's PAN, and
a few optimizer steps on one small batch lower the loss."""

from pathlib import Path

import torch

from detlab.data.collate import collate
from detlab.recipe import load
from detlab.registry import DATASETS, MODELS

ROOT = Path(__file__).resolve().parents[1]


def test_dense_recipe_builds_p3_p5_and_learns():
    torch.set_num_threads(1)
    cfg = load(ROOT / "recipes" / "helmet_yolo_dense.py",
               ["data.train.num_samples=4", "data.train.transforms=[]"])
    base = load(ROOT / "recipes" / "helmet_yolo.py")
    assert cfg["model"]["neck"] == base["model"]["neck"]  # only the backbone differs
    assert cfg["model"]["head"] == base["model"]["head"]
    torch.manual_seed(0)
    model = MODELS.build(cfg["model"])
    assert model.backbone.channels == [128, 256, 512] and model.backbone.strides == [8, 16, 32]
    dataset = DATASETS.build(cfg["data"]["train"])
    batch = collate([dataset[i] for i in range(4)], size_divisor=model.size_divisor)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        total = sum(model.loss(batch).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert min(losses[-3:]) < 0.8 * losses[0], losses
