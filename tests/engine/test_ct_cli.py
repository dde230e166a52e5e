"""CT recipe end to end on tiny studies: train (a step per batch on lesion patches, validation
on whole slices of held-out cases) → diagnostics in the run dir → predict on a NIfTI file and a
DICOM folder → outputs on the input grid; the data folders are never written to."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from ct_data import listing, make_study, write_dicom_series, write_msd

from detlab.cli import main

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "fracture_unet_ct.py"
TINY = [
    "model.backbone={'type': 'UNetEncoder', 'depth': 3, 'init_features': 4, 'in_chans': 3}",
    "model.head.decoder_channels=[8, 8]",
    "data.train.patch_size=16", "+data.train.num_samples=8", "data.batch_size=4",
    "data.num_workers=0", "train.max_epochs=1", "train.progress_bar=false",
    "train.log_every_n_steps=1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("ct")
    data = write_msd(base / "Task", num_cases=5)
    before = listing(data)
    work = base / "runs"
    handler = _Collect()
    logging.getLogger("lightning.pytorch").addHandler(handler)
    try:
        rc = main(["train", str(RECIPE), f"data.root={data}", *TINY, "--work-dir", str(work)])
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    assert rc == 0
    assert listing(data) == before  # training wrote nothing into the data folder
    return base, data, work / "fracture_unet_ct" / "version_0", handler.lines


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_training_step_logs_each_loss_and_rates(trained):
    _, _, run_dir, lines = trained
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    header = rows[0].keys()
    for key in ("train/loss_focal_tversky_step", "train/loss_focal_step", "train/loss_step",
                "val/pr_auc", "val/best_threshold", "val/slice_sensitivity",
                "val/case_sensitivity", "val/lesion_recall"):
        assert key in header, key
    steps = [r for r in rows if r.get("train/loss_step")]
    assert len(steps) == 2  # 8 patches / batch 4
    for r in steps:
        parts = float(r["train/loss_focal_tversky_step"]) + float(r["train/loss_focal_step"])
        assert float(r["train/loss_step"]) == pytest.approx(parts, rel=1e-5)
    # the metrics line printed after validation is this epoch's (epoch 0), not a stale one
    assert any(line.startswith("\n[epoch 0] val: pr_auc=") for line in lines)


def test_diagnostics_written_during_training(trained):
    _, _, run_dir, _ = trained
    diag = run_dir / "diagnostics"
    for name in ("train_batch.png", "train_batch.txt", "prob_hist_epoch0.png",
                 "prob_hist_epoch0.txt", "attention_epoch0.png"):
        assert (diag / name).is_file(), name
    assert "images (4, 3, 16, 16)" in (diag / "train_batch.txt").read_text()


def test_predict_nifti_and_dicom_with_checkpoint(trained, tmp_path, capsys):
    base, data, run_dir, _ = trained
    dicom = write_dicom_series(base / "dicom" / "p9", make_study(9, shape=(32, 32, 6))[0])
    before = {p: listing(p) for p in (data, dicom)}
    study = data / "imagesTr" / "case_0.nii.gz"
    out = tmp_path / "pred"
    assert main(["predict", str(run_dir / "checkpoints" / "last.ckpt"), str(study), str(dicom),
                 "--out", str(out)]) == 0
    assert "wrote predictions for 2 volume(s)" in capsys.readouterr().out
    src = nib.load(study)
    for name in ("case_0_probs.nii.gz", "case_0_mask.nii.gz"):
        img = nib.load(out / name)
        assert img.shape == src.shape
        np.testing.assert_array_equal(img.affine, src.affine)
        np.testing.assert_allclose(img.header.get_zooms(), src.header.get_zooms())
    probs = nib.load(out / "case_0_probs.nii.gz").get_fdata()
    assert 0 <= probs.min() and probs.max() <= 1
    assert nib.load(out / "p9_mask.nii.gz").shape == (32, 32, 6)
    assert (out / "case_0_montage.png").is_file() and (out / "p9_montage.png").is_file()
    assert {p: listing(p) for p in (data, dicom)} == before


def test_show_data_on_ct_recipe(trained, tmp_path, capsys):
    _, data, _, _ = trained
    out = tmp_path / "show"
    assert main(["show-data", str(RECIPE), f"data.root={data}", *TINY, "--out", str(out)]) == 0
    assert (out / "train_batch0.png").is_file()
    printed = capsys.readouterr().out
    assert "sizes before padding: [(16, 16)]" in printed and "have foreground" in printed


def test_data_root_with_synthetic_recipe_is_an_error(tmp_path, capsys):
    rc = main(["train", str(ROOT / "recipes" / "fracture_unet.py"), f"data.root={tmp_path}",
               "--work-dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "takes no root; for CT studies use recipes/fracture_unet_ct.py" in err
