"""Forward time of each head family's model as trained and as ``detlab eval`` runs it (not a test).

    python tools/bench_inference.py [--families yolo,frcnn,db,unet] [--repeats 5] [--threads 2]
                                    [--device cpu|cuda] [--batch N]

Per family: the recipe's model (``pretrained=False``, random weights, BatchNorm statistics
randomised so folding is not a no-op), one batch at the family's size, median milliseconds per
image over ``--repeats`` alternating runs of: the model as trained, BatchNorm folded,
channels-last, both (detlab's default for box/text heads), and both + ``precision="bf16"``.
Ratios are against the model as trained; the max relative output difference of each variant
is printed next to it. ``--device cuda`` also times ``precision="16"`` (CUDA only) and
synchronises the device around every timed forward; ``--batch`` replaces the family's batch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from detlab.engine.inference_model import inference_task
from detlab.models.fuse import output_tensors
from detlab.recipe import load
from detlab.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {  # recipe, input size, batch
    "yolo": ("helmet_yolo.py", 640, 2),
    "yolo_dense": ("helmet_yolo_dense.py", 640, 2),
    "frcnn": ("digits_faster_rcnn.py", 320, 2),
    "db": ("receipt_dbnet.py", 640, 1),
    "unet": ("fracture_unet.py", 256, 2),
}
VARIANTS = {
    "as trained": None,
    "fold": {"fuse_bn": True, "channels_last": False},
    "channels_last": {"fuse_bn": False, "channels_last": True},
    "fold+cl": {"fuse_bn": True, "channels_last": True},
    "default": {},
    "default+bf16": {"precision": "bf16"},
}


def _rel_diff(a: Any, b: Any) -> float:
    pairs = [(x, y) for x, y in zip(output_tensors(a), output_tensors(b))
             if x.is_floating_point() and x.shape == y.shape and x.numel()]
    return max((float((x - y).abs().max()) / (float(x.abs().max()) + 1e-12) for x, y in pairs),
               default=float("nan"))


def build(recipe: str) -> nn.Module:
    """The recipe's model in eval mode with random BatchNorm statistics (seeded)."""
    torch.manual_seed(0)
    model = MODELS.build(load(ROOT / "recipes" / recipe)["model"], key="model").eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def main() -> None:
    """Time every variant of every family (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--batch", type=int, default=None, help="default: per family")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = dict(VARIANTS)
    if device.type == "cuda":
        variants["default+fp16"] = {"precision": "16"}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for family in args.families.split(","):
        recipe, size, batch = FAMILIES[family]
        batch = args.batch or batch
        model = build(recipe).to(device)
        channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
        x = torch.rand(batch, channels, size, size,
                       generator=torch.Generator().manual_seed(1)).to(device)
        models = {name: model if cfg is None else
                  inference_task(SimpleNamespace(model=model, recipe={"inference": cfg})).model
                  for name, cfg in variants.items()}
        times: dict[str, list[float]] = {name: [] for name in models}
        with torch.inference_mode():
            ref = model(x)
            diffs = {name: _rel_diff(ref, m(x)) for name, m in models.items()}  # + warm-up
            for _ in range(args.repeats):
                for name, m in models.items():
                    sync()
                    t0 = time.perf_counter()
                    m(x)
                    sync()
                    times[name].append((time.perf_counter() - t0) / batch)
        base = statistics.median(times["as trained"])
        where = f"{args.threads} threads" if device.type == "cpu" else str(device)
        print(f"{family} ({recipe}, {batch}x{channels}x{size}x{size}, {where}, "
              f"median of {args.repeats}):")
        for name in models:
            med = statistics.median(times[name])
            print(f"  {name:<14} {med * 1000:8.1f} ms/image  {base / med:5.2f}x  "
                  f"max rel diff {diffs[name]:.1e}")


if __name__ == "__main__":
    main()
