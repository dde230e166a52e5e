"""CT volumes: HU from DICOM rescale tags and NIfTI scaling, RAS orientation, windows, 2.5D,
the case-wise split, case lists, transforms, sampling, and each bad input."""

from __future__ import annotations

import json
import logging
import pickle

import nibabel as nib
import numpy as np
import pytest
from ct_data import (
    LPS_AFFINE,
    dicom_affine,
    listing,
    make_study,
    write_dicom_series,
    write_msd,
    write_nifti,
)

from detlab.data.ct_cases import list_cases, split_cases
from detlab.data.datasets.ct_volumes import (
    CTVolumeSlices,
    apply_windows,
    parse_windows,
    slice_stack,
)
from detlab.data.medical_io import is_volume_path, ras_to_slices, read_volume, slices_to_ras
from detlab.data.samplers import PositiveOversampler
from detlab.errors import ConfigError, DataError
from detlab.registry import DATASETS


@pytest.fixture
def msd(tmp_path):
    return write_msd(tmp_path / "Task", num_cases=5)


def test_dicom_series_hu_and_geometry(tmp_path):
    # raw = (HU + 1024) / 2 stored as int16: every HU below is a multiple of 2, so exact
    hu = np.random.default_rng(0).integers(-512, 700, (6, 5, 4)).astype(np.float32) * 2
    folder = write_dicom_series(tmp_path / "series", hu)
    assert is_volume_path(folder)
    vol = read_volume(folder)
    # axial DICOM in standard orientation: the display stack is the pixel arrays, as sent
    assert vol.slices.dtype == np.float32 and vol.slices.shape == (4, 6, 5)
    for k in range(4):
        np.testing.assert_array_equal(vol.slices[k], hu[:, :, k])
    np.testing.assert_allclose(vol.file_affine, dicom_affine(6, 5, 4), atol=1e-9)
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.7))
    assert nib.aff2axcodes(vol.affine_ras) == ("R", "A", "S")


def test_nifti_orientation_matches_nibabel_canonical(tmp_path):
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    oblique = np.array([[0, 0, -2.0, 10], [-0.7, 0, 0, 5], [0, 0.8, 0.1, -3], [0, 0, 0, 1]])
    for affine in (LPS_AFFINE, oblique):
        path = write_nifti(tmp_path / "v.nii.gz", arr, affine)
        vol = read_volume(path)
        canonical = nib.as_closest_canonical(nib.load(path))  # the oracle for RAS
        np.testing.assert_array_equal(slices_to_ras(vol.slices), canonical.get_fdata())
        np.testing.assert_allclose(vol.affine_ras, canonical.affine, atol=1e-6)
        np.testing.assert_array_equal(vol.to_file_order(vol.slices), arr)  # inverse
        np.testing.assert_array_equal(vol.file_affine, nib.load(path).affine)
    # LPS order: a display slice is the file slice transposed (row = j = posterior-ward)
    vol = read_volume(write_nifti(tmp_path / "lps.nii.gz", arr, LPS_AFFINE))
    np.testing.assert_array_equal(vol.slices[2], arr[:, :, 2].T)


def test_display_order_marker():
    # RAS voxel (I-1, J-1, 0) is right-most, anterior-most, inferior: display [0, 0, 0]
    ras = np.zeros((4, 3, 2))
    ras[3, 2, 0] = 1
    disp = ras_to_slices(ras)
    assert disp.shape == (2, 3, 4) and disp[0, 0, 0] == 1 and disp.sum() == 1
    np.testing.assert_array_equal(slices_to_ras(disp), ras)


def test_nifti_scaling_applied(tmp_path):
    raw = np.arange(-5, 5, dtype=np.int16).reshape(2, 5, 1).repeat(2, axis=2)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / "scaled.nii"
    nib.save(img, str(path))
    vol = read_volume(path)
    np.testing.assert_array_equal(slices_to_ras(vol.slices), raw * 2.0 - 1024.0)


