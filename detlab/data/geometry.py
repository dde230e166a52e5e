"""``InputGeometry``: how an image of any size becomes the network input (resize, then pad).

One component shared by the training, validation and test datasets and by ``detlab predict``
(:class:`~detlab.data.datasets.image_files.ImageFiles` gets the val dataset's geometry from
its ``input_spec()``), so a file predicted on is the tensor ``detlab eval`` scored.

The meta it records follows the :class:`~detlab.structures.Batch` contract (continuous
pixel-edge coordinates)::

    orig_size   (h, w) of the image handed to the geometry
    scale       (sy, sx) = input_size / orig_size per axis, exactly (after rounding the size)
    input_size  (h, w) of the resized image, WITHOUT padding (the "content")
    pad         (top, left) rows/columns added before the content; it occupies
                rows [top, top + input_size[0]) and columns [left, left + input_size[1])
    input = orig * scale + pad   (x uses sx/left, y uses sy/top)

:mod:`detlab.ops.coords` maps predictions back with the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import ConfigError
from .letterbox import pad_to_stride, resize_keep_ratio

__all__ = ["InputGeometry", "RESIZE_MODES", "PAD_MODES", "UNSET", "LETTERBOX_SHORTHAND",
           "letterbox_geometry"]

RESIZE_MODES = ("long_side", "fixed")
PAD_MODES = ("none", "stride", "size")


@dataclass(frozen=True)
class InputGeometry:
    """Resize + pad of one image (see the module docstring for the meta it records).

    Args:
        img_size: target side in pixels; ``None`` keeps the size (no resize).
        resize: ``"long_side"``: keep the aspect ratio, fit in ``img_size x img_size``
            (detection letterbox, text ``long_side``); ``"fixed"``: stretch to
            ``img_size x img_size`` (text ``fixed``).
        scale_up: enlarge images smaller than ``img_size`` (``False``: only shrink).
        pad: ``"none"`` (the batch collate pads bottom/right with zeros after normalization),
            ``"stride"`` (each side to the next multiple of ``stride``) or ``"size"`` (to exactly
            ``img_size x img_size``).
        stride: multiple of ``pad="stride"``.
        pad_value: fill of the padding, in the units of the image padded (0-255 for uint8).
        center: pad evenly on both sides (letterbox); ``False`` pads bottom/right only.
    """

    img_size: int | None = None
    resize: str = "long_side"
    scale_up: bool = True
    pad: str = "none"
    stride: int = 32
    pad_value: float = 114.0
    center: bool = True

    def __post_init__(self) -> None:
        if self.img_size is not None and (isinstance(self.img_size, bool)
                                           or not isinstance(self.img_size, int)
                                           or self.img_size < 1):
            raise ConfigError(f"InputGeometry.img_size={self.img_size!r}: expected a positive "
                              "int or None")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"InputGeometry.resize={self.resize!r}: expected one of "
                              f"{RESIZE_MODES}")
        if self.pad not in PAD_MODES:
            raise ConfigError(f"InputGeometry.pad={self.pad!r}: expected one of {PAD_MODES}")
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ConfigError(f"InputGeometry.stride={self.stride!r}: expected a positive int")
        if self.pad == "size" and self.img_size is None:
            raise ConfigError("InputGeometry: pad='size' pads to img_size, so img_size cannot "
                              "be None")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | InputGeometry | None) -> InputGeometry:
        """An ``InputGeometry`` from a dict of its arguments (``None``: keep size, no pad)."""
        if isinstance(cfg, InputGeometry):
            return cfg
        if cfg is None:
            return cls()
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"geometry={cfg!r}: expected a dict of InputGeometry arguments")
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"geometry: unknown key(s) {sorted(unknown)}; expected "
                              f"{sorted(cls.__dataclass_fields__)}")
        return cls(**dict(cfg))

    def to_config(self) -> dict[str, Any]:
        """The arguments as a plain dict (JSON-able; :meth:`from_config` inverts it)."""
        return asdict(self)

    # -- the two steps --------------------------------------------------------------------------
    def resize_image(self, image: np.ndarray, boxes: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float]]:
        """Resize ``image`` (H, W[, C]); ``boxes`` (N, 4) xyxy px follow. Returns
        ``(image, boxes, (sy, sx))``. ``INTER_AREA`` when shrinking, ``INTER_LINEAR`` else."""
        if self.img_size is None:
            return image, boxes, (1.0, 1.0)
        if self.resize == "long_side":
            return resize_keep_ratio(image, boxes, self.img_size, self.scale_up)
        h, w = image.shape[:2]
        nh = nw = self.img_size
        if not self.scale_up:
            nh, nw = min(nh, h), min(nw, w)
        sy, sx = nh / h, nw / w
        if (nh, nw) != (h, w):
            interp = cv2.INTER_AREA if nh * nw < h * w else cv2.INTER_LINEAR
            resized = cv2.resize(image, (nw, nh), interpolation=interp)
            if image.ndim == 3 and resized.ndim == 2:
                resized = resized[..., None]
            image = resized
        if boxes is not None:
            boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * np.array(
                [sx, sy, sx, sy], np.float32)
        return image, boxes, (sy, sx)

    def scale_boxes(self, boxes: np.ndarray | None, scale: tuple[float, float]
                    ) -> np.ndarray | None:
        """``boxes`` (N, 4) xyxy px of the original image in the resized one, ``scale`` as
        :meth:`resize_image` returns it (the boxes it would return, without the image)."""
        if self.img_size is None or boxes is None:
            return boxes
        sy, sx = scale
        return np.asarray(boxes, np.float32).reshape(-1, 4) * np.array(
            [sx, sy, sx, sy], np.float32)

    def pad_image(self, image: np.ndarray, boxes: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
        """Pad the resized ``image`` per ``pad``; boxes shift. Returns ``(image, boxes,
        (top, left))``."""
        if self.pad == "none":
            return image, boxes, (0, 0)
        stride = self.stride if self.pad == "stride" else None
        return pad_to_stride(image, boxes, stride, self.pad_value, self.img_size, self.center)

    def apply(self, image: np.ndarray, boxes: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """Resize then pad; returns ``(image, boxes, meta)`` with ``orig_size``, ``scale``,
        ``input_size`` and ``pad`` (module docstring)."""
        orig = tuple(int(v) for v in image.shape[:2])
        image, boxes, scale = self.resize_image(image, boxes)
        content = tuple(int(v) for v in image.shape[:2])
        image, boxes, pad = self.pad_image(image, boxes)
        return image, boxes, {"orig_size": orig, "scale": scale, "input_size": content,
                              "pad": pad}


class _Unset:
    """Default of the letterbox shorthand keys: not given (``geometry`` or the dataset's
    default decides)."""

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> str:
        return "UNSET"  # pickles (loader workers) as the module's one instance


UNSET: Any = _Unset()
LETTERBOX_SHORTHAND = ("img_size", "stride", "scale_up", "pad_value")


def letterbox_geometry(
    owner: str,
    geometry: Mapping[str, Any] | InputGeometry | None = None,
    default_img_size: int | None = 640,
    **shorthand: Any,
) -> InputGeometry:
    """The letterbox :class:`InputGeometry` of a detection dataset, from ``geometry`` or from
    the documented flat shorthand (``img_size``, ``stride``, ``scale_up``, ``pad_value``).

    Defaults: ``img_size=default_img_size``, keep the ratio, pad each side to a multiple of
    ``stride=32`` with gray 114, centred. ``geometry`` is an :class:`InputGeometry` or a dict of
    its fields over these defaults. In the shorthand ``stride=None`` means ``pad="size"`` (pad
    to ``img_size x img_size``). Keys left ``UNSET`` are not given.

    Raises:
        ConfigError: both ``geometry`` and a shorthand key, an unknown key, or a bad value
            (the message names ``owner.<key>``).
    """
    unknown = set(shorthand) - set(LETTERBOX_SHORTHAND)
    if unknown:
        raise TypeError(f"letterbox_geometry: unknown shorthand {sorted(unknown)}")
    given = {k: v for k, v in shorthand.items() if v is not UNSET}
    if geometry is not None and given:
        keys = ", ".join(f"{owner}.{k}={v!r}" for k, v in given.items())
        raise ConfigError(
            f"{keys} and {owner}.geometry both set the input geometry: give it once, e.g. "
            f"geometry=dict({', '.join(f'{k}={v!r}' for k, v in given.items())}, ...) (on the "
            "command line <dataset key>.geometry.img_size=...), or drop geometry")
    base = InputGeometry(img_size=default_img_size, resize="long_side", scale_up=True,
                         pad="stride", stride=32, pad_value=114.0, center=True)
    if isinstance(geometry, InputGeometry):
        return geometry
    if geometry is not None:
        if not isinstance(geometry, Mapping):
            raise ConfigError(
                f"{owner}.geometry={geometry!r}: expected a dict of InputGeometry fields "
                f"{sorted(InputGeometry.__dataclass_fields__)} or an InputGeometry (the old "
                "positional img_size, stride, scale_up, pad_value are keyword-only shorthand)")
        return InputGeometry.from_config({**base.to_config(), **dict(geometry)})
    img_size = given.get("img_size", default_img_size)
    if img_size is not None and (isinstance(img_size, bool) or not isinstance(img_size, int)
                                 or img_size < 1):
        raise ConfigError(f"{owner}.img_size={img_size!r}: expected a positive int or None")
    stride = given.get("stride", 32)
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int)
                               or stride < 1):
        raise ConfigError(f"{owner}.stride={stride!r}: expected a positive int or None")
    if stride is None and img_size is None:
        raise ConfigError(f"{owner}: stride=None pads to img_size, so img_size cannot be None")
    pad_value = given.get("pad_value", 114.0)
    try:
        pad_value = float(pad_value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}.pad_value={pad_value!r}: expected a gray level in "
                          "[0, 255]") from None
    return InputGeometry(img_size=img_size, resize="long_side",
                         scale_up=bool(given.get("scale_up", True)),
                         pad="stride" if stride is not None else "size", stride=stride or 32,
                         pad_value=pad_value, center=True)
