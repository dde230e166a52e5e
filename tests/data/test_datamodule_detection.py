"""Detection data wiring: ``data.multi_scale`` collate, per-epoch ``set_epoch`` on the training
dataset (mosaic, close-mosaic), ``TinyObjectOversampler`` through ``data.sampler``, and
``ImageFiles(img_size=…)`` for predicting on large frames."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset

from detlab.data.collate import Collate
from detlab.data.datamodule import DataModule
from detlab.data.datasets.image_files import ImageFiles
from detlab.data.mosaic import MosaicDataset
from detlab.data.multiscale import MultiScaleCollate
from detlab.data.samplers_detection import TinyObjectOversampler
from detlab.defaults import DATA_DEFAULTS
from detlab.engine.callbacks import DatasetEpochSetter
from detlab.errors import ConfigError

SHAPES = dict(type="SyntheticShapes", num_samples=8, image_size=64, img_size=64, max_objects=3)


def _data(**cfg) -> DataModule:
    base = {**DATA_DEFAULTS, "train": SHAPES, "val": SHAPES, "batch_size": 4, "num_workers": 0}
    return DataModule({**base, **cfg}, size_divisor=32)


def test_multi_scale_collate_for_training_only():
    data = _data(multi_scale=(0.5, 1.5))
    loader = data.train_dataloader()
    assert isinstance(loader.collate_fn, MultiScaleCollate)
    assert loader.collate_fn.sizes == [32, 64, 96]  # multiples of 32 in [32, 96]
    sides = set()
    for epoch in range(12):  # the size is seeded per (train.seed, epoch, sample): new epochs
        loader.batch_sampler.sampler.set_epoch(epoch)
        loader.dataset.set_epoch(epoch)
        sides.add(max(next(iter(loader)).images.shape[-2:]))
    assert sides <= {32, 64, 96} and len(sides) > 1
    assert isinstance(data.val_dataloader().collate_fn, Collate)
    assert isinstance(_data().train_dataloader().collate_fn, Collate)


def test_multi_scale_needs_img_size():
    data = _data(train={**SHAPES, "img_size": None}, multi_scale=(0.5, 1.5))
    with pytest.raises(ConfigError, match="img_size"):
        data.train_dataloader()
    with pytest.raises(ConfigError, match="multi_scale"):
        _data(multi_scale=(1.5, 0.5)).train_dataloader()


def test_dataset_epoch_setter_reaches_wrapped_mosaic():
    mosaic = MosaicDataset(dict(SHAPES), p=1.0, close_mosaic_epochs=1, max_epochs=3)
    loader = SimpleNamespace(dataset=Subset(mosaic, [0, 1]))
    setter = DatasetEpochSetter()
    for epoch, enabled in ((0, True), (1, True), (2, False)):
        setter.on_train_epoch_start(SimpleNamespace(train_dataloader=loader,
                                                    current_epoch=epoch), None)
        assert mosaic.epoch == epoch and mosaic.mosaic_enabled() is enabled
    # a dataset without set_epoch is left alone
    setter.on_train_epoch_start(
        SimpleNamespace(train_dataloader=SimpleNamespace(dataset=[1, 2]), current_epoch=1), None)


def test_train_loader_starts_at_the_trainers_epoch():
    data = _data(train=dict(type="MosaicDataset", dataset=SHAPES, p=1.0))
    data.trainer = SimpleNamespace(current_epoch=5)  # e.g. a run resumed at epoch 5
    assert data.train_dataloader().dataset.epoch == 5


def test_trainer_adds_dataset_epoch_setter(tmp_path):
    from detlab.engine.trainer import build_trainer
    from detlab.recipe import Recipe

    trainer = build_trainer(Recipe({"train": {"progress_bar": False}}), tmp_path / "run")
    assert any(isinstance(cb, DatasetEpochSetter) for cb in trainer.callbacks)


@pytest.mark.parametrize("train", [SHAPES, dict(type="MosaicDataset", dataset=SHAPES, p=0.5)])
def test_tiny_object_oversampler_from_recipe(train):
    data = _data(train=train, sampler=dict(type="TinyObjectOversampler", weight=3.0,
                                           area_threshold=0.05))
    loader = data.train_dataloader()
    sampler = loader.batch_sampler.sampler  # batches: NoSingletonBatchSampler
    assert isinstance(sampler, TinyObjectOversampler)
    assert len(sampler) == 8 and 0 < sampler.tiny_fraction <= 1
    assert len(next(iter(loader))) == 4


def test_image_files_img_size_records_scale(tmp_path):
    path = tmp_path / "frame.png"
    Image.fromarray(np.zeros((60, 90, 3), np.uint8)).save(path)
    sample = ImageFiles([path], img_size=45)[0]
    assert sample["image"].shape == (3, 30, 45)
    assert sample["meta"]["scale"] == (0.5, 0.5) and sample["meta"]["orig_size"] == (60, 90)
    assert sample["meta"]["input_size"] == (30, 45)
    assert ImageFiles([path])[0]["image"].shape == (3, 60, 90)
    with pytest.raises(ConfigError, match="img_size"):
        ImageFiles([path], img_size=0)


def test_data_report_log_line_names_the_split(tmp_path, caplog):
    """One DataReport line per split, named after its recipe key; a dataset built alone keeps
    its own name and still has its report."""
    import logging

    from det_files import coco_dict, write_json, write_png

    from detlab.data.datasets.coco_json import CocoDetection

    write_png(tmp_path / "img" / "a.png", 40, 50)
    cats = [{"id": 1, "name": "a"}]
    ann = write_json(tmp_path / "instances.json", coco_dict(
        [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}],
        [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [45, 5, 10, 10]}], cats))
    coco = dict(type="CocoDetection", ann_file=str(ann), img_dir=str(tmp_path / "img"),
                img_size=64)
    data = _data(train=coco, val={**coco, "transforms": None})
    with caplog.at_level(logging.INFO, logger="detlab.data"):
        data.dataset("train"), data.dataset("val"), data.dataset("train")
    lines = [r.getMessage() for r in caplog.records
             if r.name == "detlab.data" and not r.getMessage().startswith(" ")]
    assert lines == [
        f"data.{s} (CocoDetection instances.json): 1 images, 1 boxes, clipped 1 (outside image)"
        for s in ("train", "val")]
    report = data.dataset("val").data_report()
    assert report.name == "data.val (CocoDetection instances.json)"
    alone = CocoDetection(ann, tmp_path / "img")
    assert alone.data_report().name == "CocoDetection (instances.json)"
    assert alone.data_report().counts == {("clipped", "outside image"): 1}
