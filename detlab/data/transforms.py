"""Albumentations pipelines from recipe lists.

A recipe lists transforms as dicts: ``dict(type="HorizontalFlip", p=0.5)``. ``type`` is looked up
in detlab's ``TRANSFORMS`` registry first (our own transforms, e.g. letterbox), then in the
``albumentations`` namespace, then as a dotted import path. Image and mask (and boxes, keypoints
for polygons) are transformed together by one ``albumentations.Compose``.

The pipeline is a :class:`SeededCompose`: inside :func:`detlab.data.seeding.seeding_sample`
(the training loader) each call draws from seeds of ``(train.seed, epoch, index)``, so the same
seed gives the same augmentation in every worker layout and after ``--resume``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import albumentations as A

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

__all__ = ["build_transforms", "resolve_transform", "SeededCompose"]


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