WINDOW_CASES = [
    (dict(level=40, width=400), [(-160.0, 240.0)]),
    (dict(min=-250, max=1250), [(-250.0, 1250.0)]),
    ([dict(level=400, width=1800), dict(min=0, max=100)], [(-500.0, 1300.0), (0.0, 100.0)]),
]


@pytest.mark.parametrize("cfg,expected", WINDOW_CASES)
def test_parse_windows(cfg, expected):
    assert parse_windows(cfg) == expected


@pytest.mark.parametrize("bad", [[], [dict(level=40)], [dict(min=5, max=5)], "bone",
                                 [dict(level=0, width=-1)]])
def test_parse_windows_rejects(bad):
    with pytest.raises(ConfigError, match="windows"):
        parse_windows(bad)


def test_apply_windows_hand_values():
    hu = np.array([[-1000.0, -160.0, 40.0, 240.0, 900.0]])
    out = apply_windows(hu, [(-160.0, 240.0), (0.0, 100.0)])
    np.testing.assert_allclose(out[0], [[0, 0, 0.5, 1, 1]])
    np.testing.assert_allclose(out[1], [[0, 0, 0.4, 1, 1]])


def test_slice_stack_repeats_edges():
    stack = np.arange(4)[:, None, None] * np.ones((4, 2, 2))
    assert slice_stack(stack, 0, 2)[:, 0, 0].tolist() == [0, 0, 0, 1, 2]
    assert slice_stack(stack, 3, 1)[:, 0, 0].tolist() == [2, 3, 3]


def test_split_by_case_is_disjoint_and_deterministic():
    ids = [f"c{i}" for i in range(10)]
    train = split_cases(ids, "train", 0.3, seed=1)
    val = split_cases(ids[::-1], "val", 0.3, seed=1)  # order of the input does not matter
    assert len(val) == 3 and not set(train) & set(val) and set(train) | set(val) == set(ids)
    assert split_cases(ids, "val", 0.3, seed=1) == val
    assert split_cases(ids, "val", 0.3, seed=2) != val  # (true for these seeds)
    assert split_cases(ids, "val", val_cases=["c4"]) == ["c4"]
    assert len(split_cases(["a", "b"], "val", 0.01)) == 1  # at least one val case
    with pytest.raises(ConfigError, match="did you mean 'c4'"):
        split_cases(ids, "val", val_cases=["c04"])


def test_dataset_split_never_shares_a_case(msd):
    train = CTVolumeSlices(root=str(msd), split="train", val_fraction=0.4)
    val = CTVolumeSlices(root=str(msd), split="val", val_fraction=0.4)
    assert len(val.case_ids()) == 2 and len(train.case_ids()) == 3
    assert len(train) == 3 * 8 and len(val) == 2 * 8  # every slice of a case, in its split
    train_cases = {train[i]["meta"]["case_id"] for i in range(len(train))}
    val_cases = {val[i]["meta"]["case_id"] for i in range(len(val))}
    assert train_cases == set(train.case_ids()) and not train_cases & val_cases
    assert DATASETS.get("CTVolumeSlices") is CTVolumeSlices


def test_item_values_channels_and_flags(msd):
    windows = [dict(min=-250, max=1250), dict(level=40, width=400)]
    ds = CTVolumeSlices(root=str(msd), split="all", windows=windows, context=1)
    assert ds.in_channels == 6
    hu, mask = make_study(0)
    disp_hu, disp_mask = hu[:, :, :].transpose(2, 1, 0), mask.transpose(2, 1, 0)  # LPS -> display
    item = ds[0]  # case_0, slice 0: neighbours (0, 0, 1)
    assert item["meta"]["case_id"] == "case_0" and item["meta"]["slice_index"] == 0
    assert item["meta"]["path"].endswith("case_0.nii.gz") and item["image"].shape == (6, 32, 32)
    expected = apply_windows(disp_hu[[0, 0, 1]].astype(np.int16), parse_windows(windows))
    np.testing.assert_allclose(item["image"].numpy(), expected.reshape(6, 32, 32), atol=1e-6)
    np.testing.assert_array_equal(ds[3]["target"]["mask"][0].numpy(), disp_mask[3])
    flags = ds.positive_flags()
    assert flags.tolist() == [k in (3, 4) for _ in range(5) for k in range(8)]


