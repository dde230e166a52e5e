"""Albumentations pipelines from recipe lists.

A recipe lists transforms as dicts: ``dict(type="HorizontalFlip", p=0.5)``. ``type`` is looked up
in detlab's ``TRANSFORMS`` registry first (our own transforms, e.g. letterbox), then in the
``albumentations`` namespace, then as a dotted import path. Image and mask (and boxes, keypoints
for polygons) are transformed together by one ``albumentations.Compose``.

A detection pipeline of pixel-only transforms and flips only (the helmet recipes') is a
:class:`FlipBoxesCompose`: albumentations transforms the image alone and the boxes are flipped
with the float64 arithmetic of albumentations' box processor, the same numbers at a third of
the cost per sample (tests/data/test_flip_boxes.py compares it with albumentations).

The pipeline is a :class:`SeededCompose`: inside :func:`detlab.data.seeding.seeding_sample`
(the training loader) each call draws from seeds of ``(train.seed, epoch, index)``, so the same
seed gives the same augmentation in every worker layout and after ``--resume``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import albumentations as A
import numpy as np

from ..errors import ConfigError
from ..registry import TRANSFORMS, closest
from .seeding import next_transform_seed, seed_transform_tree


class SeededCompose(A.Compose):
    """``albumentations.Compose`` that re-seeds itself (each transform its own seed) from the
    sample being loaded (:mod:`detlab.data.seeding`); outside a seeded sample it behaves like
    ``Compose``."""

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        seed = next_transform_seed()
        if seed is not None:
            seed_transform_tree(self, seed)
        return super().__call__(*args, force_apply=force_apply, **data)


_FLIPS = (A.HorizontalFlip, A.VerticalFlip)
# albumentations 2.x resets a transform's ``params`` each call and keeps the applied ones
# (``get_applied_params``), which tells FlipBoxesCompose whether a flip ran; older versions
# keep the box processor.
_KNOWS_APPLIED = hasattr(A.BasicTransform, "get_applied_params")
_AREA_EPS = 1e-7  # albumentations' filter_bboxes drops boxes under this many px²


class FlipBoxesCompose(SeededCompose):
    """A :class:`SeededCompose` of pixel-only transforms and flips whose boxes (``bboxes``,
    ``(N, 4)`` xyxy px, with ``labels``) are moved here instead of by albumentations' box
    processor: the image goes through albumentations alone (same random draws: no transform of
    such a pipeline draws from the boxes) and each applied flip maps the boxes with the float64
    operations the processor runs for ``pascal_voc`` with ``clip=True``, ``min_area=0``,
    ``min_visibility=0`` (:func:`_flip_boxes`). Returns ``bboxes`` as an ``(M, 4)`` float64
    array and ``labels`` of the kept rows."""

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        if "bboxes" not in data:
            return super().__call__(*args, force_apply=force_apply, **data)
        boxes = np.asarray(data.pop("bboxes"), np.float32).reshape(-1, 4)
        labels = data.pop("labels", None)
        height, width = data["image"].shape[:2]
        for t in self.transforms:  # a transform that does not run leaves params empty
            t.params = {}
        out = super().__call__(*args, force_apply=force_apply, **data)
        flips = [type(t) for t in self.transforms
                 if type(t) in _FLIPS and t.get_applied_params()]
        boxes, keep = _flip_boxes(boxes, height, width, flips)
        out["bboxes"] = boxes
        if labels is not None:
            out["labels"] = np.asarray(labels)[keep]
        return out


def _flip_boxes(boxes: np.ndarray, height: int, width: int, flips: list[type]
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes after the flips, kept row indices)`` for xyxy px ``boxes`` of an
    ``height x width`` image, with the dtypes and operations of albumentations 2.0's box
    processor (``pascal_voc``, ``clip=True``, no minimum area/visibility/size): fractions in
    float32, clipped to [0, 1], flipped, then a float64 clip through pixels, areas under
    1e-7 px² dropped, back to pixels."""
    scale = np.array([width, height, width, height], float)
    n = (boxes.astype(np.float32).astype(float) / scale).astype(np.float32)
    n = np.clip(n, 0, 1)
    for flip in flips:
        out = n.copy()
        if flip is A.HorizontalFlip:
            out[:, 0], out[:, 2] = 1 - n[:, 2], 1 - n[:, 0]
        else:
            out[:, 1], out[:, 3] = 1 - n[:, 3], 1 - n[:, 1]
        n = out
    areas = ((n[:, 2] - n[:, 0]) * width) * ((n[:, 3] - n[:, 1]) * height)
    px = n * scale
    px[:, [0, 2]] = np.clip(px[:, [0, 2]], 0, width)
    px[:, [1, 3]] = np.clip(px[:, [1, 3]], 0, height)
    clipped = px / scale
    c_areas = ((clipped[:, 2] - clipped[:, 0]) * width) * ((clipped[:, 3] - clipped[:, 1]) * height)
    c_px = clipped * scale
    keep = np.flatnonzero((areas >= _AREA_EPS) & (c_areas >= -_AREA_EPS)
                          & (c_areas / (areas + _AREA_EPS) >= 0)
                          & (c_px[:, 2] - c_px[:, 0] >= -_AREA_EPS)
                          & (c_px[:, 3] - c_px[:, 1] >= -_AREA_EPS))
    return c_px[keep], keep


