"""Which CT studies a dataset holds, and the train/val split by case (never by slice).

Two layouts are understood:

* a **Medical Segmentation Decathlon** folder: ``imagesTr/`` with ``<case>.nii.gz`` files (or
  ``<case>/`` DICOM series folders) and ``labelsTr/`` with a mask of the same case name
  (``.nii.gz``/``.nii`` or a DICOM folder); an optional ``dataset.json`` lists the pairs under
  ``"training"`` and the label values under ``"labels"``. macOS ``._*`` files are ignored.
* a **case list**: a ``.csv`` file with the columns ``case_id,image,mask`` (``label`` is
  accepted for ``mask``), or a ``.json`` file holding a list of
  ``{"case_id": …, "image": …, "mask": …}`` (or ``{"cases": [...]}``, or an MSD-style
  ``{"training": [{"image": …, "label": …}]}``). Relative paths are relative to the list file.

Every image and mask path must resolve (symlinks followed) to a place under the list file's
folder (or the Decathlon folder); ``allow_outside_root=True`` lifts that for lists of absolute
paths elsewhere (:func:`~detlab.data.validation.require_inside`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..registry import closest
from .medical_io import is_nifti, volume_stem
from .validation import read_text, require_inside

__all__ = ["CaseFiles", "list_cases", "split_cases", "msd_labels"]

SPLITS = ("train", "val", "all")


@dataclass(frozen=True)
class CaseFiles:
    """One study: its id, its image (file or DICOM folder) and its mask."""

    case_id: str
    image: Path
    mask: Path


def _usable(p: Path) -> bool:
    return not p.name.startswith(".") and (p.is_dir() or is_nifti(p))


def _find_mask(labels_dir: Path, case_id: str) -> Path:
    for name in (f"{case_id}.nii.gz", f"{case_id}.nii", case_id):
        if (labels_dir / name).exists():
            return labels_dir / name
    raise DataError(f"case {case_id!r}: no mask for it in {labels_dir} (looked for "
                    f"{case_id}.nii.gz, {case_id}.nii and a folder {case_id}/)")


def _resolve(base: Path, value: Any, what: str, where: str, allow_outside_root: bool) -> Path:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise DataError(f"{where}: {what} must be a path, got {value!r}")
    try:
        p = Path(value.strip()).expanduser()
    except RuntimeError as err:  # "~nobody/x": no such home folder
        raise DataError(f"{where}: {what} {value[:200]!r}: {err}") from None
    p = require_inside(p if p.is_absolute() else base / p, base, f"{where} ({what})",
                       allow_outside_root, shown=value)
    try:
        return p.resolve()
    except (OSError, RuntimeError) as err:  # a name too long, a symlink loop
        raise DataError(f"{where}: cannot resolve {what} {value[:200]!r}: {err}") from None


def _from_records(records: list[Any], base: Path, source: Path,
                  allow_outside_root: bool = False) -> list[CaseFiles]:
    cases = []
    for i, rec in enumerate(records):
        where = f"{source}, entry {i + 1}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object with image/mask, got {rec!r}")
        mask_value = rec.get("mask", rec.get("label"))
        image = _resolve(base, rec.get("image"), "image", where, allow_outside_root)
        mask = _resolve(base, mask_value, "mask", where, allow_outside_root)
        case_id = rec.get("case_id")
        if isinstance(case_id, bool) or (case_id is not None
                                         and not isinstance(case_id, (str, int))):
            raise DataError(f"{where}: case_id must be a string, got {case_id!r}")
        case_id = str(case_id or volume_stem(image))
        cases.append(CaseFiles(case_id, image, mask))
    return cases


def _read_list(path: Path, allow_outside_root: bool = False) -> list[CaseFiles]:
    base = path.parent
    text = read_text(path, "case list")
    if path.suffix.lower() == ".csv":
        try:
            reader = csv.DictReader(text.splitlines())
            fields = {k.strip() for k in reader.fieldnames or []}
            if "image" not in fields or not fields & {"mask", "label"}:
                raise DataError(
                    f"case list {path} needs the header columns case_id,image,mask; "
                    f"found {sorted(fields)}"
                )
            rows = [{k.strip(): v for k, v in row.items() if isinstance(k, str) and k}
                    for row in reader]
        except csv.Error as err:
            raise DataError(f"case list {path}: not valid CSV ({err})") from err
        return _from_records(rows, base, path, allow_outside_root)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise DataError(f"cannot read case list {path}: {err}") from err
    if isinstance(data, dict):
        data = data.get("cases", data.get("training"))
    if not isinstance(data, list):
        raise DataError(f"case list {path}: expected a list of cases (or 'cases'/'training')")
    return _from_records(data, base, path, allow_outside_root)


def _read_msd(root: Path, allow_outside_root: bool = False) -> list[CaseFiles]:
    meta = root / "dataset.json"
    if meta.is_file():
        try:
            training = json.loads(read_text(meta, "dataset.json")).get("training")
        except (ValueError, AttributeError, RecursionError) as err:
            raise DataError(f"cannot read {meta}: {err}") from err
        if training:
            if not isinstance(training, list):
                raise DataError(f"{meta}: 'training' must be a list of cases")
            return _from_records(training, root, meta, allow_outside_root)
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise DataError(
            f"{root} is not a Decathlon-layout folder (needs imagesTr/ and labelsTr/) nor a "
            ".csv/.json case list"
        )
    images = sorted(p for p in images_dir.iterdir() if _usable(p))
    cases = [CaseFiles(volume_stem(p), p, _find_mask(labels_dir, volume_stem(p))) for p in images]
    for case in cases:  # a symlinked study may point out of the folder
        for path in (case.image, case.mask):
            require_inside(path, root, f"{root}: case {case.case_id!r}", allow_outside_root)
    return cases


def list_cases(root: str | Path, allow_outside_root: bool = False) -> list[CaseFiles]:
    """The cases under ``root`` (Decathlon folder or ``.csv``/``.json`` list), sorted by id.

    ``allow_outside_root`` accepts listed paths that lead outside the list's folder.

    Raises:
        DataError: ``root`` missing, a layout not understood, a mask missing, duplicate ids,
            a listed path outside the folder.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"CT data not found: {root}")
    if root.is_file():
        if root.suffix.lower() not in (".csv", ".json"):
            raise DataError(f"case list {root} must be a .csv or .json file")
        cases = _read_list(root, allow_outside_root)
    else:
        cases = _read_msd(root, allow_outside_root)
    if not cases:
        raise DataError(f"no cases found in {root}")
    ids = [c.case_id for c in cases]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        raise DataError(f"{root}: case ids must be unique; repeated: {dups[:10]}")
    return sorted(cases, key=lambda c: c.case_id)


