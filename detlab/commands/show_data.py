"""``detlab show-data RECIPE --out DIR``: draw batches of a recipe's data as the model sees
them (:func:`detlab.engine.batch_view.render_batch`), with a text summary of each."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["show_data", "add_command"]


def show_data(recipe: Any, out_dir: str | Path, split: str = "train", num_batches: int = 1,
              max_images: int = 16) -> list[Path]:
    """Write ``<split>_batch<i>.png`` and ``.txt`` for the first ``num_batches`` batches of
    ``split`` (``"train"`` goes through the recipe's sampler). Returns the files written."""
    from ..data.datamodule import DataModule
    from ..engine.batch_view import batch_summary, render_batch

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
