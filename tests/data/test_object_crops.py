"""ObjectCrops: hand-computed windows and box clipping, at least one whole object in every crop
(over many seeds and each detection format), crops at full resolution of a 1920x1080 frame, the
crop/full-frame ratio, same-seed determinism through SeededDataset, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from det_files import PLAIN, coco_dict, red_mask, write_json, write_png, write_voc

from detlab.data.crops import ObjectCrops, crop_annotations, draw_window
from detlab.data.datasets.coco_json import CocoDetection
from detlab.data.datasets.detection_base import Annotations
from detlab.data.datasets.synthetic_helmets import SyntheticHelmets
from detlab.data.datasets.voc import VocDetection
from detlab.data.datasets.yolo_txt import YoloDetection
from detlab.data.mosaic import MosaicDataset
from detlab.data.seeding import SeededDataset
from detlab.errors import ConfigError
from detlab.registry import DATASETS

# (name, h, w, [(x1, y1, x2, y2, class)]): frames larger than the 48 px crop, one without boxes.
FRAMES = [
    ("a", 90, 160, [(10, 12, 20, 30, 0), (120, 60, 150, 85, 1)]),
    ("b", 120, 100, [(40, 40, 47, 52, 1)]),
    ("c", 100, 140, [(2, 70, 80, 98, 0), (100, 5, 108, 13, 0)]),  # first box wider than 48
    ("d", 60, 60, []),
]


def _build(fmt, root, **kwargs):
    kwargs = dict(img_size=48, stride=16, **PLAIN, **kwargs)
    if fmt == "yolo":
        for name, h, w, boxes in FRAMES:
            write_png(root / "images" / "train" / f"{name}.png", h, w, [b[:4] for b in boxes])
            lines = [f"{c} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} "
                     f"{(y2 - y1) / h}" for x1, y1, x2, y2, c in boxes]
            (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (root / "labels" / "train" / f"{name}.txt").write_text("\n".join(lines))
        return YoloDetection(root, class_names=["x", "y"], **kwargs)
    if fmt == "coco":
        images, anns = [], []
        for i, (name, h, w, boxes) in enumerate(FRAMES):
            write_png(root / f"{name}.png", h, w, [b[:4] for b in boxes])
            images.append({"id": i, "file_name": f"{name}.png", "width": w, "height": h})
            anns += [{"id": len(anns) + k + 1, "image_id": i, "category_id": c + 1,
                      "bbox": [x1, y1, x2 - x1, y2 - y1]}
                     for k, (x1, y1, x2, y2, c) in enumerate(boxes)]
        cats = [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]
        return CocoDetection(write_json(root / "ann.json", coco_dict(images, anns, cats)),
                             root, **kwargs)
    spec = {name: dict(size=(w, h), objects=[dict(name="xy"[c], box=(x1 + 1, y1 + 1, x2, y2))
                                            for x1, y1, x2, y2, c in boxes])
            for name, h, w, boxes in FRAMES}
    return VocDetection(write_voc(root, spec), classes=["x", "y"], **kwargs)


def test_window_hand_computed():
    rng = np.random.default_rng(0)
    box = (900, 500, 920, 535)
    # x0 in [ceil(920 - 640), 900] = [280, 900], centred round((1820 - 640) / 2) = 590;
    # y0 in [0, min(500, 1080 - 640)] = [0, 440], centred round(197.5) = 198.
    assert draw_window(box, (1080, 1920), (640, 640), 0.0, rng) == (590, 198, 1230, 838)
    corners = np.array([draw_window(box, (1080, 1920), (640, 640), 1.0, rng)[:2]
                        for _ in range(3000)])
    assert corners[:, 0].min() == 280 and corners[:, 0].max() == 900
    assert corners[:, 1].min() == 0 and corners[:, 1].max() == 440
    assert draw_window((0, 0, 700, 10), (1080, 1920), (640, 640), 1.0, rng) is None
    # a frame lower than the window is taken whole along y
    assert draw_window((10, 10, 30, 30), (300, 1920), (640, 640), 0.0, rng) == (0, 0, 640, 300)


def test_crop_annotations_clip_and_drop_counted():
    boxes = np.array([[10, 10, 20, 20], [90, 10, 110, 30], [95, 50, 120, 60],
                      [200, 200, 210, 210], [-5, 80, 5, 90]], np.float32)
    ann = Annotations(0, "x", boxes, np.arange(5), np.array([0, 0, 0, 0, 1], bool), (300, 300))
    out, clipped, dropped = crop_annotations(ann, (0, 0, 100, 100), 0.5, 2.0)
    # (90..110): half visible, kept clipped; (95..120): 50 of 250 px² visible, dropped;
    # the outside box is not counted; the ignore region is clipped and kept.
    np.testing.assert_array_equal(out.boxes, [[10, 10, 20, 20], [90, 10, 100, 30],
                                              [0, 80, 5, 90]])
    assert out.labels.tolist() == [0, 1, 4] and out.ignore.tolist() == [False, False, True]
    assert (clipped, dropped) == (1, 1) and out.size == (100, 100)
    shifted, _, _ = crop_annotations(ann, (5, 8, 55, 58), 0.0, 0.0)
    np.testing.assert_array_equal(shifted.boxes[0], [5, 2, 15, 12])


@pytest.mark.parametrize("fmt", ["yolo", "coco", "voc"])
def test_every_crop_holds_a_whole_object(tmp_path, fmt):
    ds = _build(fmt, tmp_path)
    crops = ObjectCrops(ds, ratio=1.0, min_visibility=0.0, min_area=0.0)
    for seed in range(12):
        crops.seed = seed
        for index in range(len(ds)):
            sample = crops[index]
            meta, boxes = sample["meta"], sample["target"]["boxes"].numpy()
            if len(ds.annotations(index).boxes) == 0:
                assert meta["crop"]["window"] is None and len(boxes) == 0
                continue
            x0, y0, x1, y1 = meta["crop"]["window"]
            assert (x1 - x0, y1 - y0) == (48, 48) and sample["image"].shape == (3, 48, 48)
            assert meta["scale"] == (1.0, 1.0) and meta["orig_size"] == (48, 48)
            assert len(boxes) >= 1
            # the drawn pixels agree with the boxes: each box is filled red ...
            red = red_mask(sample["image"])
            for bx1, by1, bx2, by2 in boxes.round().astype(int):
                assert red[by1:by2, bx1:bx2].all()
            # ... and at least one box lies whole in the window (not cut by it)
            frame = ds.load_raw(index)[1]  # pixel boxes (YOLO labels are fractions)
            whole = [b for b in frame.boxes
                     if b[0] >= x0 and b[1] >= y0 and b[2] <= x1 and b[3] <= y1]
            assert whole, (seed, index, meta["crop"])
            # the boxes the window cuts (overlap, not inside) are the counted clipped ones
            b = frame.boxes
            overlap = ((np.minimum(b[:, 2], x1) > np.maximum(b[:, 0], x0))
                       & (np.minimum(b[:, 3], y1) > np.maximum(b[:, 1], y0)))
            inside = (b[:, 0] >= x0) & (b[:, 1] >= y0) & (b[:, 2] <= x1) & (b[:, 3] <= y1)
            assert meta["crop"]["clipped"] == int((overlap & ~inside).sum())
            assert meta["crop"]["dropped"] == 0 and len(boxes) == int(overlap.sum())


def test_synthetic_helmets_and_registry():
    cfg = dict(type="ObjectCrops", size=32, ratio=1.0, seed=1,
               dataset=dict(type="SyntheticHelmets", num_samples=10, image_size=96,
                            img_size=32, max_objects=4, min_size=6, max_size=12))
    crops = DATASETS.build(cfg)
    assert len(crops) == 10 and crops.class_names == ["helmet_on", "helmet_off"]
    for i in range(10):
        sample = crops[i]
        if len(crops.annotations(i).boxes):
            assert sample["meta"]["crop"]["window"] is not None
            assert len(sample["target"]["boxes"]) >= 1
    assert isinstance(crops.base, SyntheticHelmets)


def test_full_hd_frame_gives_full_resolution_crops(tmp_path):
    write_png(tmp_path / "images" / "train" / "f.png", 1080, 1920, [(900, 500, 919, 535)])
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "f.txt").write_text(
        f"0 {909.5 / 1920} {517.5 / 1080} {19 / 1920} {35 / 1080}")
    ds = YoloDetection(tmp_path, class_names=["head"], img_size=640, **PLAIN)
    crop = ObjectCrops(ds, ratio=1.0, seed=0)[0]
    assert crop["image"].shape == (3, 640, 640) and crop["meta"]["scale"] == (1.0, 1.0)
    x0, y0 = crop["meta"]["crop"]["window"][:2]
    np.testing.assert_allclose(crop["target"]["boxes"].numpy(),
                               [[900 - x0, 500 - y0, 919 - x0, 535 - y0]], atol=1e-3)
    full = ObjectCrops(ds, ratio=0.0)[0]  # the letterboxed frame: 1/3 of the size
    assert full["meta"]["crop"]["window"] is None
    assert full["meta"]["scale"] == pytest.approx((1 / 3, 1 / 3))
    np.testing.assert_allclose(full["target"]["orig_boxes"].numpy(), [[900, 500, 919, 535]],
                               atol=1e-3)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_crop_ratio(tmp_path, ratio):
    ds = _build("yolo", tmp_path)
    crops = ObjectCrops(ds, ratio=ratio, seed=5)
    # image "a" has objects that fit: a crop exactly when the draw says so
    n = 150
    share = np.mean([crops[0]["meta"]["crop"]["window"] is not None
                     for crops.seed in range(n)])
    assert share == pytest.approx(ratio, abs=0.1)


def test_same_seed_same_samples(tmp_path):
    ds = _build("yolo", tmp_path, transforms=[dict(type="HorizontalFlip", p=0.5)])
    runs = []
    for seed in (3, 3, 4):
        seeded = SeededDataset(ObjectCrops(ds, ratio=0.5, jitter=1.0), seed=seed)
        runs.append([seeded[i] for i in range(len(ds))])
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(a["image"], b["image"]) and a["meta"]["crop"] == b["meta"]["crop"]
    assert any(a["meta"]["crop"] != c["meta"]["crop"] or not torch.equal(a["image"], c["image"])
               for a, c in zip(runs[0], runs[2]))
    wrapped = ObjectCrops(ds, ratio=1.0, seed=0)
    windows = set()
    for epoch in range(5):
        wrapped.set_epoch(epoch)
        windows.add(wrapped[1]["meta"]["crop"]["window"])
    assert len(windows) > 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(size=0), "size"), (dict(size=(32, "a")), "size"), (dict(ratio=1.5), "ratio"),
    (dict(jitter=-1), "jitter"), (dict(min_visibility=2), "min_visibility"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    ds = _build("yolo", tmp_path)
    with pytest.raises(ConfigError, match=match):
        ObjectCrops(ds, **kwargs)
    with pytest.raises(ConfigError, match="detection dataset"):
        ObjectCrops([1, 2])
    with pytest.raises(ConfigError, match="wraps the detection dataset itself"):
        ObjectCrops(MosaicDataset(ds))
    with pytest.raises(ConfigError, match="set size"):
        ObjectCrops(YoloDetection(tmp_path, class_names=["x", "y"], img_size=None))
