"""MosaicDataset: hand-computed placement and sliver dropping, boxes inside the canvas and
matching the drawn pixels, determinism, set_epoch (also in a persistent DataLoader worker)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from det_files import PLAIN, red_mask, write_png
from torch.utils.data import DataLoader

from detlab.data.datasets.yolo_txt import YoloDetection
from detlab.data.mosaic import MosaicDataset
from detlab.errors import ConfigError
from detlab.registry import DATASETS


def _yolo(root, specs):
    """specs: (name, h, w, [(x1, y1, x2, y2, cls)]) → a YoloDetection over those files."""
    for name, h, w, boxes in specs:
        write_png(root / "images" / "train" / f"{name}.png", h, w, [b[:4] for b in boxes])
        lines = [f"{c} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"
                 for x1, y1, x2, y2, c in boxes]
        label = root / "labels" / "train" / f"{name}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines))
    return YoloDetection(root, class_names=["a", "b"], img_size=64, **PLAIN)


@pytest.fixture
def four(tmp_path):
    """Four 32x32 images, each with one red box (8, 8, 24, 24) of class i % 2."""
    return _yolo(tmp_path, [(f"im{i}", 32, 32, [(8, 8, 24, 24, i % 2)]) for i in range(4)])


@pytest.fixture
def varied(tmp_path):
    return _yolo(tmp_path, [
        ("wide", 40, 80, [(8, 4, 24, 20, 0), (50, 10, 78, 36, 1)]),
        ("tall", 90, 30, [(2, 2, 12, 30, 1), (10, 60, 28, 88, 0)]),
        ("square", 50, 50, [(20, 20, 26, 25, 0)]),
        ("empty", 20, 60, []),
    ])


# Images 32 → 64 (scale 2): the box becomes (16, 16, 48, 48), area 1024. Center (cy, cx) =
# (24, 40): the four copies keep (0, 0, 24, 8) 192 px², (56, 0, 64, 8) 64 px²,
# (0, 40, 24, 64) 576 px², (56, 40, 64, 64) 192 px² of it.
PLACEMENT_CASES = {
    "keep_all": (dict(min_area=0, min_visibility=0),
                 [[0, 0, 24, 8], [56, 0, 64, 8], [0, 40, 24, 64], [56, 40, 64, 64]], [0, 1, 0, 1]),
    "default_drops_slivers": (dict(), [[0, 40, 24, 64]], [0]),
    "min_area_200": (dict(min_area=200, min_visibility=0),
                     [[0, 40, 24, 64]], [0]),
    "min_area_100": (dict(min_area=100, min_visibility=0),
                     [[0, 0, 24, 8], [0, 40, 24, 64], [56, 40, 64, 64]], [0, 0, 1]),
    "visibility_0.1": (dict(min_area=0, min_visibility=0.1),
                       [[0, 0, 24, 8], [0, 40, 24, 64], [56, 40, 64, 64]], [0, 0, 1]),
}


@pytest.mark.parametrize("kwargs,boxes,labels", PLACEMENT_CASES.values(),
                         ids=PLACEMENT_CASES.keys())
def test_placement_and_slivers_hand_computed(four, kwargs, boxes, labels):
    mosaic = MosaicDataset(four, **kwargs)
    canvas, ann = mosaic.build_mosaic([0, 1, 2, 3], (24, 40))
    assert canvas.shape == (64, 64, 3)
    np.testing.assert_allclose(ann.boxes, boxes, atol=1e-4)
    assert ann.labels.tolist() == labels


def test_fully_visible_tiny_box_is_kept(tmp_path):
    ds = _yolo(tmp_path, [(f"im{i}", 64, 64, [(40, 40, 41, 41, 0)]) for i in range(4)])
    _, ann = MosaicDataset(ds, min_area=4.0).build_mosaic([0, 1, 2, 3], (0, 0))
    np.testing.assert_allclose(ann.boxes, [[40, 40, 41, 41]])  # 1 px², uncut: kept


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boxes_inside_and_match_drawn_content(varied, index, seed):
    mosaic = MosaicDataset(varied, min_area=0, min_visibility=0, seed=seed)
    sample = mosaic[index]
    assert sample["image"].shape == (3, 64, 64)
    boxes = sample["target"]["boxes"].numpy()
    assert (boxes >= 0).all() and (boxes <= 64).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert torch.equal(sample["target"]["orig_boxes"], sample["target"]["boxes"])
    red = red_mask(sample["image"])
    covered = np.zeros_like(red)
    for x1, y1, x2, y2 in boxes:
        iy1, iy2 = int(np.ceil(y1)) + 1, max(int(y2) - 1, 0)  # 1 px in: interpolated edges
        ix1, ix2 = int(np.ceil(x1)) + 1, max(int(x2) - 1, 0)
        assert red[iy1:iy2, ix1:ix2].all()  # the drawn box fills its label
        covered[max(int(y1) - 1, 0):int(np.ceil(y2)) + 1,
                max(int(x1) - 1, 0):int(np.ceil(x2)) + 1] = True
    assert not (red & ~covered).any()  # every red pixel belongs to a box
    assert len(sample["meta"]["sources"]) == 4 and sample["meta"]["sources"][0] == index


def test_deterministic_and_epoch_dependent(varied):
    a, b = MosaicDataset(varied, seed=7), MosaicDataset(varied, seed=7)
    assert torch.equal(a[2]["image"], b[2]["image"])
    assert a[2]["meta"]["sources"] == b[2]["meta"]["sources"]
    draws = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        draws.add((tuple(a[2]["meta"]["sources"]), a[2]["image"].sum().item()))
    assert len(draws) > 1


def test_probability_and_close_mosaic(varied):
    never = MosaicDataset(varied, p=0.0)
    assert torch.equal(never[1]["image"], varied[1]["image"])
    mosaic = MosaicDataset(varied, close_mosaic_epochs=2, max_epochs=10)
    mosaic.set_epoch(7)
    assert "sources" in mosaic[0]["meta"]
    mosaic.set_epoch(8)
    assert not mosaic.mosaic_enabled()
    assert torch.equal(mosaic[0]["image"], varied[0]["image"])


def test_set_epoch_reaches_persistent_workers(varied):
    mosaic = MosaicDataset(varied, close_mosaic_epochs=1, max_epochs=2)
    loader = DataLoader(mosaic, batch_size=None, sampler=[0], num_workers=1,
                        persistent_workers=True, multiprocessing_context="fork")
    first = next(iter(loader))
    mosaic.set_epoch(1)  # in the main process, after the worker started
    second = next(iter(loader))
    assert "sources" in first["meta"] and "sources" not in second["meta"]


def test_built_from_config_and_delegates(varied):
    mosaic = DATASETS.build(dict(type="MosaicDataset", dataset=varied, p=0.5))
    assert len(mosaic) == 4 and mosaic.class_names == ["a", "b"]
    np.testing.assert_allclose(mosaic.object_areas(1), [30 / 2500])  # files sort: "square"
    cfg = dict(type="SyntheticShapes", num_samples=4, image_size=64)
    assert len(MosaicDataset(cfg, img_size=64)) == 4


@pytest.mark.parametrize("kwargs,arg", [
    (dict(p=1.5), "p="), (dict(center_range=(0.8, 0.2)), "center_range"),
    (dict(min_visibility=2), "min_visibility"), (dict(close_mosaic_epochs=3), "max_epochs"),
    (dict(img_size=0), "img_size"),
])
def test_bad_arguments(four, kwargs, arg):
    with pytest.raises(ConfigError, match=arg):
        MosaicDataset(four, **kwargs)
    with pytest.raises(ConfigError, match="detection dataset"):
        MosaicDataset([1, 2, 3])
