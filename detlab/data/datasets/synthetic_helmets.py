"""``SyntheticHelmets``: CCTV-like frames with small heads, with or without a helmet."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ...errors import ConfigError
from ...registry import DATASETS
from .synthetic_shapes import SyntheticShapes

__all__ = ["SyntheticHelmets"]

_HELMETS = np.array([[240, 220, 40], [245, 245, 245], [250, 140, 30], [40, 90, 230]], np.float32)
_HAIR = np.array([[35, 30, 25], [70, 50, 30], [110, 90, 60], [20, 20, 20]], np.float32)
_SKIN = np.array([[225, 180, 150], [190, 140, 105], [140, 95, 70]], np.float32)


@DATASETS.register
class SyntheticHelmets(SyntheticShapes):
    """Heads seen from a ceiling camera: ``helmet_on`` (label 0, a bright dome over the top half
    of the head) and ``helmet_off`` (label 1, dark hair), on a cluttered floor-like background.

    Box height is drawn log-uniformly in ``[min_size, max_size]`` px and width is ~0.55 x the
    height (the helmet team's median box is 19 x 35 px), so most boxes are tiny relative to the
    frame. Same determinism, arguments and exact-box guarantees as
    :class:`~detlab.data.datasets.synthetic_shapes.SyntheticShapes`; the two classes differ only
    in the colour and extent of the top of the head, which is what makes small ones hard.

    Args:
        noise_tile: ``None`` (default) draws the background noise independently per pixel;
            an int ``n`` draws one ``n x n`` noise patch per image and tiles it over the
            frame, computed in uint8, so a 1920x1080 frame renders in ~20 ms instead of
            ~200 ms (full-HD recipes such as recipes/helmet_cctv_fullhd.py). Deterministic
            either way; the heads and their boxes do not depend on it.
        *args, **kwargs: see :class:`~detlab.data.datasets.synthetic_shapes.SyntheticShapes`
            (``image_size=(1080, 1920)`` for full-HD frames; ``min_size`` / ``max_size`` set
            each split's box-height range).
    """

    class_names = ["helmet_on", "helmet_off"]

    def __init__(self, *args: Any, noise_tile: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if noise_tile is not None and (isinstance(noise_tile, bool)
                                       or not isinstance(noise_tile, int) or noise_tile < 1):
            raise ConfigError(f"SyntheticHelmets.noise_tile={noise_tile!r}: expected None or "
                              f"an int >= 1 (px)")
        self.noise_tile = noise_tile

    def load_image(self, ann: Any) -> np.ndarray:
        index = int(ann.image_id)
        rng = self._rng(index, "pixels")
        if self.noise_tile is not None:
            return self._paste_heads(self._fast_background(rng), index, rng)
        yy = np.linspace(0.0, 1.0, self.height, dtype=np.float32)[:, None, None]
        base = rng.uniform(80, 150) + 40 * (yy - 0.5)  # floor lit from one side
        image = np.broadcast_to(base, (self.height, self.width, 3)).astype(np.float32).copy()
        for _ in range(int(rng.integers(3, 9))):  # clutter: racks, pallets, markings
            x0, y0 = int(rng.integers(0, self.width)), int(rng.integers(0, self.height))
            x1 = x0 + int(rng.integers(4, max(5, self.width // 4)))
            y1 = y0 + int(rng.integers(4, max(5, self.height // 4)))
            color = tuple(float(c) for c in rng.uniform(40, 200, 3))
            cv2.rectangle(image, (x0, y0), (x1, y1), color, thickness=int(rng.choice([-1, 1, 2])))
        image += rng.normal(0.0, 8.0, image.shape)
        return np.clip(self._paste_heads(image, index, rng), 0, 255).astype(np.uint8)

    def _paste_heads(self, image: np.ndarray, index: int, rng: np.random.Generator
                     ) -> np.ndarray:
        """``image`` (float32 or uint8, changed in place) with the heads of ``index`` drawn."""
        for shape in self._layout(index):
            y0, x0 = shape["origin"]
            patch = shape["pixels"]
            mask = shape["mask"]
            region = image[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
            pixels = patch[mask] + rng.normal(0.0, 5.0, (int(mask.sum()), 3))
            region[mask] = pixels if image.dtype != np.uint8 else np.clip(pixels, 0, 255)
        return image

    def _fast_background(self, rng: np.random.Generator) -> np.ndarray:
        """uint8 ``(h, w, 3)`` floor: the same lit gradient and clutter as the default, with
        one ``noise_tile`` px noise patch repeated over the frame (cheap for full-HD)."""
        yy = np.linspace(0.0, 1.0, self.height, dtype=np.float32)[:, None]
        column = np.clip(rng.uniform(80, 150) + 40 * (yy - 0.5), 0, 255).astype(np.uint8)
        image = cv2.merge([cv2.resize(column, (self.width, self.height),
                                      interpolation=cv2.INTER_NEAREST)] * 3)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = int(rng.integers(0, self.width)), int(rng.integers(0, self.height))
            x1 = x0 + int(rng.integers(4, max(5, self.width // 4)))
            y1 = y0 + int(rng.integers(4, max(5, self.height // 4)))
            color = tuple(float(c) for c in rng.uniform(40, 200, 3))
            cv2.rectangle(image, (x0, y0), (x1, y1), color, thickness=int(rng.choice([-1, 1, 2])))
        n = self.noise_tile
        # Noise offset by +32 in uint8 so saturating add then subtract gives image + noise.
        patch = (np.clip(rng.normal(0.0, 8.0, (n, n, 3)), -32, 32) + 32).astype(np.uint8)
        noise = np.tile(patch, (-(-self.height // n), -(-self.width // n), 1))
        noise = noise[:self.height, :self.width]
        return cv2.subtract(cv2.add(image, np.ascontiguousarray(noise)), (32, 32, 32, 0))

    def _layout(self, index: int) -> list[dict[str, Any]]:
        rng = self._rng(index, "layout")
        wanted = int(rng.integers(0, self.max_objects + 1))
        heads: list[dict[str, Any]] = []
        taken: list[tuple[int, int, int, int]] = []
        log_lo, log_hi = np.log(self.min_size), np.log(self.max_size + 1)
        for _ in range(wanted * 10):
            if len(heads) == wanted:
                break
            h = max(4, min(int(np.exp(rng.uniform(log_lo, log_hi))), self.max_size))
            w = max(3, int(round(h * rng.uniform(0.45, 0.65))))
            y0 = int(rng.integers(0, self.height - h + 1))
            x0 = int(rng.integers(0, self.width - w + 1))
            if any(x0 <= bx1 and bx0 <= x0 + w and y0 <= by1 and by0 <= y0 + h
                   for bx0, by0, bx1, by1 in taken):
                continue
            label = int(rng.integers(0, 2))
            mask, pixels = _draw_head(label, h, w, rng)
            ys, xs = np.nonzero(mask)
            if len(ys) == 0:
                continue
            taken.append((x0, y0, x0 + w, y0 + h))
            box = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
            heads.append({"label": label, "origin": (y0, x0), "mask": mask, "pixels": pixels,
                          "box": box})
        return heads


def _draw_head(label: int, h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Bool mask ``(h, w)`` of a head and its colours ``(h, w, 3)``: a skin ellipse with either a
    helmet dome over the top ~45 % (label 0) or hair over the top ~25 % (label 1)."""
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, ((w - 1) * 8, (h - 1) * 8), ((w - 1) * 8, (h - 1) * 8), 0, 0, 360, 1,
                thickness=-1, shift=4)
    pixels = np.empty((h, w, 3), np.float32)
    pixels[:] = _SKIN[rng.integers(0, len(_SKIN))]
    top = _HELMETS[rng.integers(0, len(_HELMETS))] if label == 0 else \
        _HAIR[rng.integers(0, len(_HAIR))]
    cap = max(1, int(round(h * (rng.uniform(0.4, 0.5) if label == 0 else rng.uniform(0.2, 0.3)))))
    pixels[:cap] = top
    return mask.astype(bool), pixels
