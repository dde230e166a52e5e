"""Multi-scale above the base size: with data.multi_scale=(1.0, 1.5) the train dataset
letterboxes at the largest size, so a top-size batch is the frame letterboxed at that size (not
an upsampled tensor) and smaller batches are shrunk from it with the meta still mapping back;
wrapper chains, idempotence, ranges up to 1 unchanged."""

from __future__ import annotations

import pytest
import torch

from detlab.data.collate import collate
from detlab.data.crops import ObjectCrops
from detlab.data.datamodule import DataModule
from detlab.data.datasets.synthetic_shapes import SyntheticShapes
from detlab.data.letterbox import unletterbox_boxes
from detlab.data.mosaic import MosaicDataset
from detlab.data.multiscale import letterbox_at, train_multi_scale
from detlab.defaults import DATA_DEFAULTS

WIDE = dict(type="SyntheticShapes", num_samples=8, image_size=(90, 160), img_size=64,
            max_objects=3, seed=1)


def test_top_size_batches_are_letterboxed_at_the_top_size():
    cfg = {**DATA_DEFAULTS, "train": WIDE, "val": WIDE, "batch_size": 4, "num_workers": 0,
           "multi_scale": (1.0, 1.5)}
    data = DataModule(cfg, size_divisor=32)
    loader = data.train_dataloader()
    assert loader.collate_fn.sizes == [64, 96]
    reference = SyntheticShapes(**{k: v for k, v in WIDE.items() if k != "type"} | {
        "img_size": 96})
    seen = set()
    for epoch in range(10):
        loader.batch_sampler.sampler.set_epoch(epoch)
        loader.dataset.set_epoch(epoch)
        indices = next(iter(loader.batch_sampler))
        batch = loader.collate_fn([loader.dataset[i] for i in indices])
        size = max(batch.images.shape[-2:])
        seen.add(size)
        if size == 96:  # exactly the frames letterboxed at 96 (160 -> 96, not 64 -> 96)
            direct = collate([reference[i] for i in indices], 32)
            assert torch.equal(batch.images, direct.images)
            assert batch.meta[0]["scale"] == pytest.approx((0.6, 0.6))
        else:  # shrunk from 96: boxes still map back to the original frame
            assert batch.images.shape[-2:] == (64, 64)
            for target, meta in zip(batch.targets, batch.meta):
                back = unletterbox_boxes(target["boxes"], meta["scale"], meta["pad"])
                torch.testing.assert_close(back, target["orig_boxes"], atol=1e-3, rtol=1e-5)
    assert seen == {64, 96}
    assert data.dataset("val").img_size == 64  # validation keeps img_size


def test_chain_idempotence_and_ranges_up_to_one():
    shapes = SyntheticShapes(num_samples=4, image_size=(90, 160), img_size=64, seed=1)
    mosaic = MosaicDataset(shapes)
    assert letterbox_at(mosaic, 128) == 2
    assert mosaic.img_size == 128 and shapes.geometry.img_size == 128
    assert max(mosaic[0]["image"].shape[1:]) == 128

    shapes = SyntheticShapes(num_samples=4, image_size=(90, 160), img_size=64, seed=1)
    crops = ObjectCrops(shapes, ratio=1.0)
    first = train_multi_scale(crops, (1.0, 1.5), 32)
    assert first.sizes == [64, 96] and shapes.img_size == 96 and crops.size == (64, 64)
    again = train_multi_scale(crops, (1.0, 1.5), 16)  # sizes from the recipe's 64 again
    assert again.sizes == [64, 80, 96] and shapes.img_size == 96

    plain = SyntheticShapes(num_samples=4, image_size=(90, 160), img_size=64, seed=1)
    assert train_multi_scale(plain, (0.5, 1.0), 32).sizes == [32, 64]
    assert plain.img_size == 64 and plain.geometry.img_size == 64
