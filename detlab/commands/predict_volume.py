"""``detlab predict CKPT study.nii.gz --out DIR``: segment a whole CT volume slice by slice.

The volume is read and windowed exactly as in training (:mod:`detlab.data.medical_io`, the
recipe's ``windows`` and ``context``); each axial slice (2.5D stack) is predicted, with MONAI's
``sliding_window_inference`` (Gaussian-weighted, 25 % overlap) when the slice is larger than
the training patch. Results go back to the file's own voxel order and are written next to
nothing but each other, in ``--out``:

* ``<stem>_probs.nii.gz``: float32 probabilities (``(I, J, K)``; ``(I, J, K, C)`` for C > 1);
* ``<stem>_mask.nii.gz``: uint8 mask at the head's threshold (softmax heads: the label map);
* ``<stem>_montage.png``: the slices with a predicted lesion, mask in red.

Both NIfTI files carry the input's affine (for a DICOM series, the one MONAI derives from it),
so they overlay the study in any viewer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.datasets.ct_volumes import DEFAULT_WINDOWS, apply_windows, parse_windows, slice_stack
from ..data.medical_io import (
    _has_dicm_magic,
    is_dicom_dir,
    is_volume_path,
    read_volume,
    save_nifti,
    volume_stem,
)
from ..errors import ConfigError
from ..registry import DATASETS
from ..structures import Batch
from ..engine import render

__all__ = ["is_volume_path", "check_not_dicom_file", "volume_settings", "predict_volume",
           "predict_volumes"]

_MAX_MONTAGE = 24


def check_not_dicom_file(path: str | Path) -> None:
    """ConfigError when ``path`` is one DICOM file: a CT series is read from its folder (one
    ``.dcm`` file is one slice, without the neighbours and geometry of the series)."""
    p = Path(path)
    if not p.is_file():
        return
    if p.suffix.lower() in (".dcm", ".dicom") or _has_dicm_magic(p):
        raise ConfigError(
            f"{p} is a single DICOM file (one slice); detlab predict reads a DICOM series from "
            f"its folder: pass the folder holding the whole series, e.g. {p.parent}"
        )


def _slice_config(recipe: Any) -> dict[str, Any] | None:
    """The CT slice dataset config of the recipe (``data.val``, else ``data.train``;
    ``LesionPatches`` unwrapped), or None."""
    data = recipe.get("data") or {}
    for split in ("val", "train"):
        cfg = data.get(split)
        while isinstance(cfg, dict) and isinstance(cfg.get("dataset"), dict):
            cfg = cfg["dataset"]
        if not isinstance(cfg, dict):
            continue
        if "windows" in cfg or "context" in cfg:
            return cfg
        try:
            cls = DATASETS.get(cfg.get("type"))
        except ConfigError:
            continue
        if callable(getattr(cls, "read_slice", None)):
            return cfg
    return None


def volume_settings(recipe: Any) -> dict[str, Any]:
    """``windows`` (HU pairs), ``context`` and ``roi_size`` (training patch ``(h, w)`` or
    None: whole slices) for volume prediction, from the checkpoint's recipe."""
    cfg = _slice_config(recipe)
    if cfg is None:
        raise ConfigError(
            "this checkpoint was not trained on CT volumes (its recipe has no CTVolumeSlices "
            "dataset), so the HU windows for a volume are unknown; use a recipe like "
            "recipes/fracture_unet_ct.py"
        )
    train = (recipe.get("data") or {}).get("train") or {}
    patch = train.get("patch_size") if isinstance(train, dict) else None
    roi = None
    if patch is not None:
        roi = (int(patch), int(patch)) if isinstance(patch, (int, float)) else tuple(
            int(v) for v in patch)
    return {"windows": parse_windows(cfg.get("windows", DEFAULT_WINDOWS)),
            "context": int(cfg.get("context", 0)), "roi_size": roi}


def _input_channels(model: torch.nn.Module) -> int | None:
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return int(module.in_channels)
    return None


