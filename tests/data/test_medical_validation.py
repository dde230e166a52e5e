"""CT data safety (issue 11): corrupt DICOM/NIfTI geometry and absurd voxel values are a
DataError naming the case and the file; case lists cannot point out of their folder."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nibabel")
pytest.importorskip("pydicom")

import pydicom  # noqa: E402
from ct_data import LPS_AFFINE, make_study, write_dicom_series, write_msd, write_nifti  # noqa: E402

from detlab.data.ct_cases import list_cases  # noqa: E402
from detlab.data.datasets.ct_volumes import CTVolumeSlices  # noqa: E402
from detlab.data.medical_io import read_volume  # noqa: E402
from detlab.errors import DataError  # noqa: E402


def _sform_only(path, array, affine):
    """A NIfTI whose affine is only in the sform (nibabel cannot store a singular qform)."""
    import nibabel as nib

    img = nib.Nifti1Image(array, None)
    img.set_sform(affine, code=1)
    img.set_qform(None, code=0)
    nib.save(img, str(path))
    return path


def _series(tmp_path):
    hu, _ = make_study(0, shape=(8, 8, 3), lesion_slices=(1,))
    return write_dicom_series(tmp_path / "p1", hu, shuffle_files=False)


def _set_tag(folder, name, value, files=None):
    for path in sorted(folder.glob("*.dcm"))[: files]:
        ds = pydicom.dcmread(path)
        setattr(ds, name, value)
        ds.save_as(path)


@pytest.mark.parametrize("name, value, files, match", [
    ("PixelSpacing", [0, 0], None, r"PixelSpacing \[0.0, 0.0\] of file 1 .* must be 2 sizes in"),
    ("PixelSpacing", [0.8, 0.0], 1, r"PixelSpacing \[0.8, 0.0\] of file 1"),
    ("ImageOrientationPatient", [0] * 6, None, "is not two orthogonal unit vectors"),
    ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0], None, "is not two orthogonal unit vectors"),
    ("ImageOrientationPatient", [0, 1, 0, 1, 0, 0], 1, "file 2 .* has orientation"),
    ("ImagePositionPatient", [0.0, 0.0, 0.0], None, "not evenly spaced"),
    ("RescaleSlope", 0, 1, r"RescaleSlope of file\(s\) \[1\]"),
])
def test_corrupt_dicom_geometry_is_a_data_error(tmp_path, name, value, files, match):
    folder = _series(tmp_path)
    _set_tag(folder, name, value, files)
    with pytest.raises(DataError, match=match) as info:
        read_volume(folder, "image", "p1")
    assert "case 'p1'" in str(info.value) and str(folder) in str(info.value)


@pytest.mark.parametrize("column", [0, 2])
def test_nifti_zero_spacing_is_a_data_error(tmp_path, column):
    hu, _ = make_study(0, shape=(8, 8, 3), lesion_slices=(1,))
    affine = LPS_AFFINE.copy()
    affine[:3, column] = 0.0
    path = _sform_only(tmp_path / "a.nii.gz", hu, affine)
    with pytest.raises(DataError, match=r"a.nii.gz: voxel spacing .* is outside \[0.001, 1000\]"):
        read_volume(path, "image", "a")


def test_nifti_collinear_axes_are_a_data_error(tmp_path):
    hu, _ = make_study(0, shape=(8, 8, 3), lesion_slices=(1,))
    affine = LPS_AFFINE.copy()
    affine[:3, 1] = affine[:3, 0]
    path = _sform_only(tmp_path / "a.nii.gz", hu, affine)
    with pytest.raises(DataError, match="collinear"):
        read_volume(path, "image", "a")


def test_absurd_voxel_values_are_a_data_error(tmp_path):
    root = write_msd(tmp_path / "Task", num_cases=2, shape=(8, 8, 3), lesion_slices=(1,))
    hu, _ = make_study(1, shape=(8, 8, 3), lesion_slices=(1,))
    hu[2, 2, 1] = 3e38
    write_nifti(root / "imagesTr" / "case_1.nii.gz", hu.astype(np.float32))
    with pytest.raises(DataError, match=r"case 'case_1'.*case_1.nii.gz has 1 voxel\(s\) with "
                                        r"\|value\| > 100000 HU \(up to 3e\+38\)"):
        CTVolumeSlices(root=str(root), split="all")


def test_case_list_paths_stay_in_its_folder(tmp_path):
    root = write_msd(tmp_path / "elsewhere", num_cases=1, shape=(8, 8, 3), lesion_slices=(1,))
    (tmp_path / "lists").mkdir()
    lst = tmp_path / "lists" / "cases.csv"
    lst.write_text("case_id,image,mask\na,../elsewhere/imagesTr/case_0.nii.gz,"
                   f"{root}/labelsTr/case_0.nii.gz\n")
    with pytest.raises(DataError, match=r"cases.csv, entry 1 \(image\): file "
                                        r"'../elsewhere/imagesTr/case_0.nii.gz' resolves to"):
        list_cases(lst)
    assert [c.case_id for c in list_cases(lst, allow_outside_root=True)] == ["a"]
    ds = CTVolumeSlices(root=str(lst), split="all", allow_outside_root=True)
    assert ds.case_ids() == ["a"]


def test_skipped_cases_are_in_the_report_and_bounded(tmp_path):
    root = write_msd(tmp_path / "Task", num_cases=4, shape=(8, 8, 3), lesion_slices=(1,))
    (root / "imagesTr" / "case_2.nii.gz").write_bytes(b"broken")
    ds = CTVolumeSlices(root=str(root), split="all", skip_bad_cases=True)
    report = ds.data_report()
    assert report.samples == 4 and report.counts == {("skipped", "bad case files"): 1}
    assert report.summary().endswith("4 cases, skipped 1 (bad case files)")
    with pytest.raises(DataError, match=r"skipped 1 of 4 samples \(25.0%\), more than "
                                        r"max_bad_fraction=0.1"):
        CTVolumeSlices(root=str(root), split="all", skip_bad_cases=True, max_bad_fraction=0.1)
