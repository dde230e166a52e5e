"""Cost of one extra ``detlab sweep`` setting against one inference pass over the val split.

    python tools/bench_sweep.py [CKPT] [--key model.head.postprocessor.iou_threshold]
                                [--values 0.5,0.6,0.7,0.8] [--repeats 3] [--keep DIR]
                                [--threads 1] [--workers 1]

Without CKPT, trains a tiny helmet_yolo checkpoint first (96 train / 32 val images at 192 px,
2 epochs, ``train.num_threads=1``; ~2 min on one CPU core) in a temporary folder (``--keep
DIR``: in DIR, reused by later runs). Prints the
median inference pass, the median post-processing and evaluation time per setting, and the
ratio per setting / inference (the goal of issue 17: <= 10 %), timed with the wall clock and
with the process's CPU time (steadier where other jobs share the cores). ``--threads``: torch
threads of the network pass; ``--workers``: processes the settings run in (``detlab sweep
--workers``; wall clock only, the CPU clock would miss the workers' time). A fair multi-core
comparison gives both the same number of cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = ["data.train.num_samples=96", "data.val.num_samples=32", "data.num_workers=0",
        "train.max_epochs=2", "train.progress_bar=false", "train.num_threads=1"]


def tiny_checkpoint(work: Path) -> Path:
    """Train recipes/helmet_yolo.py on tiny settings into ``work``; the last checkpoint."""
    from detlab.cli import main

    if main(["train", str(ROOT / "recipes" / "helmet_yolo.py"), *TINY, "--work-dir",
             str(work)]) != 0:
        raise SystemExit("training the tiny checkpoint failed")
    return next(work.glob("*/version_0/checkpoints/last.ckpt"))


def _default_key(recipe: dict) -> str:
    """The test-stage ``iou_threshold`` key: ``...postprocessor.test.<knob>`` when the recipe
    has a ``test`` section, else ``...postprocessor.<knob>`` (both stages; sweep runs test)."""
    post = recipe["model"]["head"].get("postprocessor") or {}
    test = isinstance(post, dict) and isinstance(post.get("test"), dict)
    return "model.head.postprocessor." + ("test." if test else "") + "iou_threshold"


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--key", default=None, help="swept key (default: the head's "
                        "postprocessor iou_threshold, new or legacy spelling)")
    parser.add_argument("--values", default="0.5,0.6,0.7,0.8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipe", default=None, help="rebuild CKPT with this recipe (a "
                        "checkpoint saved before a key rename), as `detlab eval --recipe`")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (network pass)")
    parser.add_argument("--workers", type=int, default=1, help="processes for the settings")
    parser.add_argument("--keep", default=None, metavar="DIR",
                        help="train the tiny checkpoint into DIR and keep it; reuse the one "
                        "already there on later runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import detlab.commands.sweep as sweep_mod
    from detlab.commands.sweep import parse_sweep, run_sweep
    from detlab.engine.checkpoint import load_task
    from detlab.postprocess.staged import StagedPostprocessor

    tmp = tempfile.TemporaryDirectory()
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
    elif args.keep:
        work = Path(args.keep)
        found = sorted(work.glob("*/version_0/checkpoints/last.ckpt"))
        ckpt = found[0] if found else tiny_checkpoint(work)
    else:
        ckpt = tiny_checkpoint(Path(tmp.name))
    task = load_task(ckpt, recipe=args.recipe)
    if not isinstance(getattr(task.model.head, "postprocessor", None), StagedPostprocessor):
        raise SystemExit(f"{type(task.model.head).__name__} has no postprocessor slot")
    key = args.key or _default_key(task.recipe)
    grid = parse_sweep([f"{key}={args.values}"])
    n = len(grid[key])
    print(f"checkpoint {ckpt}, {n} settings of {key}, medians of {args.repeats} sweeps per "
          f"clock, {args.threads} thread(s), settings in {args.workers} process(es)")
    clocks = [("wall", time.perf_counter)]
    if args.workers == 1:
        clocks.append(("cpu", time.process_time))
    for name, clock in clocks:
        rows = [_one_sweep(run_sweep, sweep_mod, task, grid, n, clock, args.workers)
                for _ in range(args.repeats)]
        inf_s, post_s, eval_s, ratio = (statistics.median(r[i] for r in rows) for i in range(4))
        print(f"[{name} clock] {rows[0][4]} val images")
        print(f"  inference pass      {inf_s:8.3f} s")
        print(f"  per setting         {post_s + eval_s:8.3f} s  (post-processing {post_s:.3f} s "
              f"+ evaluation {eval_s:.3f} s)")
        print(f"  ratio setting/pass  {ratio:8.3f}  (median of the sweeps' ratios; goal <= 0.10)")


def _one_sweep(run_sweep, sweep_mod, task, grid, n, clock, workers=1):
    """(inference s, post-processing s per setting, evaluation s per setting, ratio, images) of
    one sweep timed with ``clock``: the sweep module's ``time.perf_counter`` is swapped for it
    (process time: the CPU seconds of this process, steadier than wall time on a shared
    machine)."""
    real = sweep_mod.time
    sweep_mod.time = types.SimpleNamespace(perf_counter=clock)
    try:
        result = run_sweep(task, grid, workers=workers)
    finally:
        sweep_mod.time = real
    post, evaluation = result.postprocess_s / n, result.evaluation_s / n
    return (result.inference_s, post, evaluation, (post + evaluation) / result.inference_s,
            result.images)

if __name__ == "__main__":
    main()
