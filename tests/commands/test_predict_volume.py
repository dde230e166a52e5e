"""Volume prediction: outputs on the input's grid (shape, affine) for NIfTI and DICOM, values
back in the file's voxel order, sliding windows equal to whole-slice inference for a pointwise
model, the montage, and settings taken from the checkpoint's recipe."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from ct_data import LPS_AFFINE, dicom_affine, listing, make_study, write_dicom_series, write_nifti
from PIL import Image
from torch import nn

from detlab.commands.predict_volume import (
    _probabilities,
    predict_volume,
    predict_volumes,
    volume_settings,
)
from detlab.errors import ConfigError
from detlab.structures import Prediction

WINDOW = (-250.0, 1250.0)


class PointwiseModel(nn.Module):
    """probs = the centre channel (a windowed HU value in [0, 1]): the prediction of a voxel is
    a known function of that voxel, so where each value lands can be checked exactly."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)
        self.head = type("Head", (), {"threshold": 0.5, "activation": "sigmoid"})()
        self.seen = []

    def predict(self, batch, stage="test"):
        self.seen.append(tuple(batch.images.shape))
        c = batch.images.shape[1] // 2
        return [Prediction(probs=batch.images[i, c : c + 1]) for i in range(len(batch))]


class FakeTask:
    def __init__(self, recipe, channels=3):
        self.recipe = recipe
        self.model = PointwiseModel(channels)


def _recipe(context=1, patch=None):
    val = dict(type="CTVolumeSlices", split="val", windows=[dict(min=WINDOW[0], max=WINDOW[1])],
               context=context)
    train = dict(type="LesionPatches", dataset=dict(val, split="train"), patch_size=patch) \
        if patch else dict(val, split="train")
    return {"data": {"train": train, "val": val}}


def _windowed(hu):
    return (np.clip(hu, *WINDOW) - WINDOW[0]) / (WINDOW[1] - WINDOW[0])


@pytest.mark.parametrize("patch", [None, 16])
def test_nifti_outputs_on_input_grid_and_voxel_order(tmp_path, patch):
    hu, _ = make_study(0, shape=(32, 24, 6))
    src = write_nifti(tmp_path / "data" / "study.nii.gz", hu.astype(np.int16))
    before = listing(tmp_path / "data")
    task = FakeTask(_recipe(patch=patch))
    files = predict_volume(task, src, tmp_path / "out")
    assert [f.name for f in files] == ["study_probs.nii.gz", "study_mask.nii.gz",
                                       "study_montage.png"]
    probs, mask = nib.load(files[0]), nib.load(files[1])
    for img in (probs, mask):
        assert img.shape == (32, 24, 6)
        np.testing.assert_array_equal(img.affine, nib.load(src).affine)
        assert img.header.get_zooms() == pytest.approx((0.8, 0.7, 2.5))
    expected = _windowed(hu.astype(np.int16).astype(np.float32))
    np.testing.assert_allclose(probs.get_fdata(), expected, atol=1e-6)  # voxel order kept
    np.testing.assert_array_equal(mask.get_fdata(), expected > 0.5)
    assert mask.get_data_dtype() == np.uint8
    # the fake model sees whole 24 x 32 slices, or 16 x 16 windows when trained on patches
    assert set(task.model.seen) == ({(4, 3, 24, 32), (2, 3, 24, 32)} if patch is None
                                    else {(4, 3, 16, 16)})
    montage = Image.open(files[2])
    assert montage.width > 192 and montage.mode == "RGB"
    assert listing(tmp_path / "data") == before  # nothing written next to the input


def test_dicom_series_outputs_on_monai_grid(tmp_path):
    hu = make_study(2, shape=(20, 24, 5))[0]
    folder = write_dicom_series(tmp_path / "series", hu)
    before = listing(folder)
    predict_volumes(FakeTask(_recipe(context=0), channels=1), [str(folder)], tmp_path / "out")
    out = nib.load(tmp_path / "out" / "series_probs.nii.gz")
    assert out.shape == (24, 20, 5)  # MONAI's (columns, rows, slices)
    np.testing.assert_allclose(out.affine, dicom_affine(20, 24, 5), atol=1e-5)
    # HU back from slope/intercept, windowed, in (cols, rows) order
    stored = np.round((hu + 1024.0) / 2.0) * 2.0 - 1024.0
    np.testing.assert_allclose(out.get_fdata(), _windowed(stored).transpose(1, 0, 2), atol=1e-6)
    assert listing(folder) == before
    with pytest.raises(ConfigError, match="inside the DICOM folder"):
        predict_volumes(FakeTask(_recipe(context=0), 1), [str(folder)], folder / "pred")


def test_sliding_window_matches_whole_slice_for_pointwise_model():
    model = PointwiseModel(1)
    x = torch.rand(2, 1, 40, 36)
    whole = _probabilities(model, x, None)
    tiled = _probabilities(model, x, (16, 16))
    assert whole.shape == tiled.shape == (2, 1, 40, 36)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    assert (2, 1, 40, 36) in model.seen and (4, 1, 16, 16) in model.seen


def test_settings_from_recipe_and_errors(tmp_path):
    s = volume_settings(_recipe(context=2, patch=(24, 32)))
    assert s == {"windows": [WINDOW], "context": 2, "roi_size": (24, 32)}
    with pytest.raises(ConfigError, match="not trained on CT volumes"):
        volume_settings({"data": {"train": {"type": "SyntheticSpineCT"},
                                  "val": {"type": "SyntheticSpineCT"}}})
    src = write_nifti(tmp_path / "v.nii.gz", make_study(0, shape=(8, 8, 5))[0])
    with pytest.raises(ConfigError, match="takes 1 input channel"):
        predict_volume(FakeTask(_recipe(context=1), channels=1), src, tmp_path / "o")


def test_montage_without_lesions(tmp_path):
    hu = np.full((16, 16, 3), -1000.0, np.float32)  # air only: windowed 0 -> no mask
    src = write_nifti(tmp_path / "air.nii", hu, LPS_AFFINE)
    files = predict_volume(FakeTask(_recipe(context=0), 1), src, tmp_path / "o")
    assert nib.load(files[1]).get_fdata().sum() == 0 and files[2].is_file()
