"""``detlab show-data``: a picture of what the model is fed — a training batch after every
transform, sampler and collate step, with its targets drawn on top.

This is the check that catches a data-loader bug before it costs a training run: masks that do
not sit on the lesions, empty masks, images that are constant or wrongly windowed, boxes in
the wrong coordinates. The same picture is written at the start of every training run
(``diagnostics/train_batch.png``, see :mod:`detlab.engine.diagnostics`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..structures import Batch
from . import render

__all__ = ["render_batch", "batch_summary", "show_data", "add_command"]


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


def show_data(recipe: Any, out_dir: str | Path, split: str = "train", num_batches: int = 1,
              max_images: int = 16) -> list[Path]:
    """Write ``<split>_batch<i>.png`` and ``.txt`` for the first ``num_batches`` batches of
    ``split`` (``"train"`` goes through the recipe's sampler). Returns the files written."""
    from ..data.datamodule import DataModule

    cfg = {**recipe.section("data"), "num_workers": 0, "persistent_workers": False}
    data = DataModule(cfg)
    loader = data.train_dataloader() if split == "train" else data.val_dataloader()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, batch in enumerate(loader):
        if i >= num_batches:
            break
        png, txt = out / f"{split}_batch{i}.png", out / f"{split}_batch{i}.txt"
        render_batch(batch, max_images).save(png)
        txt.write_text(batch_summary(batch) + "\n")
        written += [png, txt]
    return written


def _cmd(args: argparse.Namespace) -> int:
    from ..recipe import load

    recipe = load(args.recipe, args.overrides)
    files = show_data(recipe, args.out, args.split, args.batches, args.max_images)
    for f in files:
        if f.suffix == ".txt":
            print(f.read_text(), end="")
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def add_command(subparsers: Any) -> None:
    """Register ``detlab show-data RECIPE [overrides] --out DIR``."""
    p = subparsers.add_parser(
        "show-data", help="draw a training batch as the model sees it",
        description="Write a PNG grid (and a text summary) of batches of RECIPE's data after "
                    "all transforms, with masks, boxes and polygons drawn on top.")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="e.g. data.root=/data/Task")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", choices=("train", "val"), default="train")
    p.add_argument("--batches", type=int, default=1, help="number of batches to draw")
    p.add_argument("--max-images", type=int, default=16, help="images per picture")
    p.set_defaults(func=_cmd)
