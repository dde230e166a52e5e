"""``train.sync_batchnorm``: a documented train key that reaches Lightning (BatchNorm ->
SyncBatchNorm when DDP sets the model up) and leaves a one-process run exactly as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from torch import nn

from detlab.engine.trainer import build_trainer, fit
from detlab.models import Model
from detlab.recipe import Recipe, load, with_defaults

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "helmet_yolo_p2.py"
TINY = [
    "data.train.num_samples=4", "data.val.num_samples=2", "data.train.image_size=64",
    "data.train.img_size=64", "data.val.image_size=64", "data.val.img_size=64",
    "data.batch_size=2", "data.num_workers=0", "train.max_epochs=1",
    "train.progress_bar=false", "train.diagnostics=false", "train.num_threads=1",
]


def _trainer(tmp_path: Path, **train):
    recipe = Recipe(with_defaults({"train": dict(accelerator="cpu", progress_bar=False, **train)}),
                    name="r")
    return build_trainer(recipe, tmp_path / "r" / "version_0")


def test_sync_batchnorm_reaches_the_ddp_strategy(tmp_path):
    on = _trainer(tmp_path, devices=2, strategy="ddp", sync_batchnorm=True)
    off = _trainer(tmp_path, devices=2, strategy="ddp")
    assert isinstance(on.strategy._layer_sync, TorchSyncBatchNorm)
    assert off.strategy._layer_sync is None
    # what DDPStrategy.setup does with it: every BatchNorm of a detlab model becomes synced
    model = Model(backbone=dict(type="TimmBackbone", name="resnet10t", pretrained=False,
                                out_indices=(3, 4)),
                  neck=dict(type="PAN", levels=(4, 5), out_channels=16),
                  head=dict(type="YOLOHead", num_classes=1))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    synced = on.strategy._layer_sync.apply(model)
    assert n_bn > 0 and sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()) == n_bn


def test_sync_batchnorm_changes_nothing_in_one_process(tmp_path):
    runs = [fit(load(RECIPE, [*TINY, *extra]), work_dir=tmp_path / name)
            for name, extra in (("off", []), ("on", ["train.sync_batchnorm=True"]))]
    (off, _, _), (on, task, trainer) = runs
    assert trainer.strategy.__class__.__name__ == "SingleDeviceStrategy"
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in task.modules())
    assert (on / "metrics.csv").read_text() == (off / "metrics.csv").read_text()
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
            for r in (off, on))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("value", ["yes", 1])
def test_sync_batchnorm_must_be_a_bool(tmp_path, value):
    from detlab.errors import ConfigError

    with pytest.raises(ConfigError, match="sync_batchnorm"):
        _trainer(tmp_path, sync_batchnorm=value)
