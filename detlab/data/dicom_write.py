"""Write an axial CT series as DICOM files: the one writer behind the example files, the tests'
CT data and the data fuzzer (reading is :mod:`detlab.data.medical_io`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["write_dicom_series"]


def write_dicom_series(
    folder: str | Path, hu: np.ndarray, *, spacing: Sequence[float] = (0.8, 0.7),
    thickness: float = 2.5, origin: Sequence[float] = (0.0, 0.0, 0.0), slope: float = 1.0,
    intercept: float = 0.0, series_uid: str | None = None, study_uid: str | None = None,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """One file per slice of ``hu`` ``(rows, cols, slices)`` (Hounsfield units, or any values
    for a mask) in ``folder``; returns the paths in slice order.

    Pixels are stored as int16 raw values ``round((hu - intercept) / slope)`` with
    ``RescaleSlope``/``RescaleIntercept``; slice ``k`` lies at ``origin + (0, 0, k·thickness)``
    mm (LPS, identity orientation), ``spacing`` is (row, column) mm. Without UIDs new ones are
    generated; instance UIDs derive from the series UID, so a fixed ``series_uid`` gives the
    same files every time. ``names``: file names per slice (default ``IM0001.dcm`` …; give a
    shuffled list to make a reader sort by InstanceNumber)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows, cols, n = hu.shape
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    names = list(names) if names is not None else [f"IM{k + 1:04d}.dcm" for k in range(n)]
    paths = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", series_uid, study_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]),
                                   float(origin[2]) + k * thickness]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [float(v) for v in spacing]
        ds.SliceThickness = thickness
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        raw = np.round((np.asarray(hu[:, :, k], np.float64) - intercept) / slope)
        ds.PixelData = np.ascontiguousarray(raw, np.int16).tobytes()
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
