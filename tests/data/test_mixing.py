"""Mixup and CopyPaste: hand-computed blending and box mapping, the Beta(32, 32) ratio, rare
classes favoured by inverse frequency (hand-computed class weights and sampled frequencies),
pasted pixels and boxes agreeing, skips counted, same-seed determinism, stacking, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from det_files import PLAIN, red_mask, write_png

from detlab.data.datasets.synthetic_shapes import SyntheticShapes
from detlab.data.datasets.yolo_txt import YoloDetection
from detlab.data.mixing import CopyPaste, Mixup, mix_samples
from detlab.data.seeding import SeededDataset
from detlab.errors import ConfigError
from detlab.registry import DATASETS


def _sample(image, boxes, labels, scale=(1.0, 1.0), pad=(0, 0)):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"image": image, "target": {"boxes": boxes, "labels": torch.tensor(labels),
                                       "ignore": torch.zeros(len(labels), dtype=torch.bool),
                                       "orig_boxes": boxes.clone()},
            "meta": {"image_id": 0, "scale": scale, "pad": pad, "input_size": image.shape[1:]}}


def test_mix_samples_hand_computed():
    a = _sample(torch.ones(3, 4, 6), [[0, 0, 2, 2]], [0], scale=(0.5, 0.5), pad=(1, 0))
    b = _sample(torch.full((3, 6, 4), 3.0), [[2, 3, 4, 5]], [1])
    out = mix_samples(a, b, 0.25, torch.tensor([-1.0, -1.0, -1.0]))
    assert out["image"].shape == (3, 6, 6)
    assert out["image"][0, 0, 0] == pytest.approx(0.25 * 1 + 0.75 * 3)   # both
    assert out["image"][0, 0, 5] == pytest.approx(0.25 * 1 + 0.75 * -1)  # a and fill
    assert out["image"][0, 5, 0] == pytest.approx(0.25 * -1 + 0.75 * 3)  # fill and b
    assert out["image"][0, 5, 5] == pytest.approx(-1)                     # fill only
    assert out["target"]["boxes"].tolist() == [[0, 0, 2, 2], [2, 3, 4, 5]]
    assert out["target"]["labels"].tolist() == [0, 1]
    # b's box in a's original frame: ((2, 3, 4, 5) - (left 0, top 1)) / 0.5
    assert out["target"]["orig_boxes"].tolist() == [[0, 0, 2, 2], [4, 4, 8, 8]]
    assert out["meta"]["pad"] == (1, 0)


def _shapes(n=300):
    return SyntheticShapes(num_samples=n, image_size=32, img_size=32, max_objects=2, seed=1)


def test_mixup_ratio_and_probability():
    mix = Mixup(_shapes(), p=0.5, seed=2)
    infos = [mix[i]["meta"]["mixup"] for i in range(len(mix))]
    mixed = [m for m in infos if m is not None]
    assert len(mixed) / len(infos) == pytest.approx(0.5, abs=0.08)
    ratios = np.array([m["ratio"] for m in mixed])
    # Beta(32, 32): mean 0.5, std sqrt(1 / (4 * 65)) = 0.062
    assert ratios.mean() == pytest.approx(0.5, abs=0.015)
    assert ratios.std() == pytest.approx(0.062, abs=0.012)
    sample = mix[[i for i, m in enumerate(infos) if m is not None][0]]
    partner = mix.dataset[sample["meta"]["mixup"]["partner"]]
    own = mix.dataset[[i for i, m in enumerate(infos) if m is not None][0]]
    assert len(sample["target"]["boxes"]) == len(own["target"]["boxes"]) + len(
        partner["target"]["boxes"])


def _frames(root):
    """Five 96x96 frames with five 8x8 red boxes each; 2 of the 25 boxes (8 %) are class 1."""
    for i in range(5):
        boxes = [(8 + 16 * k, 8 + 16 * k, 16 + 16 * k, 16 + 16 * k, int(i < 2 and k == 4))
                 for k in range(5)]
        write_png(root / "images" / "train" / f"f{i}.png", 96, 96, [b[:4] for b in boxes])
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train" / f"f{i}.txt").write_text("\n".join(
            f"{c} {(x1 + x2) / 192} {(y1 + y2) / 192} {8 / 96} {8 / 96}"
            for x1, y1, x2, y2, c in boxes))
    return YoloDetection(root, class_names=["on", "off"], img_size=48, stride=16, **PLAIN)


@pytest.mark.parametrize("power,expected", [
    (1.0, [0.5, 0.5]), (0.0, [23 / 25, 2 / 25]),
    (0.5, [23 ** 0.5 / (23 ** 0.5 + 2 ** 0.5), 2 ** 0.5 / (23 ** 0.5 + 2 ** 0.5)]),
])
def test_rare_classes_favoured(tmp_path, power, expected):
    paste = CopyPaste(_frames(tmp_path), p=1.0, num_objects=1, power=power, seed=0)
    np.testing.assert_allclose(paste.class_weights, expected, rtol=1e-9)
    if power == 1.0:  # sampled: about half of the pasted objects are the 8 % class
        labels = []
        for j in range(120):
            paste.seed = j
            info = paste[j % 5]["meta"]["copy_paste"]
            labels += [int(paste.base.annotations(i).labels[k]) for i, k in info["pasted"]]
        assert len(labels) > 100 and np.mean(labels) == pytest.approx(0.5, abs=0.12)


def test_pasted_pixels_boxes_and_mapping(tmp_path):
    ds = _frames(tmp_path)
    paste = CopyPaste(ds, p=1.0, num_objects=3, seed=4)
    for index in range(5):
        sample = paste[index]
        info, target = sample["meta"]["copy_paste"], sample["target"]
        n_own = len(ds[index]["target"]["boxes"])
        assert len(info["pasted"]) + info["skipped"] == 3
        assert len(target["boxes"]) == n_own + len(info["pasted"])
        new = target["boxes"][n_own:].numpy()
        # scale 0.5: an 8x8 box becomes a 4x4 patch, fully red, inside the 48x48 content
        np.testing.assert_allclose(new[:, 2:] - new[:, :2], 4.0, atol=1e-4)
        assert (new >= 0).all() and (new <= 48).all()
        red = red_mask(sample["image"])
        for x1, y1, x2, y2 in new.round().astype(int):
            assert red[y1:y2, x1:x2].all()
        # no pasted box overlaps another box (max_occlusion=0)
        boxes = target["boxes"].numpy()
        for k in range(n_own, len(boxes)):
            others = np.delete(boxes, k, axis=0)
            ix = np.minimum(others[:, 2], boxes[k, 2]) - np.maximum(others[:, 0], boxes[k, 0])
            iy = np.minimum(others[:, 3], boxes[k, 3]) - np.maximum(others[:, 1], boxes[k, 1])
            assert not ((ix > 0) & (iy > 0)).any()
        # input = orig * scale + pad for every box, pasted ones included
        sy, sx = sample["meta"]["scale"]
        top, left = sample["meta"]["pad"]
        back = target["orig_boxes"] * torch.tensor([sx, sy, sx, sy]) + torch.tensor(
            [left, top, left, top], dtype=torch.float32)
        torch.testing.assert_close(back, target["boxes"])


def test_no_room_is_counted(tmp_path):
    ds = _frames(tmp_path)
    paste = CopyPaste(ds, p=1.0, num_objects=2, max_occlusion=0.0, tries=1, seed=0)
    crowded = {**ds[0], "target": {**ds[0]["target"],
                                   "boxes": torch.tensor([[0.0, 0.0, 48.0, 48.0]]),
                                   "labels": torch.tensor([0]),
                                   "ignore": torch.tensor([False]),
                                   "orig_boxes": torch.tensor([[0.0, 0.0, 96.0, 96.0]])}}
    out = paste._paste(crowded, [(1, 0), (2, 1)], np.random.default_rng(0))
    assert out["meta"]["copy_paste"] == {"pasted": [], "skipped": 2}
    assert len(out["target"]["boxes"]) == 1 and torch.equal(out["image"], crowded["image"])


def test_same_seed_same_samples(tmp_path):
    ds = _frames(tmp_path)
    cfg = dict(type="CopyPaste", p=0.7, dataset=dict(
        type="Mixup", p=0.5, dataset=dict(type="ObjectCrops", dataset=ds, size=32, ratio=0.5)))
    runs = []
    for seed in (1, 1, 2):
        seeded = SeededDataset(DATASETS.build(cfg), seed=seed)
        runs.append([seeded[i] for i in range(5)])
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["target"]["boxes"], b["target"]["boxes"])
        assert a["meta"]["mixup"] == b["meta"]["mixup"]
    assert any(not torch.equal(a["image"], c["image"]) for a, c in zip(runs[0], runs[2]))


@pytest.mark.parametrize("cls,kwargs,match", [
    (Mixup, dict(p=2), "p="), (Mixup, dict(alpha=0), "alpha"),
    (CopyPaste, dict(num_objects=(3, 1)), "num_objects"), (CopyPaste, dict(power=-1), "power"),
    (CopyPaste, dict(max_occlusion=1.5), "max_occlusion"), (CopyPaste, dict(tries=0), "tries"),
    # a bool is not a count (True passed as 1 before the checks went through detlab.checks)
    (CopyPaste, dict(num_objects=True), r"num_objects=True: expected an int >= 1"),
    (CopyPaste, dict(num_objects=(1, 2, 3)), "num_objects"),
])
def test_bad_arguments(tmp_path, cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(_frames(tmp_path), **kwargs)


def test_empty_dataset_cannot_paste():
    with pytest.raises(ConfigError, match="no object"):
        CopyPaste(SyntheticShapes(num_samples=2, image_size=32, max_objects=0))


def test_loader_workers_give_the_same_samples(tmp_path):
    """Stacked wrappers pickle into DataLoader workers and draw the same there."""
    from torch.utils.data import DataLoader

    ds = _frames(tmp_path)
    stack = CopyPaste(Mixup(ds, p=0.5), p=1.0)
    seeded = SeededDataset(stack, seed=5)
    seeded.set_epoch(2)
    direct = [seeded[i] for i in range(5)]
    loader = DataLoader(seeded, batch_size=None, num_workers=1, multiprocessing_context="fork")
    for a, b in zip(direct, loader):
        assert torch.equal(a["image"], b["image"])
        # (the loader's default_convert turns the (image, object) tuples into lists)
        assert [list(p) for p in a["meta"]["copy_paste"]["pasted"]] == [
            list(p) for p in b["meta"]["copy_paste"]["pasted"]]
