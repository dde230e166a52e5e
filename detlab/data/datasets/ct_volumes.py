"""``CTVolumeSlices``: axial 2D / 2.5D slices of CT studies (NIfTI or DICOM) with their masks.

Volumes are read through MONAI (:mod:`detlab.data.medical_io`): Hounsfield units, RAS
orientation, slices in radiological display order. Each slice is windowed (one channel per HU
window) and, for 2.5D, stacked with its ``context`` neighbours on each side (edge slices
repeated), so an item has ``len(windows) * (2 * context + 1)`` channels, window-major: channel
``w * (2 * context + 1) + j`` is window ``w`` of slice ``k - context + j``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ...checks import check_int
from ...errors import ConfigError, DataError
from ...registry import DATASETS
from ..ct_cases import CaseFiles, list_cases, msd_labels, split_cases
from ..medical_io import read_volume
from ..transforms import build_transforms
from ..validation import DataReport, check_bad_fraction

__all__ = ["CTVolumeSlices", "parse_windows", "apply_windows", "slice_stack", "load_case"]

log = logging.getLogger("detlab.data")

DEFAULT_WINDOWS: tuple[dict[str, float], ...] = (dict(min=-250.0, max=1250.0),)
#: Largest |value| (HU) a CT image may hold; beyond it the file's scaling is corrupt (CT values
#: lie in about [-1024, 3071] HU, extended scales reach a few 10^4).
MAX_ABS_HU = 1e5


def parse_windows(windows: Any) -> list[tuple[float, float]]:
    """HU windows as ``(low, high)`` pairs from ``dict(level=, width=)`` or ``dict(min=, max=)``
    entries (a single dict is one window)."""
    if isinstance(windows, Mapping):
        windows = [windows]
    if not isinstance(windows, Sequence) or isinstance(windows, str) or not windows:
        raise ConfigError(f"windows must be a non-empty list of dicts, got {windows!r}")
    out = []
    for i, w in enumerate(windows):
        keys = set(w) if isinstance(w, Mapping) else set()
        if keys == {"level", "width"}:
            lo, hi = w["level"] - w["width"] / 2.0, w["level"] + w["width"] / 2.0
        elif keys == {"min", "max"}:
            lo, hi = w["min"], w["max"]
        else:
            raise ConfigError(
                f"windows[{i}] must be dict(level=, width=) or dict(min=, max=) in HU, got {w!r}"
            )
        if not float(hi) > float(lo):
            raise ConfigError(f"windows[{i}] = {w!r} is empty: its top must exceed its bottom")
        out.append((float(lo), float(hi)))
    return out


def apply_windows(hu: np.ndarray, windows: Sequence[tuple[float, float]]) -> np.ndarray:
    """``(..., H, W)`` HU → ``(len(windows), ..., H, W)`` float32 in [0, 1]: each window clips
    to ``[low, high]`` and maps it linearly onto [0, 1]."""
    hu = np.asarray(hu, dtype=np.float32)
    return np.stack([(np.clip(hu, lo, hi) - lo) / (hi - lo) for lo, hi in windows])


def slice_stack(slices: np.ndarray, k: int, context: int) -> np.ndarray:
    """Slices ``k - context … k + context`` of a ``(Z, H, W)`` stack, edge slices repeated:
    ``(2 * context + 1, H, W)``."""
    idx = np.clip(np.arange(k - context, k + context + 1), 0, slices.shape[0] - 1)
    return slices[idx]


def _compact(hu: np.ndarray) -> np.ndarray:
    """int16 when the HU values are integers in range (half the memory), else float32."""
    if hu.size and np.abs(hu).max() < 32767 and np.array_equal(hu, np.round(hu)):
        return hu.astype(np.int16)
    return hu.astype(np.float32)


def load_case(
    case: CaseFiles, mask_labels: Sequence[int], affine_tolerance: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one case: ``(Z, H, W)`` HU (int16 or float32) and ``(Z, H, W)`` uint8 mask
    (1 where the label is non-zero).

    Raises:
        DataError: unreadable file, image/mask shape or affine (after RAS reorientation) that
            disagree, NaN/inf voxels or |HU| > :data:`MAX_ABS_HU`, mask labels outside
            ``mask_labels``. Each names the case and the file.
    """
    image = read_volume(case.image, "image", case.case_id)
    mask = read_volume(case.mask, "mask", case.case_id)
    who = f"case {case.case_id!r}"
    if image.slices.shape != mask.slices.shape:
        raise DataError(
            f"{who}: image {case.image} has shape {image.file_shape} but mask {case.mask} has "
            f"shape {mask.file_shape}"
        )
    if not np.allclose(image.affine_ras, mask.affine_ras, rtol=0.0, atol=affine_tolerance):
        diff = float(np.abs(image.affine_ras - mask.affine_ras).max())
        raise DataError(
            f"{who}: affines of image {case.image} and mask {case.mask} disagree by up to "
            f"{diff:.4g} mm (tolerance {affine_tolerance:g}); the mask must lie on the image's "
            "voxel grid"
        )
    bad = int(np.count_nonzero(~np.isfinite(image.slices)))
    if bad:
        raise DataError(f"{who}: image {case.image} has {bad} NaN/inf voxel(s)")
    peak = float(np.abs(image.slices).max()) if image.slices.size else 0.0
    if peak > MAX_ABS_HU:
        n = int(np.count_nonzero(np.abs(image.slices) > MAX_ABS_HU))
        raise DataError(f"{who}: image {case.image} has {n} voxel(s) with |value| > "
                        f"{MAX_ABS_HU:g} HU (up to {peak:.3g}); a corrupt file or rescale slope")
    values = np.unique(mask.slices)
    unexpected = [int(v) if float(v).is_integer() else v
                  for v in values.tolist() if v not in set(mask_labels)]
    if unexpected:
        raise DataError(
            f"{who}: mask {case.mask} holds label value(s) {unexpected[:10]} outside the "
            f"expected set {sorted(mask_labels)} (set mask_labels= if they are valid)"
        )
    return _compact(image.slices), (mask.slices != 0).astype(np.uint8)


