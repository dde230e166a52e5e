"""NMS variants and Weighted Boxes Fusion against their peers, medians of alternating runs.

    python tools/bench_nms.py [--sizes 1000,5000] [--repeats 5] [--threads 1]

Boxes: random xyxy in a 640x640 image (sides 4-84 px), uniform scores, one class (the peers'
Soft-NMS loops run per class too). Prints, per size, the median time of detlab's Soft-NMS
(Gaussian, linear) and DIoU-NMS, ensemble-boxes' soft_nms (same boxes normalised to [0, 1]) and
torchvision's hard nms, and the ratios detlab / peer (< 1: detlab is faster). Then WBF of 3
models x N/3 boxes (1 and 20 labels) against ensemble-boxes' weighted_boxes_fusion.
ensemble-boxes is optional (its columns are skipped when it is not installed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detlab.ops.nms import nms  # noqa: E402
from detlab.ops.wbf import weighted_boxes_fusion  # noqa: E402

try:
    import ensemble_boxes
except ImportError:  # optional peer
    ensemble_boxes = None


def random_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` xyxy boxes in a 640x640 image and uniform scores."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 556
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 80 + 4], 1)
    return boxes, torch.rand(n, generator=g)


def medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, runs alternating between them (drift hits all)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_nms(n: int, repeats: int) -> None:
    """Soft-/DIoU-NMS vs ensemble-boxes and torchvision on ``n`` boxes."""
    boxes, scores = random_boxes(n, n)
    fns = {
        "detlab soft_gaussian": lambda: nms(boxes, scores, None, "soft_gaussian", 0.5),
        "detlab soft_linear": lambda: nms(boxes, scores, None, "soft_linear", 0.5),
        "detlab diou": lambda: nms(boxes, scores, None, "diou", 0.5),
        "torchvision nms": lambda: torchvision.ops.nms(boxes, scores, 0.5),
    }
    if ensemble_boxes is not None:
        nb, ns, nl = (boxes / 640).double().numpy(), scores.double().numpy(), np.zeros(n)
        fns["ensemble-boxes soft (gauss)"] = lambda: ensemble_boxes.soft_nms(
            [nb], [ns], [nl], method=2, iou_thr=0.5, sigma=0.5, thresh=0.001)
        fns["ensemble-boxes soft (linear)"] = lambda: ensemble_boxes.soft_nms(
            [nb], [ns], [nl], method=1, iou_thr=0.5, sigma=0.5, thresh=0.001)
    t = medians(fns, repeats)
    print(f"\n{n} boxes (median of {repeats}, ms)")
    for k, v in t.items():
        print(f"  {k:30s} {1000 * v:9.1f}")
    tv = t["torchvision nms"]
    for k in ("detlab soft_gaussian", "detlab soft_linear", "detlab diou"):
        line = f"  {k:22s} / torchvision nms {t[k] / tv:6.2f}"
        if ensemble_boxes is not None and k.startswith("detlab soft"):
            peer = "ensemble-boxes soft (gauss)" if "gauss" in k else "ensemble-boxes soft (linear)"
            line += f"   / {peer} {t[k] / t[peer]:6.2f}"
        print(line)


def bench_wbf(n: int, labels: int, repeats: int) -> None:
    """WBF of 3 models x n/3 boxes with ``labels`` classes vs ensemble-boxes."""
    per = n // 3
    models = [random_boxes(per, 7 * n + i) for i in range(3)]
    g = torch.Generator().manual_seed(labels)
    labs = [torch.randint(0, labels, (per,), generator=g) for _ in range(3)]
    fns = {"detlab wbf": lambda: weighted_boxes_fusion(
        [b for b, _ in models], [s for _, s in models], labs, iou_thr=0.55)}
    if ensemble_boxes is not None:
        nb = [(b / 640).double().numpy() for b, _ in models]
        ns = [s.double().numpy() for _, s in models]
        nl = [lab.numpy() for lab in labs]
        fns["ensemble-boxes wbf"] = lambda: ensemble_boxes.weighted_boxes_fusion(
            nb, ns, nl, iou_thr=0.55)
    t = medians(fns, repeats)
    line = f"  WBF 3 x {per} boxes, {labels:2d} label(s): detlab {1000 * t['detlab wbf']:8.1f} ms"
    if ensemble_boxes is not None:
        peer = t["ensemble-boxes wbf"]
        line += f"  ensemble-boxes {1000 * peer:8.1f} ms  ratio {t['detlab wbf'] / peer:5.2f}"
    print(line)


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, ensemble-boxes "
          f"{getattr(ensemble_boxes, '__version__', 'installed') if ensemble_boxes else 'absent'}"
          f", {args.threads} thread(s)")
    for n in sizes:
        bench_nms(n, args.repeats)
    print("\nWeighted Boxes Fusion (median ms)")
    for n in sizes:
        for labels in (1, 20):
            bench_wbf(n, labels, args.repeats)


if __name__ == "__main__":
    main()
