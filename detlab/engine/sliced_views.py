"""Sliced inference combined with an ensemble or test-time augmentation (TTA).

Each (model, view) member runs sliced on its own: the view (:func:`~detlab.engine.ensemble.
view_batch`: flip, rescale) is applied to every TILE batch and to the whole-frame batch, each
tile's predictions are un-mapped within the tile (a flip: ``x -> tile width - x``), shifted to
the frame and merged / blended exactly as a single sliced model does
(:func:`detlab.engine.sliced.combine`). The members' frame-pixel predictions are then fused as
unsliced members are (:func:`~detlab.engine.ensemble.merge_members`: WBF / NMS / Soft-NMS for
boxes, the weighted map mean for DB text and segmentation).

Why fuse per frame and not per tile: the tile merge of a member stays the one of ``detlab eval``
with slicing alone (an ensemble of one checkpoint with itself is that checkpoint's sliced
prediction), boxes cut by tile borders are first joined within their member, and the blended
maps are linear in the tile maps, so the frame mean equals the mean of tile means anyway.
The first checkpoint's ``inference.slicing`` slices every member (as its ``inference.ensemble``
and ``inference.tta`` set the fusion); each member preprocesses the tiles with its own recipe.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

from ..postprocess.slicing import SlicedInference
from ..structures import Batch, Prediction, to_device
from .ensemble import (ensemble_settings, member_weight_list, merge_members, unmap_prediction,
                       view_batch)
from .sliced import SlicedBatch, combine, run_tiles, sliced_loader, sliced_step, tile_predictions

__all__ = ["sliced_views", "sliced_member_predictions", "sliced_batch_predictions"]


def sliced_views(task: Any, sliced: SlicedBatch, settings: SlicedInference, device: Any,
                 views: Sequence[tuple[str, float]]) -> list[list[Prediction]]:
    """Per frame of ``sliced``, one sliced frame-pixel prediction per ``(flip, scale)`` view."""
    head = task.model.head
    per_image: list[list[Prediction]] = [[] for _ in sliced.batch.meta]
    for flip, scale in views:
        plain = (flip, scale) == ("none", 1.0)
        view = None if plain else functools.partial(view_batch, flip=flip, scale=scale)
        parts, full = tile_predictions(head, run_tiles(task.model, sliced, settings, device,
                                                       view=view))
        if flip != "none":  # back to the plain tile (the frame for the full pass)
            parts = [[(unmap_prediction(p, {"orig_size": (w[3] - w[1], w[2] - w[0])}, flip), w)
                      for p, w in frame] for frame in parts]
            if full is not None:
                full = [unmap_prediction(p, m, flip) for p, m in zip(full, sliced.batch.meta)]
        for i, pred in enumerate(combine(head, parts, full, sliced.batch.meta, settings)):
            per_image[i].append(pred)
    return per_image


def sliced_member_predictions(task: Any, loader: Any, device: Any,
                              views: Sequence[tuple[str, float]], settings: SlicedInference,
                              limit: int | None = None
                              ) -> Iterator[tuple[list[list[Prediction]], Batch]]:
    """The sliced counterpart of :func:`detlab.engine.ensemble.member_predictions`: per batch
    of ``loader``, per frame the sliced prediction of every view, and the frame batch (CPU
    targets). Callers hold ``torch.inference_mode()``."""
    from .inference import data_module

    for i, sliced in enumerate(sliced_loader(data_module(task), loader, settings)):
        if limit is not None and i >= limit:
            break
        yield (sliced_views(task, sliced, settings, device, views),
               Batch(sliced.batch.images, to_device(sliced.batch.targets, "cpu"),
                     sliced.batch.meta))


def sliced_batch_predictions(task: Any, sliced: SlicedBatch, settings: SlicedInference,
                             device: Any) -> list[Prediction]:
    """One :class:`SlicedBatch`'s frame predictions as ``detlab eval`` of ``task`` makes them:
    sliced, and with the recipe's ``inference.tta`` views fused by its ``inference.ensemble``
    rule when set (sliced validation during training)."""
    merge, tta = ensemble_settings(task.recipe)
    if tta is None:
        return sliced_step(task.model, sliced, settings, device)[0]
    name = str(getattr(task.recipe, "path", None) or task.recipe.name)
    weights = member_weight_list(merge, [name], tta)
    return [merge_members([task], members, weights, meta, merge) for members, meta in
            zip(sliced_views(task, sliced, settings, device, tta.views), sliced.batch.meta)]
