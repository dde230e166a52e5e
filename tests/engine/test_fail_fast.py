"""A run that stops on a configuration or data error takes no ``version_N`` folder and checks
the data before building the model; a final training batch of one sample is dropped, with one
log line, instead of crashing BatchNorm."""

import logging
from pathlib import Path

import pytest

from detlab.cli import main
from detlab.data.datamodule import DataModule
from detlab.defaults import DATA_DEFAULTS
from detlab.engine.task import DetlabTask

from conftest import RECIPE, TINY

ROOT = Path(__file__).resolve().parents[2]
COCO_RECIPE = ROOT / "recipes" / "helmet_yolo_p2_coco.py"


def _fails(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_missing_data_path_fails_before_model_and_run_folder(tmp_path, capsys, monkeypatch):
    def no_model(self, recipe):
        raise AssertionError("the model was built before the data was checked")

    monkeypatch.setattr(DetlabTask, "__init__", no_model)
    err = _fails(capsys, ["train", str(COCO_RECIPE), "--work-dir", str(tmp_path)])  # pretrained
    assert "ann_file is not set" in err
    assert not (tmp_path / "helmet_yolo_p2_coco").exists()
    err = _fails(capsys, ["train", str(COCO_RECIPE), f"data.train.ann_file={tmp_path}/no.json",
                          f"data.train.img_dir={tmp_path}", "--work-dir", str(tmp_path)])
    assert "no.json" in err
    assert not (tmp_path / "helmet_yolo_p2_coco").exists()


def test_config_errors_take_no_version_folder(tmp_path, capsys):
    work = ["--work-dir", str(tmp_path)]
    _fails(capsys, ["train", str(RECIPE), *TINY, "train.optimizer.type=Adamz", *work])
    _fails(capsys, ["train", str(RECIPE), *TINY, "train.scheduler.type=Cosinus", *work])
    _fails(capsys, ["train", str(RECIPE), *TINY, "train.precision=17", *work])
    assert not (tmp_path / "fracture_unet").exists()
    assert main(["train", str(RECIPE), *TINY, *work]) == 0  # the first real run is version_0
    assert [p.name for p in (tmp_path / "fracture_unet").iterdir()] == ["version_0"]


def _data(num_samples, batch_size):
    shapes = dict(type="SyntheticShapes", num_samples=num_samples, image_size=32, img_size=32,
                  max_objects=2)
    return DataModule({**DATA_DEFAULTS, "train": shapes, "val": shapes, "num_workers": 0,
                       "batch_size": batch_size})


def test_final_batch_of_one_is_dropped_once_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="detlab"):
        loader = _data(9, 4).train_dataloader()
        sizes = [len(b) for b in loader]
    assert sizes == [4, 4] and len(loader) == 2
    notes = [r.getMessage() for r in caplog.records if "final batch of 1" in r.getMessage()]
    assert len(notes) == 1 and "9 samples" in notes[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="detlab"):
        assert [len(b) for b in _data(10, 4).train_dataloader()] == [4, 4, 2]  # kept
        assert [len(b) for b in _data(1, 1).train_dataloader()] == [1]  # batch_size 1: kept
    assert not caplog.records
    assert [len(b) for b in _data(9, 4).val_dataloader()] == [4, 4, 1]  # validation: all


def test_training_with_final_batch_of_one_runs(tmp_path):
    # 32 px training input: the U-Net bottleneck is 1x1, where BatchNorm on one sample raised
    # "Expected more than 1 value per channel when training" (5 samples, batch 4)
    tiny = [a for a in TINY if "num_samples" not in a]
    assert main(["train", str(RECIPE), *tiny, "data.train.num_samples=5",
                 "data.val.num_samples=4",
                 "data.train.transforms=[{'type': 'Resize', 'height': 32, 'width': 32}]",
                 "--work-dir", str(tmp_path)]) == 0
