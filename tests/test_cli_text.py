"""CLI round trip of the DB text recipe on tiny settings: train -> eval -> predict (JSON
polygons + overlay), post-processing overrides at eval/predict time, and the HRNet variant's
placeholder data paths failing with a clear error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shapely.geometry import Polygon

from detlab.cli import main
from detlab.data.datasets.synthetic_receipts import SyntheticReceipts

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "receipt_dbnet.py"
TINY = [
    "data.train.num_samples=8", "data.val.num_samples=4", "data.train.image_size=96",
    "data.val.image_size=96", "data.train.text_height=[0.1, 0.15]",
    "data.val.text_height=[0.1, 0.15]", "data.batch_size=4", "data.num_workers=0",
    "train.max_epochs=1", "train.progress_bar=false", "model.neck.inner_channels=16",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("runs")
    assert main(["train", str(RECIPE), *TINY, "--work-dir", str(work)]) == 0
    return work / "receipt_dbnet" / "version_0"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    rgb, *_ = SyntheticReceipts("test", 1, 96, text_height=(0.1, 0.15)).render(0)
    path = tmp_path_factory.mktemp("images") / "receipt.png"
    Image.fromarray((rgb * 255).round().astype(np.uint8)).save(path)
    return path


def test_train_logs_hmean_and_db_terms(trained) -> None:
    with open(trained / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("val/hmean") not in (None, "") for r in rows)
    header = set(rows[0])
    assert {"train/loss_prob_epoch", "train/loss_thresh_epoch", "train/loss_binary_epoch"} <= header
    resolved = json.loads((trained / "recipe.json").read_text())
    assert resolved["model"]["head"]["type"] == "DBHead"
    assert resolved["model"]["head"]["loss"]["negative_ratio"] == 3.0


def test_eval_from_checkpoint(trained, tmp_path) -> None:
    out = tmp_path / "m.json"
    ckpt = trained / "checkpoints" / "best.ckpt"
    assert main(["eval", str(ckpt), "model.head.postprocessor.polygon_unclip_ratio=2.1",
                 "--json", str(out), "--quiet"]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"precision", "recall", "hmean"}


def _threshold(ckpt: Path, image: Path) -> float:
    """A binarization threshold that leaves ~15 % of the pixels on for this barely trained
    model (its probabilities are not calibrated yet: small checkerboard blobs), so that
    polygons exist."""
    from detlab.data.datasets.image_files import ImageFiles
    from detlab.engine.trainer import load_task

    task = load_task(ckpt)
    sample = ImageFiles([image])[0]
    with torch.no_grad():
        prob = task.model(sample["image"][None])["prob_logits"].sigmoid()
    return float(np.clip(torch.quantile(prob.flatten(), 0.85), 0.0, 0.99))


def _predict(ckpt: Path, image: Path, out: Path, overrides: list[str]) -> list[np.ndarray]:
    assert main(["predict", str(ckpt), str(image), *overrides, "--out", str(out)]) == 0
    record = json.loads((out / "receipt.json").read_text())
    assert (out / "receipt_overlay.png").is_file()
    assert len(record["polygons"]) == len(record["scores"])
    return [np.asarray(p) for p in record["polygons"]]


def test_predict_writes_polygons_and_unclip_override_changes_them(trained, image, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    t = _threshold(ckpt, image)
    base = [f"model.head.postprocessor.binarize_threshold={t}",
            "model.head.postprocessor.box_threshold=0.0", "model.head.postprocessor.min_size=0.0"]
    small = _predict(ckpt, image, tmp_path / "a", base)
    large = _predict(ckpt, image, tmp_path / "b",
                     [*base, "model.head.postprocessor.polygon_unclip_ratio=2.1"])
    assert small and len(small) == len(large)
    for p in small:  # original image pixels, pixel-edge clipping to [0, 96] (ops.coords)
        assert p.shape[1] == 2 and p.min() >= 0 and p.max() <= 96
    area = sum(Polygon(p).area for p in small)
    assert sum(Polygon(p).area for p in large) > area > 0


def test_hrnet_variant_without_data_is_a_clear_error(capsys) -> None:
    """Building the model would take seconds; the data error is checked on the dataset."""
    from detlab.data.datamodule import build_dataset
    from detlab.errors import DetlabError
    from detlab.recipe import load

    variant = ROOT / "recipes" / "receipt_dbnet_hrnet.py"
    assert main(["show", str(variant)]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["model"]["backbone"]["name"] == "hrnet_w44"
    assert resolved["data"]["train"]["img_size"] == 1024
    recipe = load(variant)
    for split in ("train", "val"):
        with pytest.raises(DetlabError, match="annotation file not found.*ann_file=PATH"):
            build_dataset(recipe["data"][split], key=f"data.{split}")
