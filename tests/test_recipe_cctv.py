"""recipes/helmet_cctv_fullhd.py: full-HD generated frames whose train heads are ~10x val's in
area, ObjectCrops training, and ``detlab eval`` / ``detlab predict`` through sliced inference.

The defaults are checked on annotations only (no 1920x1080 training in a test); a 1-epoch run
on small frames of the same recipe (tiny overrides) then shows that ``eval`` runs every frame as
its tiles plus the full frame, and scores exactly the boxes ``predict --split val`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detlab.cli import main
from detlab.models.fuse import is_tracing  # the fold's own forwards are not counted
from detlab.ops.slicing import tile_grid
from detlab.recipe import load
from detlab.registry import DATASETS

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "helmet_cctv_fullhd.py"
# 96x160 frames, 64 px crops and tiles (overlap 0.2: step 52): tiles at x = 0, 52, 96 and
# y = 0, 32, so 6 tiles + the full frame = 7 network inputs per val frame.
TINY = [
    "data.train.dataset.num_samples=4", "data.train.dataset.image_size=(96,160)",
    "data.train.dataset.img_size=64", "data.train.size=64", "data.train.dataset.min_size=8",
    "data.train.dataset.max_size=20", "data.val.num_samples=2", "data.val.image_size=(96,160)",
    "data.val.img_size=64", "data.val.min_size=6", "data.val.max_size=14",
    "inference.slicing.slice_height=64", "data.batch_size=2", "data.num_workers=0",
    "train.max_epochs=1", "train.limit_train_batches=1", "train.progress_bar=false",
    "model.head.postprocessor.max_detections=20",
]


def test_defaults_full_hd_frames_with_train_sizes_10x_val():
    cfg = load(RECIPE)
    train, val = DATASETS.build(cfg["data"]["train"]), DATASETS.build(cfg["data"]["val"])
    assert type(train).__name__ == "ObjectCrops" and train.ratio == 0.7
    frames = train.dataset
    assert (frames.height, frames.width) == (val.height, val.width) == (1080, 1920)
    assert (len(frames), len(val)) == (48, 12)

    def sizes(ds):
        boxes = np.concatenate([ds.annotations(i).boxes for i in range(len(ds))])
        return boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]

    (tw, th), (vw, vh) = sizes(frames), sizes(val)
    assert np.median(vw) == 19 and np.median(vh) == 35  # the team's median helmet
    ratio = np.median(tw * th) / np.median(vw * vh)
    assert 8 < ratio < 12, ratio  # "train's median box area is 10x val's"
    # Crops of 640 original px, letterboxed at scale 1; 8 tiles of the full-HD frame.
    sample = train[0]
    assert tuple(sample["image"].shape[1:]) == (640, 640) and sample["meta"]["scale"] == (1, 1)
    slicing = cfg["inference"]["slicing"]
    assert (slicing["slice_height"], slicing["overlap"], slicing["full_image"]) == (640, 0.2, True)
    tiles = tile_grid(1080, 1920, 640, 640, 0.2, 0.2)
    assert sorted({int(t[0]) for t in tiles}) == [0, 512, 1024, 1280]
    assert sorted({int(t[1]) for t in tiles}) == [0, 440] and len(tiles) == 8


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("cctv")
    assert main(["train", str(RECIPE), *TINY, "--work-dir", str(work)]) == 0
    return work / "helmet_cctv_fullhd" / "version_0" / "checkpoints" / "last.ckpt"


def test_eval_is_sliced_and_equals_sliced_predict(run, monkeypatch, tmp_path):
    from detlab.engine.trainer import load_task
    from detlab.models.model import Model

    overrides: list[str] = []  # the checkpoint keeps the tiny recipe, slicing included
    inputs: list[tuple[int, ...]] = []
    forward = Model.forward
    monkeypatch.setattr(Model, "forward",
                        lambda self, x: (None if is_tracing() else inputs.append(tuple(x.shape)))
                        or forward(self, x))
    seen = {}
    cls = type(load_task(run).evaluator)
    update = cls.update

    def record(self, predictions, batch):
        for pred, meta in zip(predictions, batch.meta):
            seen[str(meta["path"])] = pred
        return update(self, predictions, batch)

    monkeypatch.setattr(cls, "update", record)
    assert main(["eval", str(run), *overrides, "--quiet"]) == 0
    # 2 val frames x (6 tiles of 64 px + the full frame letterboxed to 64)
    assert sum(s[0] for s in inputs) == 2 * 7 and all(s[2:] == (64, 64) for s in inputs)
    monkeypatch.setattr(cls, "update", update)
    out = tmp_path / "pred"
    assert main(["predict", str(run), *overrides, "--split", "val", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert len(seen) == 2 and sum(len(p.boxes) for p in seen.values()) == len(rows) > 0
    for i, path in enumerate(sorted(seen)):
        pred = seen[path]
        got = sorted((r["score"], r["bbox"]) for r in rows if r["image_id"] == i)
        want = sorted(zip(pred.scores.tolist(), pred.boxes.tolist()))
        assert len(got) == len(want)
        for (gs, (x, y, w, h)), (ws, (x0, y0, x1, y1)) in zip(got, want):
            assert abs(gs - ws) < 1e-4
            np.testing.assert_allclose([x, y, x + w, y + h], [x0, y0, x1, y1], atol=1e-2)
        # merged boxes are mapped to the 96x160 frame, not to a 64 px tile
        assert pred.boxes[:, 2].max() <= 160 and pred.boxes[:, 3].max() <= 96


def test_analyze_uses_the_sliced_predictions(run, monkeypatch, tmp_path):
    # Before: `detlab analyze` called the inference loop without the data module, so a recipe
    # with inference.slicing crashed (AttributeError: 'NoneType' ... 'size_divisor').
    from detlab.models.model import Model

    inputs: list[int] = []
    forward = Model.forward
    monkeypatch.setattr(Model, "forward",
                        lambda self, x: (None if is_tracing() else inputs.append(len(x)))
                        or forward(self, x))
    out = tmp_path / "analysis"
    assert main(["analyze", str(run), "--seeds", "1", "--gallery", "2", "--out", str(out)]) == 0
    assert sum(inputs) == 2 * 7 and (out / "analysis.md").is_file()
