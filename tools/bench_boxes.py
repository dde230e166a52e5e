"""Time the box toolkit at YOLO scale (not a test).

* TaskAlignedAssigner + CIoU/DFL losses for a batch of 16 × 8400 anchors (640 px, strides 8/16/32)
  × 30 padded ground-truth boxes × 80 classes;
* BoxPostProcessor on an (8, 4 + 80, 8400) output at validation settings (score threshold
  0.001, IoU 0.7, 300 detections, 30000 candidates before NMS).

Prints min and median milliseconds over repeats (other processes on a small machine make the
median noisy). Usage: ``python tools/bench_boxes.py [--threads N] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from detlab.assigners.task_aligned import TaskAlignedAssigner
from detlab.losses.dfl import DFLoss
from detlab.losses.iou import CIoULoss
from detlab.postprocess.box_nms import BoxPostProcessor


def anchor_points(size: int = 640, strides: tuple[int, ...] = (8, 16, 32)) -> torch.Tensor:
    out = []
    for s in strides:
        n = size // s
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        out.append((torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * s)
    return torch.cat(out)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    points = anchor_points()
    a, b, gmax, c = points.shape[0], 16, 30, 80
    scores = torch.rand(b, a, c, generator=g) * 0.5
    wh = torch.rand(b, a, 2, generator=g) * 60 + 4
    pred = torch.cat([points - wh / 2, points + wh / 2], -1)
    xy = torch.rand(b, gmax, 2, generator=g) * 560
    gt = torch.cat([xy, xy + torch.rand(b, gmax, 2, generator=g) * 150 + 8], -1)
    labels = torch.randint(0, c, (b, gmax), generator=g)
    valid = torch.arange(gmax)[None] < torch.randint(1, gmax + 1, (b, 1), generator=g)
    dist_logits = torch.randn(b, a, 4, 16, generator=g)

    for kind in ("iou", "ciou"):
        tal = TaskAlignedAssigner(topk=10, iou_kind=kind)
        ms = timed(lambda: tal(scores, pred, points, labels, gt, valid), args.repeats)
        print(f"TAL ({kind}) {b}x{a} anchors, {gmax} gts, {c} classes: "
              f"min {ms[0]:.1f} ms, median {ms[1]:.1f} ms")

    tal, ciou, dfl = TaskAlignedAssigner(topk=10, iou_kind="ciou"), CIoULoss(), DFLoss()

    def assign_and_losses() -> None:
        r = tal(scores, pred, points, labels, gt, valid)
        fg = r.fg_mask
        w = r.target_scores.sum(-1)[fg]
        norm = r.target_scores.sum()
        ciou(pred[fg], r.target_boxes[fg], w, avg_factor=norm)
        ltrb = torch.cat([points - r.target_boxes[..., :2], r.target_boxes[..., 2:] - points], -1)
        dfl(dist_logits[fg], (ltrb[fg] / 8).clamp(min=0), w, avg_factor=norm)

    ms = timed(assign_and_losses, args.repeats)
    print(f"TAL + CIoU + DFL: min {ms[0]:.1f} ms, median {ms[1]:.1f} ms")

    post = BoxPostProcessor(score_threshold=0.001, pre_nms_topk=30000, max_detections=300,
                            iou_threshold=0.7)
    probs = torch.rand(8, a, c, generator=g) ** 4  # most pairs over 0.001, as at validation
    ms = timed(lambda: post.batched(pred[:8], probs), args.repeats)
    print(f"post-processing (8, 4+{c}, {a}) at 0.001: min {ms[0]:.1f} ms, median {ms[1]:.1f} ms")


if __name__ == "__main__":
    main()