__all__ = ["build_transforms", "resolve_transform", "SeededCompose", "FlipBoxesCompose"]


def resolve_transform(type_: Any, key: str = "") -> Any:
    """Find a transform class by registered name, albumentations name, class or dotted path."""
    if not isinstance(type_, str):
        return TRANSFORMS.get(type_)
    if type_ in TRANSFORMS:
        return TRANSFORMS.get(type_)
    if hasattr(A, type_):
        return getattr(A, type_)
    if "." in type_:
        return TRANSFORMS.get(type_)
    names = [n for n in dir(A) if n[:1].isupper()] + TRANSFORMS.names()
    hint = closest(type_, names)
    where = f" at {key!r}" if key else ""
    raise ConfigError(
        f"unknown transform {type_!r}{where}: not a detlab transform nor an albumentations class"
        + (f". Did you mean: {', '.join(hint)}?" if hint else "")
    )


def _keeps_boxes_valid(transforms: Sequence[Any]) -> bool:
    """Whether every transform is pixel-only or a flip: flips map valid boxes to valid boxes of
    the same area, so no box can need filtering between transforms."""
    return all(isinstance(t, (A.ImageOnlyTransform, A.HorizontalFlip, A.VerticalFlip))
               for t in transforms)


def build_transforms(
    cfgs: Sequence[Any] | None,
    *,
    task: Literal["segmentation", "detection", "text"] = "segmentation",
    key: str = "data.transforms",
) -> SeededCompose | None:
    """Build one ``albumentations.Compose`` from a list of transform configs.

    Args:
        cfgs: list of ``dict(type=..., **kwargs)`` or already-built transforms; ``None`` or empty
            gives ``None`` (no transform).
        task: ``"detection"`` adds box handling (``pascal_voc`` = xyxy pixels, labels in
            ``labels``); ``"text"`` adds keypoint handling (polygon vertices as ``xy`` keypoints,
            kept even when they leave the image so words can be clipped, not lost silently).
        key: recipe key used in error messages.

    Returns:
        A Compose called as ``t(image=HxWxC array, mask=HxW[xC] array, ...)``, or ``None``.
    """
    if not cfgs:
        return None
    built = []
    for i, cfg in enumerate(cfgs):
        if isinstance(cfg, dict):
            if "type" not in cfg:
                raise ConfigError(f"transform at '{key}.{i}' has no 'type' key: {cfg!r}")
            cls = resolve_transform(cfg["type"], key=f"{key}.{i}")
            kwargs = {k: v for k, v in cfg.items() if k != "type"}
            try:
                built.append(cls(**kwargs))
            except (TypeError, ValueError) as err:
                raise ConfigError(f"cannot build transform {cls.__name__} at '{key}.{i}': {err}")
        else:
            built.append(cfg)
    extra: dict[str, Any] = {}
    if task == "detection" and _KNOWS_APPLIED and all(
            isinstance(t, A.ImageOnlyTransform) or type(t) in _FLIPS for t in built):
        return FlipBoxesCompose(built)
    if task == "detection":
        extra["bbox_params"] = A.BboxParams(
            format="pascal_voc", label_fields=["labels"], min_visibility=0.0, clip=True,
            # Boxes are filtered after every transform by default (a crop can leave a box
            # without area, which the final check would reject). Pixel-only transforms and
            # flips cannot, and there the per-transform filters were a fifth of a sample.
            check_each_transform=not _keeps_boxes_valid(built),
        )
    elif task == "text":
        extra["keypoint_params"] = A.KeypointParams(format="xy", remove_invisible=False)
    return SeededCompose(built, **extra)
