"""Same seed, same run: helmet_yolo_p2 with its default augmentation (flip, brightness/contrast)
and tiny-object sampler, plus multi-scale and mosaic, gives identical metrics.csv and weights
twice, with 0 or 1 loader worker, and after a crash mid-epoch + ``--resume``."""

from pathlib import Path

import pytest
import torch

from detlab.engine.task import DetlabTask
from detlab.engine.trainer import fit
from detlab.recipe import load

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "helmet_yolo_p2.py"
TINY = [
    "data.train.num_samples=8", "data.val.num_samples=4", "data.train.image_size=64",
    "data.train.img_size=64", "data.val.image_size=64", "data.val.img_size=64",
    "data.batch_size=4", "data.num_workers=0",
    "train.max_epochs=2", "train.progress_bar=false", "train.diagnostics=false",
    "train.num_threads=1", "data.multi_scale=(0.5,1.0)", "train.seed=3",
]
MOSAIC = ["data.train={'type': 'MosaicDataset', 'p': 0.5, 'dataset': "
          "{'type': 'SyntheticHelmets', 'split': 'train', 'num_samples': 8, 'image_size': 64, "
          "'img_size': 64, 'max_objects': 10, 'min_size': 6, 'max_size': 24, "
          "'transforms': [{'type': 'HorizontalFlip', 'p': 0.5}, "
          "{'type': 'RandomBrightnessContrast', 'p': 0.5}]}}"]


def _run(work, extra=()):
    run_dir, _, _ = fit(load(RECIPE, [*TINY, *extra]), work_dir=work)
    return run_dir


def _weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("ref"))


def test_same_seed_twice_identical(reference, tmp_path):
    again = _run(tmp_path)
    assert (again / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    assert _same(_weights(reference), _weights(again))
    other = _run(tmp_path / "seed4", ["train.seed=4"])
    assert not _same(_weights(reference), _weights(other))  # the seed matters


def test_worker_count_does_not_change_the_run(reference, tmp_path):
    one = _run(tmp_path, ["data.num_workers=1"])
    assert (one / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    assert _same(_weights(reference), _weights(one))


def test_crash_mid_epoch_then_resume_matches_uninterrupted(reference, tmp_path, monkeypatch):
    step = DetlabTask.training_step

    def crash(self, batch, batch_idx):
        if self.global_step == 3:  # second batch of epoch 1 (2 batches per epoch)
            raise RuntimeError("killed")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(DetlabTask, "training_step", crash)
    workers = ["data.num_workers=1"]  # the reference ran without workers
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path, workers)
    run_dir = tmp_path / "helmet_yolo_p2" / "version_0"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    monkeypatch.setattr(DetlabTask, "training_step", step)
    fit(load(RECIPE, [*TINY, *workers]), resume="latest", work_dir=tmp_path)
    assert _same(_weights(reference), _weights(run_dir))


def test_mosaic_same_seed_twice_identical(tmp_path):
    a = _run(tmp_path / "a", [*MOSAIC, "train.max_epochs=1"])
    b = _run(tmp_path / "b", [*MOSAIC, "train.max_epochs=1"])
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()
    assert _same(_weights(a), _weights(b))


def test_shuffle_order_depends_on_seed_and_epoch_only():
    from lightning.fabric.utilities.data import _set_sampler_epoch

    from detlab.data.datamodule import DataModule
    from detlab.data.samplers import EpochShuffleSampler
    from detlab.defaults import DATA_DEFAULTS

    a, b = EpochShuffleSampler(50, seed=3), EpochShuffleSampler(50, seed=3)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(1)
    assert list(a) != list(b) and sorted(b) == list(range(50))
    assert list(EpochShuffleSampler(50, seed=4)) != list(a)
    shapes = dict(type="SyntheticShapes", num_samples=8, image_size=32, img_size=32)
    loader = DataModule({**DATA_DEFAULTS, "train": shapes, "num_workers": 0}, seed=3
                        ).train_dataloader()
    _set_sampler_epoch(loader, 5)  # what Lightning calls at every epoch start
    assert loader.batch_sampler.sampler.epoch == 5