def _probabilities(model: Any, images: torch.Tensor, roi: tuple[int, int] | None) -> torch.Tensor:
    """``(B, C_out, H, W)`` probabilities for ``(B, C, H, W)`` slices."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        meta = [{"image_id": i, "orig_size": (h, w), "input_size": (h, w), "scale": (1.0, 1.0),
                 "pad": (0, 0)} for i in range(x.shape[0])]
        preds = model.predict(Batch(images=x, meta=meta), stage="test")
        return torch.stack([p.probs for p in preds]).float()

    if roi is None or (images.shape[-2] <= roi[0] and images.shape[-1] <= roi[1]):
        return predict(images)
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(images, roi_size=roi, sw_batch_size=4, predictor=predict,
                                    overlap=0.25, mode="gaussian")


def _montage(display: np.ndarray, mask: np.ndarray, stem: str) -> Image.Image:
    """Tiles of the slices with a predicted lesion (all if <= 24, else 24 evenly spaced)."""
    area = mask.reshape(mask.shape[0], -1).sum(1)
    hits = np.flatnonzero(area)
    if len(hits) == 0:
        k = display.shape[0] // 2
        tile = Image.fromarray((255 * display[k]).astype(np.uint8)).convert("RGB")
        return render.grid([render.caption(render.fit(tile, 384), f"slice {k}")], 1,
                           title=f"{stem}: no slice with a predicted lesion")
    shown = hits if len(hits) <= _MAX_MONTAGE else hits[
        np.linspace(0, len(hits) - 1, _MAX_MONTAGE).round().astype(int)]
    tiles = []
    for k in shown:
        tile = Image.fromarray((255 * display[k]).astype(np.uint8)).convert("RGB")
        tiles.append(render.caption(render.fit(render.overlay(tile, mask[k]), 192),
                                    f"slice {k}: {area[k]} px"))
    title = f"{stem}: {len(hits)} slice(s) with a predicted lesion, showing {len(shown)}"
    return render.grid(tiles, 6, title=title)


@torch.no_grad()
def predict_volume(task: Any, path: str | Path, out_dir: str | Path,
                   settings: dict[str, Any] | None = None, batch_size: int = 4) -> list[Path]:
    """Predict one volume (NIfTI file or DICOM folder); returns the files written."""
    settings = settings or volume_settings(task.recipe)
    windows, context, roi = settings["windows"], settings["context"], settings["roi_size"]
    model = task.model
    expected = len(windows) * (2 * context + 1)
    channels = _input_channels(model)
    if channels is not None and channels != expected:
        raise ConfigError(f"the model takes {channels} input channel(s) but the recipe's "
                          f"{len(windows)} window(s) x (2*{context}+1) slices give {expected}")
    volume = read_volume(path, "volume")
    from ..engine.inference_model import inference_task

    model = inference_task(task).model  # what detlab eval runs: BatchNorm folded
    device = next(model.parameters()).device
    head = model.head
    probs = []
    for start in range(0, volume.slices.shape[0], batch_size):
        ks = range(start, min(start + batch_size, volume.slices.shape[0]))
        stacks = [apply_windows(slice_stack(volume.slices, k, context), windows) for k in ks]
        x = torch.from_numpy(np.stack([s.reshape(expected, *s.shape[2:]) for s in stacks]))
        probs.append(_probabilities(model, x.to(device), roi).cpu().numpy())
    prob = np.concatenate(probs)  # (Z, C, H, W)
    if getattr(head, "activation", "sigmoid") == "softmax":
        mask = prob.argmax(1).astype(np.uint8)  # (Z, H, W) label map
        lesion = mask > 0
    else:
        mask = (prob > float(getattr(head, "threshold", 0.5))).astype(np.uint8)
        lesion = mask.any(1)
        mask = mask[:, 0] if mask.shape[1] == 1 else mask.transpose(0, 2, 3, 1)
    prob = prob[:, 0] if prob.shape[1] == 1 else prob.transpose(0, 2, 3, 1)
    out = Path(out_dir)
    stem = volume_stem(path)
    files = [
        save_nifti(volume.to_file_order(prob.astype(np.float32)), volume.file_affine,
                   out / f"{stem}_probs.nii.gz"),
        save_nifti(volume.to_file_order(mask), volume.file_affine, out / f"{stem}_mask.nii.gz"),
    ]
    display = apply_windows(volume.slices, windows[:1])[0]
    _montage(display, lesion, stem).save(out / f"{stem}_montage.png")
    files.append(out / f"{stem}_montage.png")
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    print(f"{path}: {int(lesion.any((1, 2)).sum())} of {lesion.shape[0]} slices with a "
          f"predicted lesion, {lesion.sum() * voxel_ml:.2f} ml")
    return files


def predict_volumes(task: Any, paths: list[str], out_dir: str | Path) -> list[Path]:
    """:func:`predict_volume` for each path (settings read once from the checkpoint)."""
    out = Path(out_dir).resolve()
    for p in paths:
        if is_dicom_dir(p) and (out == Path(p).resolve() or Path(p).resolve() in out.parents):
            raise ConfigError(f"--out {out_dir} lies inside the DICOM folder {p}; choose a "
                              "folder outside the data (nothing is written into it)")
    settings = volume_settings(task.recipe)
    batch_size = int((task.recipe.get("data") or {}).get("val_batch_size") or 4)
    written: list[Path] = []
    for p in paths:
        written += predict_volume(task, p, out_dir, settings, batch_size)
    return written