class _LRU:
    """A few decoded volumes per process; emptied when pickled (each DataLoader worker fills
    its own, and the dataset object sent to workers stays small)."""

    def __init__(self, maxsize: int | None) -> None:
        self.maxsize = maxsize
        self.items: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def get(self, key: int) -> tuple[np.ndarray, np.ndarray] | None:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def put(self, key: int, value: tuple[np.ndarray, np.ndarray]) -> None:
        if self.maxsize == 0:
            return
        self.items[key] = value
        self.items.move_to_end(key)
        while self.maxsize is not None and len(self.items) > self.maxsize:
            self.items.popitem(last=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"maxsize": self.maxsize, "items": OrderedDict()}


@DATASETS.register
class CTVolumeSlices(Dataset):
    """Axial (2.5D) slices of CT studies with their lesion masks, split by case.

    Every case of the split is read once when the dataset is built: the files are checked
    (see :func:`load_case`) and each slice's positivity is recorded for samplers. Later reads
    go through a per-process LRU cache of ``cache_size`` volumes.

    Items follow :mod:`detlab.data.collate`: ``"image"`` ``(C, H, W)`` float32 in [0, 1]
    (module docstring for the channel order), ``"target"`` ``{"mask": (1, H, W) float32 0/1}``
    (plus ``"orig_mask"`` when the transforms change the size) and ``"meta"`` with
    ``image_id`` (``"<case>:<slice>"``), ``case_id``, ``slice_index``, ``path`` (the image),
    ``orig_size``, ``input_size``, ``scale`` and ``display_channel`` (the centre slice of the
    first window, for pictures).

    Args:
        root: a Decathlon-layout folder or a ``.csv``/``.json`` case list
            (:mod:`detlab.data.ct_cases`); the recipe's ``data.root`` fills it when unset.
        split: ``"train"``, ``"val"`` or ``"all"`` (:func:`~detlab.data.ct_cases.split_cases`).
        val_fraction, seed, val_cases: how cases are split (by case, never by slice).
        windows: HU windows, ``dict(level=, width=)`` or ``dict(min=, max=)`` each; several
            are stacked as channels.
        context: neighbouring slices on each side (0: plain 2D slices).
        transforms: albumentations configs applied to image and mask together.
        mask_labels: label values a mask may hold (default ``(0, 1)``, or the ``labels`` of a
            Decathlon ``dataset.json``); every non-zero label is the one foreground class.
        skip_bad_cases: skip a case whose files fail the checks (warning + final count)
            instead of raising :class:`~detlab.errors.DataError`.
        max_bad_fraction: with ``skip_bad_cases``, building fails when more than this fraction
            of the split's cases is skipped (default 1.0: only when every case is bad).
        allow_outside_root: accept case-list paths (absolute, ``..``, symlinks) leading out of
            the list file's folder.
        cache_size: decoded volumes kept per process (``None``: all of the split).
        affine_tolerance: largest image/mask affine difference accepted, in mm.
    """

    def __init__(
        self,
        root: str | None = None,
        split: Literal["train", "val", "all"] = "train",
        val_fraction: float = 0.2,
        seed: int = 0,
        val_cases: Sequence[str] | None = None,
        windows: Sequence[Mapping[str, float]] | Mapping[str, float] = DEFAULT_WINDOWS,
        context: int = 0,
        transforms: Sequence[Any] | None = None,
        mask_labels: Sequence[int] | None = None,
        skip_bad_cases: bool = False,
        cache_size: int | None = 4,
        affine_tolerance: float = 1e-3,
        max_bad_fraction: float = 1.0,
        allow_outside_root: bool = False,
    ) -> None:
        max_bad_fraction = check_bad_fraction(max_bad_fraction, "CTVolumeSlices")
        if root is None:
            raise ConfigError(
                "CTVolumeSlices needs root= (a Decathlon folder or a .csv/.json case list); "
                "e.g. detlab train recipes/fracture_unet_ct.py data.root=/data/Task"
            )
        check_int("CTVolumeSlices", "context", context, low=0)
        if cache_size is not None:
            check_int("CTVolumeSlices", "cache_size (or None)", cache_size, low=0)
        if not float(affine_tolerance) >= 0:
            raise ConfigError(f"affine_tolerance must be >= 0 mm, got {affine_tolerance!r}")
        self.root = str(root)
        self.split = split
        self.windows = parse_windows(windows)
        self.context = context
        self.transform = build_transforms(transforms, task="segmentation", key="transforms")
        labels = mask_labels if mask_labels is not None else (msd_labels(root) or (0, 1))
        self.mask_labels = tuple(int(v) for v in labels)
        self.affine_tolerance = float(affine_tolerance)
        self.skip_bad_cases = bool(skip_bad_cases)
        all_cases = {c.case_id: c for c in list_cases(root, allow_outside_root)}
        ids = split_cases(list(all_cases), split, val_fraction, seed, val_cases)
        if not ids:
            raise ConfigError(f"CTVolumeSlices(split={split!r}): no case in this split of {root}")
        self._cache = _LRU(cache_size)
        self._report = DataReport(f"CTVolumeSlices ({root}, split={split})", "cases",
                                  samples=len(ids))
        self.cases: list[CaseFiles] = []
        self.skipped: list[tuple[str, str]] = []
        slice_index, flags = [], []
        for case_id in ids:
            case = all_cases[case_id]
            try:
                image, mask = load_case(case, self.mask_labels, self.affine_tolerance)
            except DataError as err:
                if not self.skip_bad_cases:
                    raise
                log.warning("skipping bad case: %s", err)
                self.skipped.append((case_id, str(err)))
                self._report.count("skipped", "bad case files", str(err).splitlines()[0])
                continue
            n = len(self.cases)
            self.cases.append(case)
            self._cache.put(n, (image, mask))
            slice_index.extend((n, k) for k in range(image.shape[0]))
            flags.append(mask.reshape(mask.shape[0], -1).any(1))
        if self.skipped:
            log.warning("CTVolumeSlices(split=%r): skipped %d of %d case(s) with bad data: %s",
                        split, len(self.skipped), len(ids), [c for c, _ in self.skipped])
        if not self.cases:
            raise DataError(f"CTVolumeSlices(split={split!r}): every case of {root} was bad")
        self._report.log()
        self._report.enforce(max_bad_fraction)
        self._slices = np.asarray(slice_index, dtype=np.int64).reshape(-1, 2)
        self._flags = np.concatenate(flags)

    def data_report(self) -> DataReport:
        """Cases read and skipped (with the reason) when the dataset was built."""
        return self._report

    @property
    def in_channels(self) -> int:
        """Channels of an item: ``len(windows) * (2 * context + 1)``."""
        return len(self.windows) * (2 * self.context + 1)

    def __len__(self) -> int:
        return len(self._slices)

    def positive_flags(self) -> np.ndarray:
        """``(N,)`` bool: slices whose mask has a foreground pixel (for samplers)."""
        return self._flags.copy()

    def case_ids(self) -> list[str]:
        """Ids of the cases in this split (bad ones skipped)."""
        return [c.case_id for c in self.cases]

    def _volume(self, case_index: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(case_index)
        if hit is None:
            hit = load_case(self.cases[case_index], self.mask_labels, self.affine_tolerance)
            self._cache.put(case_index, hit)
        return hit

    def read_slice(self, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Slice ``index`` before transforms: image ``(H, W, C)`` float32 in [0, 1], mask
        ``(H, W)`` uint8 0/1 and its meta (see class docstring)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slices")
        case_index, k = (int(v) for v in self._slices[index])
        hu, mask = self._volume(case_index)
        stack = slice_stack(hu, k, self.context)  # (2c+1, H, W)
        image = apply_windows(stack, self.windows).reshape(-1, *stack.shape[1:])
        case = self.cases[case_index]
        meta = {
            "image_id": f"{case.case_id}:{k}",
            "case_id": case.case_id,
            "slice_index": k,
            "path": str(case.image),
            "display_channel": self.context,
        }
        return np.ascontiguousarray(image.transpose(1, 2, 0)), mask[k], meta

    def make_sample(self, image: np.ndarray, mask: np.ndarray, meta: dict[str, Any]) -> dict:
        """Apply the transforms to ``image`` ``(H, W, C)`` and ``mask`` ``(H, W)`` together and
        build the item dict."""
        orig = tuple(int(s) for s in image.shape[:2])
        target: dict[str, Any] = {}
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            if tuple(out["image"].shape[:2]) != orig:
                target["orig_mask"] = torch.from_numpy(mask.astype(np.float32))[None]
            image, mask = out["image"], out["mask"]
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 2:
            image = image[..., None]
        target["mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        h, w = image.shape[:2]
        meta = {**meta, "orig_size": orig, "input_size": (h, w),
                "scale": (h / orig[0], w / orig[1]), "pad": (0, 0)}
        chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": chw, "target": target, "meta": meta}

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.make_sample(*self.read_slice(index))

    def __repr__(self) -> str:
        return (f"CTVolumeSlices(root={self.root!r}, split={self.split!r}, "
                f"cases={len(self.cases)}, slices={len(self)}, positives={int(self._flags.sum())}, "
                f"channels={self.in_channels})")