def test_positive_oversampler_on_ct_slices(msd):
    ds = CTVolumeSlices(root=str(msd), split="all")
    sampler = PositiveOversampler(ds, positive_fraction=0.5, num_samples=400)
    idx = np.array(list(sampler))
    assert ds.positive_flags()[idx].mean() == pytest.approx(0.5, abs=0.08)


def test_transforms_move_image_and_mask_together(msd):
    ds = CTVolumeSlices(root=str(msd), split="all", windows=[dict(level=30, width=2)],
                        transforms=[dict(type="HorizontalFlip", p=1.0)])
    plain = CTVolumeSlices(root=str(msd), split="all", windows=[dict(level=30, width=2)])
    a, b = ds[3], plain[3]
    flipped = b["target"]["mask"].numpy()[..., ::-1]
    np.testing.assert_array_equal(a["target"]["mask"].numpy(), flipped)
    lesion = a["target"]["mask"][0] > 0
    # the lesion (30 HU: the window's centre) is where the mask is, after the flip too
    assert float(a["image"][0][lesion].mean()) == pytest.approx(0.5)


def test_case_lists_csv_json_and_dicom(tmp_path, msd):
    hu, mask = make_study(7, shape=(32, 32, 8))
    dcm = write_dicom_series(tmp_path / "dicom" / "p7", hu)
    # the DICOM series is (rows, cols, slices); its mask as NIfTI on MONAI's voxel grid
    write_nifti(tmp_path / "dicom" / "p7_mask.nii.gz", mask.transpose(1, 0, 2),
                dicom_affine(32, 32, 8))
    csv_file = tmp_path / "cases.csv"
    csv_file.write_text("case_id,image,mask\np7,dicom/p7,dicom/p7_mask.nii.gz\n"
                        f"a,{msd}/imagesTr/case_1.nii.gz,{msd}/labelsTr/case_1.nii.gz\n")
    json_file = tmp_path / "cases.json"
    json_file.write_text(json.dumps([{"case_id": "p7", "image": "dicom/p7",
                                      "mask": "dicom/p7_mask.nii.gz"}]))
    assert [c.case_id for c in list_cases(csv_file)] == ["a", "p7"]
    ds = CTVolumeSlices(root=str(json_file), split="all")
    assert ds.case_ids() == ["p7"] and ds.positive_flags().sum() == 2
    k = 3  # a lesion slice: the display mask of the DICOM case is its (rows, cols) mask
    np.testing.assert_array_equal(ds[k]["target"]["mask"][0].numpy(), mask[:, :, k])
    assert ds[k]["meta"]["path"] == str(dcm)


def test_msd_dataset_json_and_hidden_files(msd):
    (msd / "imagesTr" / "._case_0.nii.gz").write_bytes(b"\x00junk")  # macOS resource fork
    assert [c.case_id for c in list_cases(msd)] == [f"case_{i}" for i in range(5)]
    (msd / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "fracture", "2": "other"},
        "training": [{"image": "./imagesTr/case_2.nii.gz", "label": "./labelsTr/case_2.nii.gz"}],
    }))
    ds = CTVolumeSlices(root=str(msd), split="all")
    assert ds.case_ids() == ["case_2"] and ds.mask_labels == (0, 1, 2)


def test_cache_is_per_process_and_bounded(msd):
    ds = CTVolumeSlices(root=str(msd), split="all", cache_size=2)
    assert len(ds._cache.items) == 2
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone._cache.items) == 0  # workers start empty and fill their own
    np.testing.assert_array_equal(clone[0]["image"].numpy(), ds[0]["image"].numpy())
    assert list(clone._cache.items) == [0]


