"""``data.uint8_batches``: uint8 training batches normalized after the transfer give exactly
the float batches of the normalizing loader (letterbox gray and collate padding included), in
the main process and through a worker; the option is validated; a Lightning run trains on the
same numbers with the mode on and off."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from detlab.cli import main
from detlab.data import uint8_batches
from detlab.data.datamodule import DataModule
from detlab.data.datasets.detection_base import IMAGENET_MEAN, IMAGENET_STD
from detlab.data.uint8_batches import Uint8Batch, normalize_batch_images
from detlab.defaults import DATA_DEFAULTS
from detlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
# (h, w) of the files: with img_size=96 and stride 32 they letterbox to 64x96, 96x64, 96x96
# and 64x96, so every image has gray letterbox rows or columns and most collate padding too
SIZES = [(60, 96), (96, 45), (80, 80), (30, 70), (96, 50), (70, 96)]
AUG = [dict(type="HorizontalFlip", p=0.5),
       dict(type="RandomBrightnessContrast", brightness_limit=0.3, contrast_limit=0.3, p=0.9)]


@pytest.fixture(scope="module")
def yolo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("yolo")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        path = root / "images" / "train" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        # noise: every pixel value occurs, so a wrong mean/std/scale shows everywhere
        cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        label = root / "labels" / "train" / f"{i}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(f"{i % 2} 0.4 0.4 0.3 0.3\n1 0.7 0.6 0.2 0.4\n")
    return root


def _train(root: Path, wrap: str) -> dict:
    base = dict(type="YoloDetection", root=str(root), split="train", class_names=["a", "b"],
                img_size=96, transforms=AUG)
    if wrap == "mosaic+copy_paste":
        return dict(type="CopyPaste", p=1.0, num_objects=2, max_occlusion=1.0,
                    dataset=dict(type="MosaicDataset", p=0.5, dataset=base))
    return base


def _module(root: Path, wrap: str = "plain", **cfg) -> DataModule:
    data = {**DATA_DEFAULTS, "train": _train(root, wrap), "batch_size": 3, "num_workers": 0,
            **cfg}
    return DataModule(data, size_divisor=32, seed=5)


@pytest.mark.parametrize("wrap", ["plain", "mosaic+copy_paste"])
def test_normalized_uint8_batches_equal_the_float_batches(yolo_root, wrap):
    module = _module(yolo_root, wrap)
    floats = list(module.train_dataloader(uint8=False))
    raws = list(module.train_dataloader(uint8=True))
    assert len(floats) == len(raws) == 2
    padded_somewhere = False
    for f, r in zip(floats, raws):
        assert isinstance(r, Uint8Batch) and r.images.dtype == torch.uint8
        assert not isinstance(f, Uint8Batch) and f.images.dtype == torch.float32
        n = normalize_batch_images(r)
        assert type(n).__name__ == "Batch" and n.images.dtype == torch.float32
        torch.testing.assert_close(n.images, f.images, rtol=0, atol=1e-6)
        assert torch.equal(n.images, f.images)  # CPU: the same float32 operations
        for a, b in zip(n.targets, f.targets):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert n.meta == f.meta
        height, width = f.images.shape[-2:]
        for i, (h, w) in enumerate(r.sizes):
            # collate's padding is 0 in normalized space (not the normalized black of uint8 0)
            if h < height or w < width:
                padded_somewhere = True
                assert float(n.images[i, :, h:, :].abs().sum() + n.images[i, :, :, w:].abs()
                             .sum()) == 0.0
    assert padded_somewhere
    if wrap != "plain":  # CopyPaste wrote uint8 patches into uint8 images
        assert any(m["copy_paste"]["pasted"] for b in floats for m in b.meta)
        assert any(str(m.get("image_id", "")).startswith("mosaic") for b in floats
                   for m in b.meta)
    if wrap == "plain":  # the letterbox gray: (114 / 255 - mean) / std per channel
        gray = ((np.float32(114) / np.float32(255) - np.asarray(IMAGENET_MEAN, np.float32))
                / np.asarray(IMAGENET_STD, np.float32))
        tops = [(b, i) for b in floats for i, m in enumerate(b.meta) if m["pad"][0] > 0]
        assert tops
        for b, i in tops:
            np.testing.assert_array_equal(b.images[i, :, 0, 0].numpy(), gray)


def test_table_lookup_and_device_arithmetic_agree_bitwise():
    # the CPU path (table lookup) and the path other devices take (float32 operations), both
    # run on the CPU here: every uint8 value in every channel, with and without padding
    values = torch.arange(256, dtype=torch.uint8).repeat(3 * 2 * 4).view(2, 3, 16, 64)
    mean, std = (0.5, 0.25, 0.125), (0.3, 0.7, 1.9)
    for sizes in ([(16, 64), (16, 64)], [(8, 64), (16, 33)]):
        table = uint8_batches.normalize_images(values, sizes, mean, std)
        arith = uint8_batches._arithmetic(values, sizes, mean, std)
        assert torch.equal(table, arith)
        # row 0 of image 1, channel 1 holds the values 0 .. 63
        expected = ((np.arange(64, dtype=np.float32) / np.float32(255) - np.float32(mean[1]))
                    / np.float32(std[1]))
        expected[sizes[1][1]:] = 0  # collate's padding
        np.testing.assert_array_equal(table[1, 1, 0, :].numpy(), expected)


def test_a_transform_that_makes_floats_gets_float_batches_of_the_same_numbers(yolo_root):
    # ToFloat on half the samples: the dataset normalizes those itself (x in [0, 1]); a batch
    # with one of them is normalized on the worker, with the numbers of the float loader
    transforms = [*AUG, dict(type="ToFloat", max_value=255.0, p=0.5)]
    train = {**_train(yolo_root, "plain"), "transforms": transforms}
    module = _module(yolo_root, train=train)
    floats = list(module.train_dataloader(uint8=False))
    raws = list(module.train_dataloader(uint8=True))
    assert any(not isinstance(r, Uint8Batch) for r in raws)
    for r, f in zip(raws, floats):
        assert torch.equal(normalize_batch_images(r).images, f.images)


def test_uint8_batches_through_a_worker(yolo_root):
    module = _module(yolo_root, num_workers=1, persistent_workers=False)
    raws = list(module.train_dataloader(uint8=True))
    floats = list(_module(yolo_root).train_dataloader(uint8=False))
    assert all(isinstance(r, Uint8Batch) for r in raws)
    for r, f in zip(raws, floats):
        assert torch.equal(normalize_batch_images(r).images, f.images)


def test_uint8_batches_only_for_a_lightning_trainer(yolo_root):
    module = _module(yolo_root)
    assert not isinstance(next(iter(module.train_dataloader())), Uint8Batch)  # no trainer
    module.trainer = SimpleNamespace(current_epoch=0)  # as Lightning's fit sets
    assert isinstance(next(iter(module.train_dataloader())), Uint8Batch)
    off = _module(yolo_root, uint8_batches=False)
    off.trainer = SimpleNamespace(current_epoch=0)
    assert not isinstance(next(iter(off.train_dataloader())), Uint8Batch)
    # the hook normalizes training batches and leaves the (float) others alone
    batch = next(iter(module.train_dataloader()))
    assert module.on_after_batch_transfer(batch, 0).images.dtype == torch.float32
    plain = normalize_batch_images(batch)
    assert module.on_after_batch_transfer(plain, 0) is plain


def test_uint8_option_is_validated(yolo_root):
    with pytest.raises(ConfigError, match=r"data: uint8_batches must be one of \[None, True, "
                                          r"False\], got 'yes'"):
        _module(yolo_root, uint8_batches="yes")
    with pytest.raises(ConfigError, match="got 1"):
        _module(yolo_root, uint8_batches=1)
    mixup = {**DATA_DEFAULTS, "batch_size": 3, "num_workers": 0, "uint8_batches": True,
             "train": dict(type="Mixup", p=0.5, dataset=_train(yolo_root, "plain"))}
    with pytest.raises(ConfigError, match="data.uint8_batches=True: data.train uses Mixup"):
        DataModule(mixup).check()
    with pytest.raises(ConfigError, match="data.multi_scale resizes"):
        _module(yolo_root, uint8_batches=True, multi_scale=(0.5, 1.5)).check()
    # None (auto): float batches where uint8 cannot work, no error
    auto = DataModule({**mixup, "uint8_batches": None})
    auto.trainer = SimpleNamespace(current_epoch=0)
    assert not isinstance(next(iter(auto.train_dataloader())), Uint8Batch)
    shapes = {**DATA_DEFAULTS, "batch_size": 2, "num_workers": 0, "uint8_batches": True,
              "train": dict(type="SyntheticSpineCT", num_samples=2, image_size=64)}
    with pytest.raises(ConfigError, match="not a detection dataset"):
        DataModule(shapes).check()


def _epoch_loss(work: Path) -> float:
    with open(work / "helmet_yolo" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss_epoch")]
    return float(rows[-1]["train/loss_epoch"])


def test_training_loss_is_the_same_with_uint8_batches(tmp_path, monkeypatch):
    calls = []
    real = uint8_batches.Uint8Collate.__call__
    monkeypatch.setattr(uint8_batches.Uint8Collate, "__call__",
                        lambda self, samples: calls.append(1) or real(self, samples))
    tiny = ["data.train.num_samples=8", "data.val.num_samples=4", "data.train.image_size=64",
            "data.train.img_size=64", "data.val.image_size=64", "data.val.img_size=64",
            "data.batch_size=4", "data.num_workers=0", "train.max_epochs=1",
            "train.progress_bar=false", "train.num_threads=1"]
    losses = {}
    for mode in ("True", "False"):
        work = tmp_path / mode
        assert main(["train", str(ROOT / "recipes" / "helmet_yolo.py"), *tiny,
                     f"data.uint8_batches={mode}", "--work-dir", str(work)]) == 0
        losses[mode] = _epoch_loss(work)
        if mode == "True":
            assert calls  # the run did train on uint8 batches
            calls.clear()
    assert not calls
    assert np.isfinite(losses["True"]) and losses["True"] > 0
    assert losses["True"] == pytest.approx(losses["False"], abs=1e-5)
