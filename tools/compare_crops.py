"""How many training crops hold no box, or no whole (uncut) object (not a test).

Compares albumentations ``RandomCrop`` and ``AtLeastOneBBoxRandomCrop`` (after the letterbox,
``img_size=None``) with :class:`~detlab.data.crops.ObjectCrops` (original pixels, ``ratio=1``)
on SyntheticHelmets frames with objects, each sample seeded as in training (``train.seed=0``).

Usage: ``python tools/compare_crops.py [--frames 200] [--crop 192]``.
"""

from __future__ import annotations

import argparse

import torch

from detlab.data.crops import ObjectCrops
from detlab.data.datasets.synthetic_helmets import SyntheticHelmets
from detlab.data.seeding import SeededDataset


def counts(dataset: SeededDataset, indices: list[int]) -> tuple[int, int]:
    """``(samples without a box, samples without an uncut box)`` over ``indices``."""
    empty = no_whole = 0
    for i in indices:
        target = dataset[i]["target"]
        boxes, orig = target["boxes"], target["orig_boxes"]
        same = ((boxes[:, 2:] - boxes[:, :2]) - (orig[:, 2:] - orig[:, :2])).abs() < 1e-3
        empty += len(boxes) == 0
        no_whole += not bool(same.all(1).any())
    return empty, no_whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--crop", type=int, default=192)
    args = parser.parse_args()
    torch.set_num_threads(1)
    kw = dict(num_samples=args.frames, image_size=(216, 384), min_size=6, max_size=16, seed=0)
    indices = [i for i in range(args.frames)
               if len(SyntheticHelmets(**kw).annotations(i).boxes)]
    side = args.crop
    for name in ("RandomCrop", "AtLeastOneBBoxRandomCrop"):
        crop = dict(type=name, height=side, width=side, p=1.0)
        ds = SeededDataset(SyntheticHelmets(img_size=None, transforms=[crop], **kw), seed=0)
        print(name, "without a box / without a whole object: %d / %d of %d" % (
            *counts(ds, indices), len(indices)))
    ours = SeededDataset(ObjectCrops(SyntheticHelmets(img_size=side, **kw), ratio=1.0), seed=0)
    print("ObjectCrops without a box / without a whole object: %d / %d of %d" % (
        *counts(ours, indices), len(indices)))


if __name__ == "__main__":
    main()
