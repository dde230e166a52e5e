"""Synthetic sagittal CT slices of a spine with thin fracture-like lesions (no download needed).

Every slice shows a soft-tissue torso (with a subcutaneous fat rim), a column of rounded
vertebral bodies (bright cortical rim, textured cancellous interior) separated by darker discs,
the spinal canal and posterior elements, and CT-like noise. About ``positive_fraction`` of the
slices carry a lesion: 1-3 px thick jagged dark lines (fracture clefts, ~30 HU against
cancellous bone at ~220 HU) running obliquely across a whole vertebral body, together covering
about ``lesion_fraction`` of the image. Every slice may also show basivertebral vein channels,
fracture mimics of the same intensity that are short, straight, horizontal and start at the
posterior cortex; they are not lesions, so a model must use shape, not just darkness. That
mirrors the class balance of the fracture recipe (lesions on ~0.5 % of the pixels of ~10 % of
the slices) while staying learnable by a small network in minutes on a CPU.

Intensities are rendered in Hounsfield units, clipped to the bone window [-250, 1250] HU and
standardized with fixed constants (``(HU - 55) / 240``) measured over this generator, so images
have roughly mean 0 and standard deviation 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ...checks import check_int
from ...errors import ConfigError
from ...registry import DATASETS
from ..transforms import build_transforms

__all__ = ["SyntheticSpineCT"]

_SPLITS = ("train", "val", "test")
_DEFAULT_NUM_SAMPLES = {"train": 400, "val": 100, "test": 100}
_FLAG_STREAM = 0x5EED  # separates the positivity stream from the per-slice render streams

# Hounsfield units of the rendered tissues.
_AIR, _FAT, _SOFT, _CSF, _DISC = -1000.0, -90.0, 40.0, 10.0, 85.0
_CANCELLOUS, _CORTEX, _POSTERIOR, _LESION = 220.0, 700.0, 450.0, 30.0
_VEIN_PROBABILITY = 0.35  # per vertebral body, in every slice
_NOISE_HU = 20.0
_WINDOW = (-250.0, 1250.0)
_NORM_MEAN, _NORM_STD = 55.0, 240.0


@DATASETS.register()
class SyntheticSpineCT(Dataset):
    """Deterministic on-the-fly synthetic spine CT slices with thin lesions (1 class).

    Sample ``i`` depends only on ``(seed, split, i)``. Each item is the sample dict of
    :mod:`detlab.data.collate`: ``"image"`` float32 ``(1, H, W)`` (standardized HU, see module
    docstring), ``"target"`` ``{"mask": (1, H, W) float32 0/1}`` (plus ``"orig_mask"`` at
    ``image_size`` when the transforms change the size) and ``"meta"`` with ``image_id``
    (``"{split}-{i}"``), ``path`` (``"synthetic://spine/{split}/{i}"``), ``orig_size``,
    ``input_size``, ``scale`` (sy, sx) = input / orig and ``case_id`` (each slice is its own case).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (independent random streams).
        num_samples: slices in the split (default 400 for train, 100 otherwise).
        image_size: side of the square slice in pixels (anatomy scales with it; lesion lines
            are 1-3 px thick at 128).
        seed: base seed.
        transforms: albumentations configs applied to image and mask together
            (:func:`~detlab.data.transforms.build_transforms`, ``task="segmentation"``).
        positive_fraction: probability that a slice carries a lesion.
        lesion_fraction: target share of a positive slice's pixels covered by lesion
            (each slice draws its own target within ±25 % of it).
    """

    def __init__(
        self,
        split: Literal["train", "val", "test"] = "train",
        num_samples: int | None = None,
        image_size: int = 128,
        seed: int = 0,
        transforms: Sequence[Any] | None = None,
        positive_fraction: float = 0.1,
        lesion_fraction: float = 0.005,
    ) -> None:
        if split not in _SPLITS:
            raise ConfigError(f"split must be one of {', '.join(_SPLITS)}; got {split!r}")
        if num_samples is None:
            num_samples = _DEFAULT_NUM_SAMPLES[split]
        check_int("SyntheticSpineCT", "num_samples", num_samples, low=1)
        check_int("SyntheticSpineCT", "image_size", image_size, low=64)
        check_int("SyntheticSpineCT", "seed", seed, low=0)
        if not 0.0 <= float(positive_fraction) <= 1.0:
            raise ConfigError(f"positive_fraction must be in [0, 1], got {positive_fraction!r}")
        if not 0.0 < float(lesion_fraction) <= 0.05:
            raise ConfigError(f"lesion_fraction must be in (0, 0.05], got {lesion_fraction!r}")
        self.split = split
        self.num_samples = num_samples
        self.image_size = image_size
        self.seed = seed
        self.positive_fraction = float(positive_fraction)
        self.lesion_fraction = float(lesion_fraction)
        self.transform = build_transforms(transforms, task="segmentation", key="transforms")
        self._split_index = _SPLITS.index(split)
        # Draw i of one stream depends only on i (not on num_samples), so flags are per-index.
        flag_rng = np.random.default_rng((seed, self._split_index, 0, _FLAG_STREAM))
        self._flags = flag_rng.random(num_samples) < self.positive_fraction

    def __len__(self) -> int:
        return self.num_samples

    def _check_index(self, index: int) -> int:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return index % self.num_samples

    def is_positive(self, index: int) -> bool:
        """Whether slice ``index`` carries a lesion (no rendering)."""
        return bool(self._flags[self._check_index(index)])

    def positive_flags(self) -> np.ndarray:
        """``(N,)`` bool: which slices carry a lesion (no rendering; for samplers)."""
        return self._flags.copy()

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Slice ``index`` before transforms: image ``(H, W)`` float32 (standardized HU) and
        lesion mask ``(H, W)`` uint8 0/1."""
        index = self._check_index(index)
        rng = np.random.default_rng((self.seed, self._split_index, index))
        hu, bodies = _render_anatomy(rng, self.image_size)
        mask = np.zeros_like(hu, dtype=np.uint8)
        if self._flags[index]:
            target = self.lesion_fraction * hu.size * rng.uniform(0.75, 1.25)
            mask = _draw_lesions(rng, bodies, target, self.image_size)
            hu[mask > 0] = _LESION + rng.normal(0.0, 15.0, int(mask.sum()))
        hu += rng.normal(0.0, _NOISE_HU, hu.shape)
        hu = np.clip(hu, *_WINDOW)
        image = ((hu - _NORM_MEAN) / _NORM_STD).astype(np.float32)
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._check_index(index)
        image, mask = self.render(index)
        target: dict[str, Any] = {}
        orig = (self.image_size, self.image_size)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            new_image, new_mask = out["image"], out["mask"]
            if new_image.shape[:2] != orig:
                target["orig_mask"] = torch.from_numpy(mask.astype(np.float32))[None]
            image, mask = new_image, new_mask
        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.ndim == 3:  # albumentations may hand back (H, W, 1)
            image = image[..., 0]
        target["mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        h, w = image.shape
        return {
            "image": torch.from_numpy(image)[None],
            "target": target,
            "meta": {
                "image_id": f"{self.split}-{index}",
                "path": f"synthetic://spine/{self.split}/{index}",
                "orig_size": orig,
                "input_size": (h, w),
                "scale": (h / orig[0], w / orig[1]),
                "pad": (0, 0),
                "case_id": f"{self.split}-{index}",
            },
        }

    def input_spec(self) -> dict[str, Any]:
        """How a PNG/TIFF slice becomes this dataset's input for ``detlab predict``: one channel
        holding ``x = (HU + 250) / 1500`` (the window [-250, 1250] HU as [0, 1]; 8/16-bit PNG
        or float TIFF) normalized to ``(HU - 55) / 240`` like the synthetic slices; no resize."""
        low, high = _WINDOW
        width = high - low
        return {"channels": 1, "mean": ((_NORM_MEAN - low) / width,),
                "std": (_NORM_STD / width,), "geometry": None, "pixels": "float"}

    def __repr__(self) -> str:
        return (
            f"SyntheticSpineCT(split={self.split!r}, num_samples={self.num_samples}, "
            f"image_size={self.image_size}, positives={int(self._flags.sum())})"
        )


def _rounded_rect(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, half_h: float, half_w: float, r: float
) -> np.ndarray:
    """Bool mask of a rectangle with corner radius ``r`` centred at (cy, cx)."""
    dy = np.maximum(np.abs(yy - cy) - (half_h - r), 0.0)
    dx = np.maximum(np.abs(xx - cx) - (half_w - r), 0.0)
    return dy * dy + dx * dx <= r * r


def _render_anatomy(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple]]:
    """HU image ``(size, size)`` float64 and the vertebral bodies as (cy, cx, half_h, half_w, r)."""
    s = size / 128.0
    yy, xx = np.ogrid[0:size, 0:size]  # (size, 1) and (1, size): broadcast, cheap
    hu = np.full((size, size), _AIR)
    # Torso: ellipse of soft tissue inside a subcutaneous fat rim.
    cy, cx = size / 2 + rng.uniform(-4, 4) * s, size / 2 + rng.uniform(-4, 4) * s
    ay, ax = rng.uniform(90, 110) * s, rng.uniform(52, 60) * s  # spans the full height
    rho = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2
    hu[rho <= 1.0] = _FAT
    hu[rho <= (1.0 - rng.uniform(4, 7) * s / ax) ** 2] = _SOFT
    # Spine: a gently curved column (lordosis), canal and posterior elements behind it.
    col_x = size / 2 + rng.uniform(-12, 8) * s
    amp, phase = rng.uniform(0, 6) * s, rng.uniform(0, 2 * np.pi)
    texture = cv2.GaussianBlur(rng.normal(0.0, 1.0, (size, size)), (0, 0), 1.2 * s)
    texture *= 45.0 / max(float(texture.std()), 1e-6)
    bodies: list[tuple] = []
    y = rng.uniform(-12, 0) * s
    while y < size:
        h, w = rng.uniform(13, 17) * s, rng.uniform(26, 34) * s
        disc = rng.uniform(4, 6) * s
        bcy = y + h / 2
        bcx = col_x + amp * np.sin(2 * np.pi * bcy / (size * 1.5) + phase) + rng.normal(0, 1) * s
        bodies.append((bcy, bcx, h / 2, w / 2, rng.uniform(2.5, 4.5) * s))
        # Disc below this body.
        _paint(hu, _rounded_rect(yy, xx, y + h + disc / 2, bcx, disc / 2 + 1, w / 2 - 1, 2 * s),
               _DISC)
        # Canal (CSF) and a posterior element (bright blob) behind the body.
        back = bcx + w / 2
        _paint(hu, (np.abs(yy - bcy) <= h / 2 + disc) & (xx > back + 2 * s) & (xx < back + 9 * s),
               _CSF)
        pe = ((yy - bcy - h * 0.1) / (h * 0.45)) ** 2 + ((xx - back - 16 * s) / (6 * s)) ** 2
        _paint(hu, pe <= 1.0, _POSTERIOR + rng.uniform(-80, 80))
        y += h + disc
    for bcy, bcx, hh, hw, r in bodies:
        outer = _rounded_rect(yy, xx, bcy, bcx, hh, hw, r)
        rim = rng.uniform(1.5, 2.5) * s
        inner = _rounded_rect(yy, xx, bcy, bcx, hh - rim, hw - rim, max(r - rim, 0.5))
        hu[outer] = _CORTEX + rng.uniform(-100, 100)
        hu[inner] = _CANCELLOUS + rng.uniform(-40, 40) + texture[inner]
        if rng.random() < _VEIN_PROBABILITY:
            # Basivertebral vein channel: a fracture mimic (same intensity as a cleft) that is
            # short, straight, horizontal and enters from the posterior cortex. Not a lesion.
            y_v = bcy + rng.uniform(-0.15, 0.15) * hh
            half_t = rng.uniform(0.75, 1.25) * s
            x_end = bcx + hw - rng.uniform(0.25, 0.45) * 2 * hw
            vein = (np.abs(yy - y_v) < half_t) & (xx >= x_end) & outer
            hu[vein] = _LESION + rng.normal(0.0, 15.0, int(vein.sum()))
    return hu, bodies


