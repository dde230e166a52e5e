"""Shared test settings: one thread per process (the suite runs with -n 2 on 2 cores)."""

import csv
import os
from pathlib import Path

import pytest
import torch

from detlab.cli import main

os.environ.setdefault("PYTHONHASHSEED", "0")
torch.set_num_threads(1)


ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "fracture_unet.py"
TINY = [
    "data.train.num_samples=16", "data.val.num_samples=8", "data.train.image_size=64",
    "data.val.image_size=64", "data.batch_size=4", "data.num_workers=0",
    "train.max_epochs=1", "train.progress_bar=false",
    "model.head.decoder_channels=[16, 16, 16, 8, 8]",
]


def metric_epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return sorted({int(r["epoch"]) for r in rows if r.get("val/pr_auc")})


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One tiny fracture_unet run shared by the CLI tests: (work_dir, run_dir)."""
    work = tmp_path_factory.mktemp("runs")
    assert main(["train", str(RECIPE), *TINY, "--work-dir", str(work)]) == 0
    run_dir = work / "fracture_unet" / "version_0"
    return work, run_dir


TINY_YOLO = [
    "data.train.num_samples=8", "data.val.num_samples=4", "data.train.image_size=64",
    "data.train.img_size=64", "data.val.image_size=64", "data.val.img_size=64",
    "data.batch_size=4", "data.num_workers=0", "train.max_epochs=1", "train.progress_bar=false",
]


@pytest.fixture(scope="session")
def det_ckpt(tmp_path_factory) -> str:
    """One tiny helmet_yolo_p2 checkpoint (8 train / 4 val images at 64 px, 1 epoch) shared
    by the sweep and eval tests: the path of its last.ckpt."""
    work = tmp_path_factory.mktemp("tiny_yolo")
    assert main(["train", str(ROOT / "recipes" / "helmet_yolo_p2.py"), *TINY_YOLO,
                 "--work-dir", str(work)]) == 0
    return str(next(work.glob("*/version_0/checkpoints/last.ckpt")))
