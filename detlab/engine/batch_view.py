"""A picture of what the model is fed — a training batch after every transform, sampler and
collate step, with its targets drawn on top (``detlab show-data``,
:mod:`detlab.commands.show_data`, and ``diagnostics/train_batch.png``).

This is the check that catches a data-loader bug before it costs a training run: masks that do
not sit on the lesions, empty masks, images that are constant or wrongly windowed, boxes in
the wrong coordinates. The same picture is written at the start of every training run
(``diagnostics/train_batch.png``, see :mod:`detlab.engine.diagnostics`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from ..structures import Batch
from . import render

__all__ = ["render_batch", "batch_summary"]


def _tile(batch: Batch, i: int, tile: int) -> Image.Image:
    meta = batch.meta[i] if i < len(batch.meta) else {}
    target = batch.targets[i] if i < len(batch.targets) else {}
    h, w = (int(v) for v in meta.get("input_size", batch.images.shape[-2:]))
    picture = render.image_to_rgb(batch.images[i, :, :h, :w], meta.get("display_channel"))
    mask = target.get("mask")
    positive = ""
    if isinstance(mask, torch.Tensor) and mask.numel():
        m = mask[..., :h, :w]
        picture = render.overlay(picture, m)
        positive = f" +{int((m > 0.5).sum())}px" if (m > 0.5).any() else " (no lesion)"
    if target.get("boxes") is not None:
        picture = render.draw_boxes(picture, target["boxes"], target.get("labels"))
        positive = f" {len(target['boxes'])} boxes"
    if target.get("polygons") is not None:
        picture = render.draw_polygons(picture, target["polygons"])
        positive = f" {len(target['polygons'])} polygons"
    name = str(meta.get("image_id", i))
    return render.caption(render.fit(picture, tile), f"{name[:28]}{positive}")


def render_batch(batch: Batch, max_images: int = 16, columns: int = 4,
                 tile: int = 256) -> Image.Image:
    """Grid of the first ``max_images`` images of ``batch`` (un-padded part), each with its
    mask overlaid and its ``boxes``/``polygons`` drawn, captioned with its id."""
    n = min(len(batch), max_images)
    title = (f"batch of {len(batch)}: images {tuple(batch.images.shape)}, "
             f"showing {n}")
    return render.grid([_tile(batch, i, tile) for i in range(n)], columns, title=title)


def batch_summary(batch: Batch) -> str:
    """Text facts about a batch that expose loader bugs: shape, value range per channel, how
    many images carry a lesion / boxes, share of mask pixels."""
    images = batch.images.float()
    sizes = [tuple(int(v) for v in m.get("input_size", images.shape[-2:])) for m in batch.meta]
    sizes = sizes or [tuple(images.shape[-2:])] * len(images)
    lines = [f"images {tuple(images.shape)} {batch.images.dtype}; sizes before padding: "
             f"{sorted(set(sizes))}"]
    # statistics over image content only: the zero padding would pull them towards 0
    content = [images[i, :, :h, :w].reshape(images.shape[1], -1) for i, (h, w) in
               enumerate(sizes)]
    values = torch.cat(content, dim=1)
    for c in range(values.shape[0]):
        ch = values[c]
        lines.append(f"  channel {c}: min {float(ch.min()):.4g}  max {float(ch.max()):.4g}  "
                     f"mean {float(ch.mean()):.4g}  std {float(ch.std()):.4g}")
    masks = [t["mask"] for t in batch.targets if isinstance(t.get("mask"), torch.Tensor)]
    if masks:
        with_lesion = sum(bool((m > 0.5).any()) for m in masks)
        share = float(np.mean([float((m > 0.5).float().mean()) for m in masks]))
        lines.append(f"masks: {with_lesion} of {len(masks)} images have foreground; "
                     f"foreground share {100 * share:.3f} % of pixels")
    boxes = [len(t["boxes"]) for t in batch.targets if t.get("boxes") is not None]
    if boxes:
        lines.append(f"boxes per image: {boxes}")
    return "\n".join(lines)
