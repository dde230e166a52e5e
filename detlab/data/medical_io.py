"""Reading CT volumes (NIfTI files, DICOM series folders) through MONAI, in one orientation.

Every volume is read with MONAI's ``NibabelReader`` (``.nii``/``.nii.gz``; the file's
``scl_slope``/``scl_inter`` applied) or ``PydicomReader`` (a folder holding one DICOM series;
``RescaleSlope``/``RescaleIntercept`` applied, so CT values are Hounsfield units; no ITK
needed), then reoriented to RAS with MONAI's ``Orientation`` so that every study has the same
voxel order whatever scanner or converter wrote it.

Slices come out as a ``(Z, H, W)`` stack of axial slices in *radiological display* order: slice
``k`` runs inferior → superior, row 0 is the most anterior row and column 0 is the patient's
right (shown on the viewer's left, as on a CT console). :func:`ras_to_slices` and
:func:`slices_to_ras` convert between the RAS voxel array ``(I, J, K)`` and that stack;
:meth:`Volume.to_file_order` maps a prediction back to the voxel order of the file, so it can be
saved with the input's own affine.

Nothing here writes files; readers open their input read-only.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError

__all__ = [
    "NIFTI_SUFFIXES",
    "Volume",
    "is_nifti",
    "is_dicom_dir",
    "is_volume_path",
    "volume_stem",
    "read_volume",
    "ras_to_slices",
    "slices_to_ras",
    "save_nifti",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
_DICM_OFFSET = 128  # DICOM Part 10 files: 128-byte preamble, then b"DICM"
#: Voxel sizes (mm) a volume may have; outside, the header is corrupt (0 spacing, 1e30 …).
SPACING_RANGE = (1e-3, 1e3)
_MAX_ORIGIN_MM = 1e6  # a volume's origin beyond 1 km of the scanner is a corrupt header


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (by suffix; the file need not exist)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(_DICM_OFFSET)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_dir(path: str | Path, probe: int = 8) -> bool:
    """Whether ``path`` is a folder holding DICOM files (``*.dcm``, or files with the DICOM
    Part 10 preamble; the first ``probe`` files without a suffix are looked at)."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if any(p.suffix.lower() == ".dcm" for p in files):
        return True
    return any(_has_dicm_magic(p) for p in files[:probe])


def is_volume_path(path: str | Path) -> bool:
    """A NIfTI file or a DICOM series folder (what :func:`read_volume` reads)."""
    return is_nifti(path) or is_dicom_dir(path)


def volume_stem(path: str | Path) -> str:
    """``study`` for ``study.nii.gz`` / ``study.nii`` / a DICOM folder ``study/``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class Volume:
    """One volume as axial slices (see module docstring for the orientation).

    Attributes:
        slices: ``(Z, H, W)`` array (float32 HU for images, as stored for masks).
        affine_ras: ``(4, 4)`` voxel → world (RAS, mm) affine of the RAS voxel array.
        file_affine: ``(4, 4)`` voxel → world (RAS, mm) affine of the file's own voxel order
            (for NIfTI exactly the file's affine; for DICOM the one MONAI derives).
        file_shape: spatial shape ``(I, J, K)`` of the file's voxel array.
        path: the file or folder read.
    """

    slices: np.ndarray
    affine_ras: np.ndarray
    file_affine: np.ndarray
    file_shape: tuple[int, int, int]
    path: Path

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(dz, dy, dx)`` in mm of the ``(Z, H, W)`` stack."""
        di, dj, dk = np.sqrt((self.affine_ras[:3, :3] ** 2).sum(0))
        return float(dk), float(dj), float(di)

    def to_file_order(self, stack: np.ndarray) -> np.ndarray:
        """Map a ``(Z, H, W)`` (or ``(Z, H, W, C)``) stack on this volume's grid back to the
        file's voxel order ``(I, J, K[, C])``, to be saved with :attr:`file_affine`."""
        if tuple(stack.shape[:3]) != tuple(self.slices.shape):
            raise DataError(
                f"stack of shape {stack.shape} does not fit volume {self.path} "
                f"({self.slices.shape} slices)"
            )
        ras = slices_to_ras(stack)
        codes = "".join(_axcodes(self.file_affine))
        channels = ras.shape[3:]
        data = torch.from_numpy(np.ascontiguousarray(ras.reshape(*ras.shape[:3], -1)))
        data = data.permute(3, 0, 1, 2)  # MONAI transforms are channel-first
        back, _ = _orient(data, self.affine_ras, codes)
        out = back.permute(1, 2, 3, 0).numpy()
        return out.reshape(*out.shape[:3], *channels) if channels else out[..., 0]


def _require_medical() -> None:
    try:
        import nibabel  # noqa: F401
        import pydicom  # noqa: F401
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"reading CT volumes needs nibabel and pydicom ({err.name} is missing): "
            "pip install 'detlab[medical]'"
        ) from err


