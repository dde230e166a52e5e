"""Tiny CT studies written to a temp dir for the CT tests: NIfTI volumes with a non-trivial
affine, a Decathlon-layout folder and a DICOM series with rescale slope/intercept."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from detlab.data.dicom_write import write_dicom_series as write_dicom_series_files

# LPS voxel order (axcodes L, P, S: index i runs to the patient's left, j to posterior), so
# reorientation to RAS must flip the first two axes; 0.8 x 0.7 x 2.5 mm voxels.
LPS_AFFINE = np.array([
    [-0.8, 0.0, 0.0, 100.0],
    [0.0, -0.7, 0.0, 80.0],
    [0.0, 0.0, 2.5, -50.0],
    [0.0, 0.0, 0.0, 1.0],
])


def make_study(seed: int, shape=(32, 32, 8), lesion_slices=(3, 4)) -> tuple[np.ndarray, np.ndarray]:
    """HU volume (air, a soft-tissue disc, a bone block) and a uint8 lesion mask with a small
    blob on ``lesion_slices``; arrays in voxel order ``(I, J, K)``."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = (i - shape[0] / 2) ** 2 + (j - shape[1] / 2) ** 2 < (0.45 * min(shape[:2])) ** 2
    hu[body] = 40.0
    hu[10:22, 12:20, :] = 700.0
    hu += rng.integers(-5, 6, shape).astype(np.float32)
    mask = np.zeros(shape, dtype=np.uint8)
    ci, cj = 14 + seed % 4, 15
    for k in lesion_slices:
        mask[ci : ci + 3, cj : cj + 2, k] = 1
        hu[ci : ci + 3, cj : cj + 2, k] = 30.0
    return hu, mask


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray = LPS_AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def write_msd(root: Path, num_cases: int = 5, shape=(32, 32, 8), **kw) -> Path:
    """Decathlon folder ``root/imagesTr/case_<i>.nii.gz`` + ``root/labelsTr/…``."""
    for n in range(num_cases):
        hu, mask = make_study(n, shape, **kw)
        write_nifti(root / "imagesTr" / f"case_{n}.nii.gz", hu.astype(np.int16))
        write_nifti(root / "labelsTr" / f"case_{n}.nii.gz", mask)
    return root


def write_dicom_series(folder: Path, hu: np.ndarray, spacing=(0.8, 0.7), thickness=2.5,
                       origin=(-10.0, -20.0, 30.0), slope=2.0, intercept=-1024.0,
                       shuffle_files: bool = True) -> Path:
    """An axial CT series (one file per slice) of ``hu`` ``(rows, cols, slices)``, stored as
    int16 raw values with ``RescaleSlope``/``RescaleIntercept``; file names in a shuffled
    order so the reader must sort by InstanceNumber."""
    n = hu.shape[2]
    order = np.random.default_rng(0).permutation(n) if shuffle_files else np.arange(n)
    write_dicom_series_files(folder, hu, spacing=spacing, thickness=thickness, origin=origin,
                             slope=slope, intercept=intercept,
                             names=[f"IM{order[k]:04d}.dcm" for k in range(n)])
    return folder


def dicom_affine(rows: int, cols: int, n: int, spacing=(0.8, 0.7), thickness=2.5,
                 origin=(-10.0, -20.0, 30.0)) -> np.ndarray:
    """RAS affine of the series above for a voxel array ``(cols, rows, slices)`` (MONAI's
    order), written by hand from the DICOM definitions."""
    aff = np.eye(4)
    aff[0, 0] = -spacing[1]          # columns run along +x LPS = patient left: -x in RAS
    aff[1, 1] = -spacing[0]          # rows run along +y LPS = posterior: -y in RAS
    aff[2, 2] = thickness
    aff[:3, 3] = [-origin[0], -origin[1], origin[2]]
    return aff


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with (size, mtime_ns): to prove nothing was written there."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


__all__ = ["LPS_AFFINE", "make_study", "write_nifti", "write_msd", "write_dicom_series",
           "dicom_affine", "listing"]