def msd_labels(root: str | Path) -> tuple[int, ...] | None:
    """Label values declared in a Decathlon ``dataset.json`` (``"labels": {"0": …}``), if any."""
    meta = Path(root) / "dataset.json"
    if not meta.is_file():
        return None
    try:
        labels = json.loads(read_text(meta, "dataset.json")).get("labels")
        return tuple(sorted(int(k) for k in labels)) if isinstance(labels, dict) else None
    except (DataError, ValueError, AttributeError, TypeError, RecursionError):
        return None


def split_cases(
    case_ids: Sequence[str],
    split: str,
    val_fraction: float = 0.2,
    seed: int = 0,
    val_cases: Sequence[str] | None = None,
) -> list[str]:
    """The case ids of ``split`` (``"train"``, ``"val"`` or ``"all"``), sorted.

    With ``val_cases`` those are the validation cases and the rest train. Otherwise a seeded
    permutation of the sorted ids puts ``round(val_fraction * n)`` cases (at least 1 when
    ``val_fraction > 0`` and there are >= 2 cases) in val. The split depends only on the ids,
    ``val_fraction`` and ``seed`` — not on file order or on cases skipped as bad later — so
    train and val are disjoint in every process.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    ids = sorted(set(case_ids))
    if split == "all":
        return ids
    if val_cases is not None:
        if isinstance(val_cases, str) or not all(isinstance(c, str) for c in val_cases):
            raise ConfigError(
                f"val_cases must be a list of case ids (strings), got {val_cases!r}; on the "
                "command line quote them: \"data.val.val_cases=['case_007','case_012']\""
            )
        unknown = [c for c in val_cases if c not in ids]
        if unknown:
            hints = {c: closest(c, ids, 1) for c in unknown[:5]}
            msg = ", ".join(f"{c!r}" + (f" (did you mean {h[0]!r}?)" if h else "")
                            for c, h in hints.items())
            raise ConfigError(f"val_cases names unknown case(s): {msg}")
        val = set(val_cases)
    else:
        n_val = int(round(float(val_fraction) * len(ids)))
        if val_fraction > 0 and len(ids) >= 2:
            n_val = min(max(n_val, 1), len(ids) - 1)
        order = np.random.default_rng(seed).permutation(len(ids))
        val = {ids[i] for i in order[:n_val]}
    return [c for c in ids if (c in val) == (split == "val")]