def _axcodes(affine: np.ndarray) -> tuple[str, ...]:
    import nibabel as nib

    return tuple(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def _orient(
    data: torch.Tensor, affine: np.ndarray, axcodes: str
) -> tuple[torch.Tensor, np.ndarray]:
    """``(C, I, J, K)`` data on ``affine`` reoriented to ``axcodes`` (MONAI ``Orientation``);
    returns the data and its new affine."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    meta = MetaTensor(data, affine=torch.as_tensor(np.asarray(affine, dtype=np.float64)))
    out = Orientation(axcodes=axcodes, labels=_RAS_LABELS)(meta)
    return out.as_tensor(), np.asarray(out.affine, dtype=np.float64)


def ras_to_slices(volume: np.ndarray) -> np.ndarray:
    """RAS voxel array ``(I, J, K[, C])`` → display stack ``(K, J, I[, C])`` with
    ``out[k, r, c] = volume[I-1-c, J-1-r, k]`` (row 0 anterior, column 0 patient right)."""
    axes = (2, 1, 0) + tuple(range(3, volume.ndim))
    return np.ascontiguousarray(volume[::-1, ::-1].transpose(axes))


def slices_to_ras(stack: np.ndarray) -> np.ndarray:
    """Inverse of :func:`ras_to_slices`: ``(K, J, I[, C])`` → ``(I, J, K[, C])``."""
    axes = (2, 1, 0) + tuple(range(3, stack.ndim))
    return np.ascontiguousarray(stack.transpose(axes)[::-1, ::-1])


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from monai.data import NibabelReader

    import nibabel as nib

    # MONAI's reader replaces a singular header affine (a zero pixdim or sform column) by the
    # identity without a word: check the file's own affine (header only, no voxels) first.
    _check_affine(np.asarray(nib.load(str(path)).affine, dtype=np.float64), str(path))
    reader = NibabelReader()
    array, meta = reader.get_data(reader.read(str(path)))
    return np.asarray(array), np.asarray(meta["affine"], dtype=np.float64)


def _check_series(datasets: list[Any], folder: Path) -> None:
    """One series, instance numbers present, slices evenly spaced along the slice normal:
    MONAI orders slices by InstanceNumber and builds the affine from the first and last."""
    uids = {str(getattr(d, "SeriesInstanceUID", "")) for d in datasets}
    if len(uids) > 1:
        raise DataError(
            f"DICOM folder {folder} holds {len(uids)} series; put each series in its own folder"
        )
    missing = [d for d in datasets if not hasattr(d, "InstanceNumber")]
    if missing:
        raise DataError(f"DICOM folder {folder}: {len(missing)} file(s) have no InstanceNumber")
    try:
        ordered = sorted(datasets, key=lambda d: int(d.InstanceNumber))
    except (TypeError, ValueError) as err:
        raise DataError(f"DICOM folder {folder}: InstanceNumber is not an integer ({err})")
    try:
        iops = [np.asarray(d.ImageOrientationPatient, dtype=np.float64) for d in ordered]
        pos = np.asarray([d.ImagePositionPatient for d in ordered], dtype=np.float64)
        spacing = [np.asarray(d.PixelSpacing, dtype=np.float64) for d in ordered]
        slopes = [float(getattr(d, "RescaleSlope", 1.0)) for d in ordered]
    except AttributeError as err:
        raise DataError(f"DICOM folder {folder}: {err} (needed for the volume's geometry)")
    except (TypeError, ValueError) as err:
        raise DataError(f"DICOM folder {folder}: geometry tags are not numbers ({err})")
    iop = iops[0]
    _check_dicom_geometry(folder, iop, pos, spacing)
    for i, (other, ps) in enumerate(zip(iops, spacing)):
        if other.shape != iop.shape or not np.allclose(other, iop, atol=1e-4) or not np.allclose(
                ps, spacing[0], rtol=1e-4):
            raise DataError(
                f"DICOM folder {folder}: file {i + 1} (by InstanceNumber) has orientation "
                f"{other.tolist()} / spacing {ps.tolist()} but file 1 has {iop.tolist()} / "
                f"{spacing[0].tolist()}; a series shares one orientation and pixel spacing"
            )
    bad_slope = [i + 1 for i, v in enumerate(slopes) if not math.isfinite(v) or v == 0]
    if bad_slope:
        raise DataError(f"DICOM folder {folder}: RescaleSlope of file(s) {bad_slope[:5]} (by "
                        "InstanceNumber) is 0 or not finite")
    normal = np.cross(iop[:3], iop[3:])
    steps = np.diff(pos @ normal)
    if len(steps) and (
        np.any(np.abs(steps) < 1e-6) or not np.allclose(steps, steps[0], rtol=0.05, atol=1e-3)
    ):
        raise DataError(
            f"DICOM folder {folder}: slices ordered by InstanceNumber are not evenly spaced "
            f"along the slice normal (steps {np.round(steps, 3).tolist()[:8]} mm); a volume "
            "needs one evenly spaced stack"
        )


def _check_dicom_geometry(folder: Path, iop: np.ndarray, pos: np.ndarray,
                          spacing: list[np.ndarray]) -> None:
    """ImageOrientationPatient: two orthogonal unit vectors; ImagePositionPatient: one finite
    (x, y, z) per file; PixelSpacing: two positive sizes within :data:`SPACING_RANGE`."""
    if iop.shape != (6,) or not np.isfinite(iop).all():
        raise DataError(f"DICOM folder {folder}: ImageOrientationPatient {iop.tolist()} must be "
                        "6 finite numbers")
    row, col = iop[:3], iop[3:]
    if (abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2
            or abs(float(row @ col)) > 1e-2):
        raise DataError(f"DICOM folder {folder}: ImageOrientationPatient {iop.tolist()} is not "
                        "two orthogonal unit vectors (row and column directions)")
    if pos.ndim != 2 or pos.shape[1] != 3 or not np.isfinite(pos).all():
        raise DataError(f"DICOM folder {folder}: ImagePositionPatient must be 3 finite numbers "
                        "in every file")
    lo, hi = SPACING_RANGE
    for i, ps in enumerate(spacing):
        if ps.shape != (2,) or not np.isfinite(ps).all() or (ps < lo).any() or (ps > hi).any():
            raise DataError(f"DICOM folder {folder}: PixelSpacing {ps.tolist()} of file {i + 1} "
                            f"(by InstanceNumber) must be 2 sizes in [{lo:g}, {hi:g}] mm")


def _check_affine(affine: np.ndarray, where: str) -> None:
    """The voxel -> world affine must be finite with voxel sizes in :data:`SPACING_RANGE` and
    non-collinear axes (a zero spacing or orientation in the header makes it singular)."""
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise DataError(f"{where}: the voxel-to-world affine is not finite "
                        f"({np.round(affine, 4).tolist()})")
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(0))
    lo, hi = SPACING_RANGE
    if (sizes < lo).any() or (sizes > hi).any():
        raise DataError(f"{where}: voxel spacing {np.round(sizes, 6).tolist()} mm is outside "
                        f"[{lo:g}, {hi:g}] mm (zero or corrupt spacing/orientation in the header)")
    if np.abs(affine[:3, 3]).max() > _MAX_ORIGIN_MM:
        raise DataError(f"{where}: the volume's origin {np.round(affine[:3, 3], 3).tolist()} mm "
                        f"lies more than {_MAX_ORIGIN_MM:g} mm from the scanner centre: a "
                        "corrupt header")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-3 * float(np.prod(sizes)):
        raise DataError(f"{where}: the voxel axes of the affine are (nearly) collinear "
                        f"({np.round(affine[:3, :3], 4).tolist()}): corrupt orientation")


def _read_dicom_dir(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from monai.data import PydicomReader

    reader = PydicomReader(fname_regex=None)  # pydicom.misc.is_dicom picks the files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns per unreadable file; we check below
        objs = reader.read(str(path))
    datasets = objs if isinstance(objs, list) else [objs]
    if len(datasets) < 2:
        raise DataError(f"DICOM folder {path} holds {len(datasets)} image(s); a volume needs >= 2")
    _check_series(datasets, path)
    array, meta = reader.get_data(objs)
    return np.asarray(array), np.asarray(meta["affine"], dtype=np.float64)


def read_volume(path: str | Path, what: str = "image", case_id: str | None = None) -> Volume:
    """Read a NIfTI file or a DICOM series folder as a :class:`Volume` of axial slices.

    Images come back as float32 (Hounsfield units for CT: rescale slope/intercept applied);
    masks keep their stored values (as float32; the caller checks the labels).

    Args:
        path: ``.nii``/``.nii.gz`` file or a folder with one DICOM series.
        what: ``"image"`` or ``"mask"``, used in error messages.
        case_id: named in error messages.

    Raises:
        DataError: missing or unreadable file, not a 3D volume, inconsistent DICOM series,
            an affine with zero/corrupt spacing or orientation (voxel sizes outside
            :data:`SPACING_RANGE`, collinear axes), DICOM tags that are not numbers.
    """
    _require_medical()
    path = Path(path)
    who = f"case {case_id!r}: " if case_id is not None else ""
    try:
        found = path.exists()
    except (OSError, ValueError) as err:  # a name too long, a NUL byte
        raise DataError(f"{who}cannot access {what} {str(path)[:200]}: {err}") from None
    if not found:
        raise DataError(f"{who}{what} not found: {path}")
    if not (is_nifti(path) or path.is_dir()):
        raise DataError(
            f"{who}{what} {path} is neither a NIfTI file (.nii, .nii.gz) nor a DICOM folder"
        )
    try:
        array, affine = _read_nifti(path) if is_nifti(path) else _read_dicom_dir(path)
    except DataError as err:
        raise DataError(f"{who}{err}") from err
    except Exception as err:  # nibabel/pydicom/gzip raise many types for damaged files
        first = str(err).splitlines()[0] if str(err) else ""
        raise DataError(
            f"{who}cannot read {what} {path}: {type(err).__name__}: {first}"
        ) from err
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3 or min(array.shape) < 1:
        raise DataError(f"{who}{what} {path} is not a 3D volume (array shape {array.shape})")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{who}{what} {path} holds {array.dtype} voxels, not numbers")
    _check_affine(np.asarray(affine, dtype=np.float64), f"{who}{what} {path}")
    file_shape = tuple(int(s) for s in array.shape)
    data = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    ras, affine_ras = _orient(data, affine, "RAS")
    return Volume(
        slices=ras_to_slices(ras[0].numpy()),
        affine_ras=affine_ras,
        file_affine=affine,
        file_shape=file_shape,  # type: ignore[arg-type]
        path=path,
    )


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write ``array`` ``(I, J, K[, C])`` with ``affine`` as NIfTI (gzip for ``.nii.gz``)."""
    _require_medical()
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path
