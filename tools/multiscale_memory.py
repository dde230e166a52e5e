"""Activation memory of one training forward (+ loss) at several input sizes (not a test).

Multi-scale training above the base size (``data.multi_scale=(1.0, 1.2)`` with ``img_size
1280``: batches up to 1536) costs memory; this measures it on any machine, CPU included: the
bytes of the distinct tensors autograd saves for the backward pass
(``torch.autograd.graph.saved_tensors_hooks``), which is the activation memory a training step
holds at its peak, besides weights, gradients and optimizer state (independent of the size).

Builds the recipe's model and one batch of its training data, resizes the batch to each
``--sizes`` long side at the ``--aspect`` ratio (16:9 CCTV frames by default) and prints MiB
per image and the ratio to the first size.

Usage: ``python tools/multiscale_memory.py [--sizes 1280 1536] [--batch 1] [override …]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from detlab.data.datamodule import DataModule
from detlab.data.multiscale import rescale_batch
from detlab.recipe import load
from detlab.registry import MODELS
from detlab.structures import Batch

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "helmet_yolo_p2.py"


def saved_bytes(model: torch.nn.Module, batch: Batch) -> int:
    """Bytes of the distinct storages autograd saves while computing ``model.loss(batch)``."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sum(model.loss(batch).values())
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="recipe overrides")
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1280, 1536])
    parser.add_argument("--aspect", type=float, default=16 / 9, help="width / height")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load(args.recipe, ["data.num_workers=0", f"data.batch_size={max(args.batch, 2)}",
                                *args.overrides])
    torch.manual_seed(0)
    model = MODELS.build(recipe.section("model"), key="model").train()
    data = DataModule(recipe.section("data"), size_divisor=model.size_divisor)
    batch = next(iter(data.train_dataloader()))
    batch = Batch(batch.images[:args.batch], batch.targets[:args.batch], batch.meta[:args.batch])
    d = model.size_divisor
    first = None
    for size in args.sizes:
        h = -(-int(round(size / args.aspect)) // d) * d  # next multiple of the stride
        square = rescale_batch(batch, size, d)           # boxes scaled with the image
        targets = []
        for t in square.targets:
            boxes = t["boxes"].clone()
            boxes[:, 1::2] = boxes[:, 1::2].clamp(max=h)
            keep = boxes[:, 3] > boxes[:, 1] + 1
            targets.append({**t, "boxes": boxes[keep], "labels": t["labels"][keep],
                            "ignore": t["ignore"][keep], "orig_boxes": t["orig_boxes"][keep]})
        scaled = Batch(square.images[..., :h, :], targets, square.meta)
        mib = saved_bytes(model, scaled) / 2**20 / args.batch
        first = first or (mib, h * size)
        print(f"{size:5d} px long side, input {h}x{size}: {mib:8.1f} MiB of saved activations "
              f"per image, x{mib / first[0]:.3f} of {args.sizes[0]} px (pixels "
              f"x{h * size / first[1]:.3f})")


if __name__ == "__main__":
    main()