def _bad(msd, kind):
    """Break case_1 of ``msd`` in one way; return the file that is named in the error."""
    img, lab = msd / "imagesTr" / "case_1.nii.gz", msd / "labelsTr" / "case_1.nii.gz"
    hu, mask = make_study(1)
    if kind == "shape":
        write_nifti(lab, mask[:, :, :6])
        return lab
    if kind == "affine":
        shifted = LPS_AFFINE.copy()
        shifted[0, 3] += 1.0
        write_nifti(lab, mask, shifted)
        return lab
    if kind == "unreadable":
        img.write_bytes(b"not a nifti file at all")
        return img
    if kind == "labels":
        mask[0, 0, 0] = 7
        write_nifti(lab, mask)
        return lab
    if kind == "nan":
        hu[5, 5, 5] = np.nan
        write_nifti(img, hu)
        return img
    raise AssertionError(kind)


BAD = [("shape", "shape"), ("affine", "affines"), ("unreadable", "cannot read image"),
       ("labels", r"label value\(s\) \[7\]"), ("nan", "NaN")]


@pytest.mark.parametrize("kind,message", BAD, ids=[b[0] for b in BAD])
def test_bad_case_raises_naming_case_and_file(msd, kind, message):
    path = _bad(msd, kind)
    with pytest.raises(DataError, match=message) as info:
        CTVolumeSlices(root=str(msd), split="all")
    assert "case 'case_1'" in str(info.value) and str(path) in str(info.value)


def test_skip_bad_cases_warns_and_counts(msd, caplog):
    _bad(msd, "nan")
    write_nifti(msd / "labelsTr" / "case_3.nii.gz", make_study(3)[1][:, :, :2])
    with caplog.at_level(logging.WARNING, logger="detlab.data"):
        ds = CTVolumeSlices(root=str(msd), split="all", skip_bad_cases=True)
    assert ds.case_ids() == ["case_0", "case_2", "case_4"] and len(ds) == 24
    assert [c for c, _ in ds.skipped] == ["case_1", "case_3"]
    assert "skipped 2 of 5 case(s)" in caplog.text


def test_missing_root_and_mask(tmp_path, msd):
    with pytest.raises(ConfigError, match="data.root"):
        CTVolumeSlices()
    with pytest.raises(DataError, match="not found"):
        CTVolumeSlices(root=str(tmp_path / "nowhere"))
    (msd / "labelsTr" / "case_4.nii.gz").unlink()
    with pytest.raises(DataError, match="case 'case_4': no mask"):
        list_cases(msd)


def test_reading_writes_nothing_into_the_data_folder(msd):
    before = listing(msd)
    ds = CTVolumeSlices(root=str(msd), split="all", cache_size=0)
    for i in range(0, len(ds), 7):
        ds[i]
    assert listing(msd) == before


def test_datamodule_fills_root_and_rejects_shared_cases(msd):
    from detlab.data.datamodule import DataModule
    from detlab.defaults import DATA_DEFAULTS

    ct = dict(type="CTVolumeSlices", val_fraction=0.4)
    cfg = {**DATA_DEFAULTS, "root": str(msd), "train": dict(ct, split="train"),
           "val": dict(ct, split="val"), "num_workers": 0}
    dm = DataModule(cfg)
    assert dm.dataset("train").root == str(msd) and len(dm.dataset("val").case_ids()) == 2
    leaky = {**cfg, "val": dict(ct, split="val", val_fraction=0.6, seed=3)}
    dm = DataModule(leaky)
    dm.dataset("train")
    with pytest.raises(DataError, match=r"case\(s\) are in both data.train and data.val"):
        dm.dataset("val")
    with pytest.raises(ConfigError, match="quote them"):
        split_cases(["a", "b"], "val", val_cases="a")
