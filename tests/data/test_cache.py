"""data.cache: the same samples with and without the decoded-image cache, the byte estimate by
hand, refusal beyond the free room, disk keys that never go stale, and workers."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from detlab.data import cache as cache_mod
from detlab.data.cache import ImageCache, build_cache, estimate_bytes
from detlab.data.datamodule import DataModule
from detlab.data.datasets.synthetic_helmets import SyntheticHelmets
from detlab.data.datasets.yolo_txt import YoloDetection
from detlab.data.seeding import SeededDataset
from detlab.errors import ConfigError

from det_files import write_png

AUG = [dict(type="HorizontalFlip", p=0.5),
       dict(type="RandomBrightnessContrast", brightness_limit=0.3, contrast_limit=0.3, p=0.5),
       dict(type="Affine", scale=(0.8, 1.2), translate_percent=0.1, p=0.5)]


@pytest.fixture
def root(tmp_path):
    """Three photos-ish PNGs (noise, so resizing and augmenting change every pixel) with
    YOLO labels: 100x200, 60x40 and 90x90 (h x w)."""
    rng = np.random.default_rng(0)
    sizes = [(100, 200), (60, 40), (90, 90)]
    for i, (h, w) in enumerate(sizes):
        path = write_png(tmp_path / "images" / "train" / f"{i}.png", h, w)
        import cv2

        cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        label = tmp_path / "labels" / "train" / f"{i}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("0 0.5 0.5 0.4 0.3\n1 0.25 0.3 0.2 0.2\n")
    return tmp_path


def _dataset(root, **kw):
    return YoloDetection(root, class_names=["a", "b"], transforms=AUG, **kw)


def _same(a, b):
    assert torch.equal(a["image"], b["image"])
    for k in a["target"]:
        assert torch.equal(a["target"][k], b["target"][k]), k
    assert a["meta"] == b["meta"]


def test_bytes_estimate_by_hand(root):
    # 100x200 -> fits 64: ratio 0.32 -> 32x64; 60x40 -> ratio 64/60 -> 64x43; 90x90 -> 64x64
    assert estimate_bytes(_dataset(root, img_size=64)) == (32 * 64 + 64 * 43 + 64 * 64) * 3
    # without scale_up the two small images keep their size: 60x40 and 64 of 90 -> 64x64
    assert estimate_bytes(_dataset(root, img_size=64, scale_up=False)) == \
        (32 * 64 + 60 * 40 + 64 * 64) * 3
    assert estimate_bytes(_dataset(root, img_size=None, stride=32)) == \
        (100 * 200 + 60 * 40 + 90 * 90) * 3


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_same_samples_with_and_without_cache(root, tmp_path, mode):
    plain = SeededDataset(_dataset(root, img_size=64), seed=3)
    cached_ds = _dataset(root, img_size=64)
    cache = ImageCache(mode, tmp_path / "cache")
    cached_ds.image_cache = cache
    cache.fill(cached_ds, "data.train")
    cached = SeededDataset(cached_ds, seed=3)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            _same(plain[i], cached[i])
    assert (cache.hits, cache.misses) == (6, 0)
    # augmentations never write into the cache: a second pass is still identical
    for i in range(len(plain)):
        _same(plain[i], cached[i])


def test_estimate_logged_before_filling_and_refused_beyond_ram(root, monkeypatch, caplog):
    ds = _dataset(root, img_size=64)
    with caplog.at_level(logging.INFO, logger="detlab.data.cache"):
        ImageCache("ram").fill(ds, "data.train")
    assert "data.train: data.cache='ram' needs about 0.00 GiB for 3 images" in caplog.text
    monkeypatch.setattr(cache_mod, "available_ram", lambda: 1000)  # bytes
    with pytest.raises(ConfigError, match=r"data.cache='ram' needs about .* for 3 images but "
                                          r"the available memory is .*set data.cache='disk'"):
        ImageCache("ram").fill(ds, "data.train")
    monkeypatch.setattr(cache_mod, "available_ram", lambda: 2 * 20000)
    with caplog.at_level(logging.WARNING, logger="detlab.data.cache"):
        ImageCache("ram").fill(ds, "data.train")  # 26880 bytes > half of 40000: warned
    assert "more than half of the available memory" in caplog.text


def test_disk_cache_key_follows_the_file_and_the_geometry(root, tmp_path):
    ds = _dataset(root, img_size=64)
    cache = ImageCache("disk", tmp_path / "c")
    cache.fill(ds, "x")
    assert len(list((tmp_path / "c").glob("*.npz"))) == 3
    ImageCache("disk", tmp_path / "c").fill(_dataset(root, img_size=32), "x")  # other size
    assert len(list((tmp_path / "c").glob("*.npz"))) == 6
    # an edited image is a new key: never a stale hit
    image = root / "images" / "train" / "0.png"
    write_png(image, 100, 200)
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh = ImageCache("disk", tmp_path / "c")
    ds.image_cache = fresh
    fresh.fill(ds, "x")
    assert len(list((tmp_path / "c").glob("*.npz"))) == 7
    ds2 = _dataset(root, img_size=64)
    _same(SeededDataset(ds2, 0)[0], SeededDataset(ds, 0)[0])


def test_geometry_changed_after_fill_is_a_miss_not_a_wrong_image(root):
    ds = _dataset(root, img_size=64)
    ds.image_cache = ImageCache("ram")
    ds.image_cache.fill(ds, "x")
    ds.geometry = _dataset(root, img_size=96).geometry  # what multi-scale's letterbox_at does
    _same(SeededDataset(ds, 0)[1], SeededDataset(_dataset(root, img_size=96), 0)[1])
    assert ds.image_cache.misses == 1


def test_disk_needs_files_and_bad_settings_are_errors():
    synth = SyntheticHelmets(num_samples=2, image_size=64, max_objects=2, max_size=12)
    with pytest.raises(ConfigError, match="data.cache='disk' caches image files.*use "
                                          "data.cache='ram'"):
        ImageCache("disk").fill(synth, "data.train")
    ram = ImageCache("ram")
    synth.image_cache = ram
    ram.fill(synth, "x")  # generated images cache in RAM
    _same(synth[1], SyntheticHelmets(num_samples=2, image_size=64, max_objects=2,
                                     max_size=12)[1])
    assert build_cache(None) is None
    with pytest.raises(ConfigError, match="expected one of"):
        build_cache("gpu")
    with pytest.raises(ConfigError, match="unknown key"):
        build_cache(dict(mode="disk", folder="/tmp"))


def test_datamodule_cache_with_a_worker_gives_the_uncached_batches(root, tmp_path):
    def batches(cache, workers):
        train = dict(type="YoloDetection", root=str(root), class_names=["a", "b"],
                     img_size=64, transforms=AUG)
        cfg = dict(train=train, val=dict(train, transforms=None), batch_size=3,
                   num_workers=workers, cache=cache)
        module = DataModule(cfg, seed=5)
        module.check()
        return list(module.train_dataloader()) + list(module.val_dataloader()), module

    plain, _ = batches(None, 0)
    cached, module = batches(dict(mode="disk", dir=str(tmp_path / "dc")), 1)
    ram, _ = batches("ram", 1)
    assert module.dataset("train").image_cache is not None
    for a, b, c in zip(plain, cached, ram):
        assert torch.equal(a.images, b.images) and torch.equal(a.images, c.images)
        for ta, tb in zip(a.targets, b.targets):
            assert all(torch.equal(ta[k], tb[k]) for k in ta)
        assert a.meta == b.meta == c.meta
    with pytest.raises(ConfigError, match="data.cache"):
        DataModule(dict(train=dict(type="YoloDetection", root=str(root),
                                   class_names=["a", "b"]), cache="vram")).check()


def test_mosaic_reads_the_cache_and_gives_the_same_samples(root):
    from detlab.data.mosaic import MosaicDataset

    plain = MosaicDataset(_dataset(root, img_size=64), p=1.0, seed=1)
    base = _dataset(root, img_size=64)
    base.image_cache = ImageCache("ram")
    base.image_cache.fill(base, "x")
    cached = MosaicDataset(base, p=1.0, seed=1)
    for i in range(3):
        _same(SeededDataset(plain, 2)[i], SeededDataset(cached, 2)[i])
    assert base.image_cache.hits >= 3 * 4 and base.image_cache.misses == 0