def _paint(hu: np.ndarray, where: np.ndarray, value: float) -> None:
    """Set ``hu`` to ``value`` where ``where`` is inside the torso (not in the air)."""
    hu[where & (hu > _AIR)] = value


def _draw_lesions(
    rng: np.random.Generator, bodies: list[tuple], target_pixels: float, size: int
) -> np.ndarray:
    """uint8 mask of jagged oblique lines across vertebral bodies, ~``target_pixels`` in all."""
    s = size / 128.0
    yy, xx = np.ogrid[0:size, 0:size]  # (size, 1) and (1, size): broadcast, cheap
    margin = 2 * s
    inside = [b for b in bodies
              if b[0] - b[2] > margin and b[0] + b[2] < size - margin
              and b[1] - b[3] > margin and b[1] + b[3] < size - margin]
    mask = np.zeros((size, size), dtype=np.uint8)
    if not inside:  # cannot happen at image_size >= 64; keep the flag honest anyway
        inside = bodies
    max_thick = max(1, int(round(3 * s)))
    order = rng.permutation(len(inside))
    for attempt in range(6):
        missing = target_pixels - float(mask.sum())
        if missing < 0.25 * target_pixels:
            break
        bcy, bcx, hh, hw, r = inside[order[attempt % len(order)]]
        # A cleft from one side of the body to the other, tilted 10-30 degrees.
        slope = np.tan(np.deg2rad(rng.uniform(10, 30))) * rng.choice([-1.0, 1.0])
        y_mid = bcy + rng.uniform(-0.25, 0.25) * hh
        n_pts = int(rng.integers(5, 9))
        xs = np.linspace(bcx - hw - 1, bcx + hw + 1, n_pts)
        ys = y_mid + slope * (xs - bcx) + rng.normal(0.0, 1.0 * s, n_pts)
        pts = np.round(np.stack([xs, ys], axis=1)).astype(np.int32)
        body = _rounded_rect(yy, xx, bcy, bcx, hh, hw, r).astype(np.uint8)
        best = None  # the thickness whose new pixels come closest to what is missing
        for thick in range(1, max_thick + 1):
            line = np.zeros_like(mask)
            cv2.polylines(line, [pts], False, 1, thickness=thick, lineType=cv2.LINE_8)
            grown = mask | (line & body)
            err = abs(float(grown.sum()) - target_pixels)
            if best is None or err < best[0]:
                best = (err, grown)
        mask = best[1]
    return mask
