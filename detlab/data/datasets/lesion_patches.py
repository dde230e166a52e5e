"""``LesionPatches``: fixed-size patches of a slice dataset, a set share of them around lesions.

Full CT slices are 512 x 512 while a fracture covers a few hundred pixels: training on patches
is faster and, with a set share of lesion-centred patches, shows the model lesions often
without hiding what normal anatomy looks like (the "foreground oversampling" of nnU-Net,
Isensee et al. 2021, arXiv:1809.10486).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...checks import check_int
from ...errors import ConfigError, DataError
from ...registry import DATASETS

__all__ = ["LesionPatches"]

_NEGATIVE_TRIES = 20


def _pair(value: Any, name: str) -> tuple[int, int]:
    vals = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(vals, Sequence) or len(vals) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in vals)):
        raise ConfigError(f"{name} must be a positive int or (height, width), got {value!r}")
    return int(vals[0]), int(vals[1])


@DATASETS.register
class LesionPatches(Dataset):
    """Patches of ``patch_size`` from a slice dataset: a ``positive_ratio`` share contains a lesion.

    Each item draws, with probability ``positive_ratio``, a *positive* patch: a random slice
    that has a lesion, a random lesion pixel on it, and a patch placed at a random offset so
    that pixel lies inside. Otherwise it draws a *negative* patch: a random place on a random
    slice, redrawn (up to 20 times) until it holds no lesion pixel. Slices smaller than the
    patch are zero-padded bottom/right first. Draws come from torch's generator (seeded per
    DataLoader worker and epoch by Lightning), so every epoch sees new patches.

    The wrapped dataset provides ``positive_flags()``, ``read_slice(i) -> (image (H, W, C),
    mask (H, W), meta)`` and ``make_sample(image, mask, meta)`` (which applies its transforms
    after the crop), e.g. :class:`~detlab.data.datasets.ct_volumes.CTVolumeSlices`. Items are
    that dataset's items at patch size; ``meta`` gains ``crop`` (top, left) in slice pixels.

    Args:
        dataset: config of the slice dataset (or a built one).
        patch_size: patch side or ``(height, width)`` in pixels; ``detlab predict`` on volumes
            uses it as the sliding-window size.
        positive_ratio: share of lesion patches, in [0, 1].
        num_samples: items per epoch (default: the dataset's length).
        root: passed on to the wrapped dataset when it sets none (the recipe's ``data.root``).
    """

    def __init__(
        self,
        dataset: Any,
        patch_size: int | Sequence[int] = 128,
        positive_ratio: float = 0.5,
        num_samples: int | None = None,
        root: str | None = None,
    ) -> None:
        from ..datamodule import build_dataset

        self.patch_size = _pair(patch_size, "patch_size")
        if not 0.0 <= float(positive_ratio) <= 1.0:
            raise ConfigError(f"positive_ratio must be in [0, 1], got {positive_ratio!r}")
        if isinstance(dataset, dict) and root is not None and dataset.get("root") is None:
            dataset = {**dataset, "root": root}
        self.dataset = build_dataset(dataset, key="dataset")
        name = type(self.dataset).__name__
        missing = [f"{a}()" for a in ("positive_flags", "read_slice", "make_sample")
                   if not callable(getattr(self.dataset, a, None))]
        if missing:
            raise ConfigError(
                f"LesionPatches needs a slice dataset (e.g. CTVolumeSlices); {name} lacks "
                f"{', '.join(missing)}"
            )
        flags = np.asarray(self.dataset.positive_flags(), dtype=bool)
        self.positive_indices = np.flatnonzero(flags)
        if positive_ratio > 0 and len(self.positive_indices) == 0:
            raise ConfigError(
                f"LesionPatches: {name} has no slice with a lesion, so positive_ratio="
                f"{positive_ratio} cannot be met"
            )
        self.positive_ratio = float(positive_ratio)
        if num_samples is None:
            num_samples = len(self.dataset)
        check_int("LesionPatches", "num_samples", num_samples, low=1)
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def _pad(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ph, pw = self.patch_size
        dh, dw = max(0, ph - image.shape[0]), max(0, pw - image.shape[1])
        if dh or dw:
            image = np.pad(image, ((0, dh), (0, dw), (0, 0)))
            mask = np.pad(mask, ((0, dh), (0, dw)))
        return image, mask

    def _corner(self, rng: np.random.Generator, shape: tuple[int, ...],
                around: tuple[int, int] | None) -> tuple[int, int]:
        (ph, pw), (h, w) = self.patch_size, shape[:2]
        if around is None:
            return int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        y, x = around
        # the patch covers y iff top in [y - ph + 1, y]; also keep it inside the slice
        top = int(rng.integers(max(0, y - ph + 1), min(y, h - ph) + 1))
        left = int(rng.integers(max(0, x - pw + 1), min(x, w - pw) + 1))
        return top, left

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """One patch before transforms: image ``(ph, pw, C)``, mask ``(ph, pw)``, meta."""
        ph, pw = self.patch_size
        positive = rng.random() < self.positive_ratio
        tries = 1 if positive else _NEGATIVE_TRIES
        for _ in range(tries):
            if positive:
                index = int(rng.choice(self.positive_indices))
            else:
                index = int(rng.integers(0, len(self.dataset)))
            image, mask, meta = self.dataset.read_slice(index)
            image, mask = self._pad(image, mask)
            around = None
            if positive:
                ys, xs = np.nonzero(mask)
                if len(ys) == 0:
                    raise DataError(f"slice {meta.get('image_id', index)} is flagged positive "
                                    "but its mask is empty")
                pick = int(rng.integers(0, len(ys)))
                around = (int(ys[pick]), int(xs[pick]))
            top, left = self._corner(rng, mask.shape, around)
            patch_mask = mask[top : top + ph, left : left + pw]
            if positive or not patch_mask.any():
                break
        patch = image[top : top + ph, left : left + pw]
        meta = {**meta, "image_id": f"{meta.get('image_id', index)}@{top},{left}",
                "crop": (top, left)}
        return np.ascontiguousarray(patch), np.ascontiguousarray(patch_mask), meta

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        # torch's generator is seeded per worker and per epoch by the DataLoader
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        return self.dataset.make_sample(*self.draw(rng))

    def __repr__(self) -> str:
        return (f"LesionPatches({self.dataset!r}, patch_size={self.patch_size}, "
                f"positive_ratio={self.positive_ratio}, num_samples={self.num_samples})")
