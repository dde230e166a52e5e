"""Time training steps of recipes/helmet_yolo_p2.py (not a test): images per second.

Builds the recipe's model and one batch of its training data (overrides apply, e.g.
``'model.neck.levels=(3,4,5)'`` for the model without P2), then times forward + loss + backward
+ AdamW step. Prints min and median seconds per step and images/s from the median (other
processes on a small shared machine make single runs noisy: note ``uptime`` with the numbers).

Usage: ``python tools/bench_helmet.py [--threads N] [--steps S] [override …]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from detlab.data.datamodule import DataModule
from detlab.recipe import load
from detlab.registry import MODELS

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "helmet_yolo_p2.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. data.batch_size=16")
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load(args.recipe, ["data.num_workers=0", *args.overrides])
    torch.manual_seed(0)
    model = MODELS.build(recipe.section("model"), key="model").train()
    data = DataModule(recipe.section("data"), size_divisor=model.size_divisor)
    batch = next(iter(data.train_dataloader()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(model.loss(batch).values()).backward()
        optimizer.step()

    step()  # warm-up
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"{Path(args.recipe).name} {' '.join(args.overrides)}: batch "
          f"{tuple(batch.images.shape)}, {torch.get_num_threads()} thread(s): "
          f"min {min(times):.2f} s, median {median:.2f} s per step, "
          f"{len(batch) / median:.1f} images/s")


if __name__ == "__main__":
    main()
