"""Train-step and inference images/s of detlab's ``FasterRCNNHead`` next to torchvision's
``fasterrcnn_resnet50_fpn_v2``, same backbone depth, same input size, same run.

Both are built from scratch (``weights=None, weights_backbone=None``) with the same layout:

* torchvision v2: ResNet-50 (BatchNorm trainable), FPN with BatchNorm on P2-P5 + P6 (max pool),
  RPN head with 2 convs, 3 anchors per location on 5 levels, conv box head (4 x 256 convs + FC
  1024, BatchNorm), RPN top-k 2000/2000 (train) and 1000/1000 (test), 512 RoIs per image.
  ``min_size = max_size = size`` so its transform keeps the input size (by default it resizes
  to 800 px);
* detlab: ``TimmBackbone("resnet50")`` + ``FPN(levels=(2..6), norm="batch")`` +
  ``FasterRCNNHead(rpn=dict(conv_depth=2), roi=dict(roi_align=dict(levels=(2, 3, 4, 5)),
  box_head=dict(type="ConvFCBoxHead", norm="batch")))`` with the same anchors, top-k, sampling and thresholds. Left
  different: detlab's P6 is a stride-2 3x3 conv (torchvision: max pool), and detlab normalizes
  images in the data pipeline while torchvision's model does it (plus a resize call) itself.

Each run times ``--steps`` train steps (loss, backward, SGD step) and ``--steps`` inference
batches (eval mode, ``no_grad``, post-processing included) of every model, alternating which
goes first; the medians over ``--runs`` runs are reported.

    python tools/bench_faster_rcnn.py --device cpu --threads 1 --batch 2 --runs 5
    python tools/bench_faster_rcnn.py --device cuda --batch 8 --runs 7 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detlab.models import Model  # noqa: E402
from detlab.structures import Batch  # noqa: E402

NUM_CLASSES = 90  # COCO: torchvision's 91 includes the background


def detlab_model(size: int) -> Model:
    return Model(
        backbone=dict(type="TimmBackbone", name="resnet50", out_indices=(1, 2, 3, 4)),
        neck=dict(type="FPN", out_channels=256, levels=(2, 3, 4, 5, 6), norm="batch"),
        head=dict(
            type="FasterRCNNHead", num_classes=NUM_CLASSES,
            rpn=dict(anchor_generator=dict(sizes=(32, 64, 128, 256, 512),
                                           aspect_ratios=(0.5, 1.0, 2.0)), conv_depth=2),
            roi=dict(roi_align=dict(levels=(2, 3, 4, 5)),
                     box_head=dict(type="ConvFCBoxHead", conv_channels=(256, 256, 256, 256),
                                   representation_size=1024, norm="batch")),
        ),
    )


def torchvision_model(size: int) -> torch.nn.Module:
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

    return fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None,
                                      num_classes=NUM_CLASSES + 1, min_size=size, max_size=size)


def make_inputs(batch: int, size: int, device: torch.device, seed: int = 0):
    """Random images and 3-8 random boxes per image, for both models."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g)
    targets = []
    for _ in range(batch):
        n = int(torch.randint(3, 9, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * (size * 0.7)
        wh = torch.rand(n, 2, generator=g) * (size * 0.3) + 8
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).clamp(max=size),
                        "labels": torch.randint(0, NUM_CLASSES, (n,), generator=g)})
    meta = [dict(image_id=i, orig_size=(size, size), scale=(1.0, 1.0), pad=(0, 0))
            for i in range(batch)]
    det_batch = Batch(images, targets, meta).to(device)
    tv_images = list(images.to(device))
    tv_targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device) + 1}
                  for t in targets]
    return det_batch, tv_images, tv_targets


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, steps: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run and phase")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    models = {"detlab": detlab_model(args.size).to(device),
              "torchvision": torchvision_model(args.size).to(device)}
    det_batch, tv_images, tv_targets = make_inputs(args.batch, args.size, device)
    optims = {k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for k, m in models.items()}

    def train_step(name: str) -> None:
        model = models[name].train()
        losses = model.loss(det_batch) if name == "detlab" else model(tv_images, tv_targets)
        optims[name].zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optims[name].step()

    @torch.no_grad()
    def infer(name: str) -> None:
        model = models[name].eval()
        model.predict(det_batch, stage="test") if name == "detlab" else model(tv_images)

    for name in models:  # warm-up (allocator, cudnn autotuning, lazy init)
        train_step(name)
        infer(name)
    results: dict[str, dict[str, list[float]]] = {k: {"train": [], "infer": []} for k in models}
    for run in range(args.runs):
        order = list(models) if run % 2 == 0 else list(models)[::-1]
        for name in order:
            results[name]["train"].append(
                args.batch * args.steps / timed(lambda: train_step(name), args.steps, device))
            results[name]["infer"].append(
                args.batch * args.steps / timed(lambda: infer(name), args.steps, device))
    params = {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in models.items()}
    print(f"device={device} size={args.size} batch={args.batch} steps={args.steps} "
          f"runs={args.runs} threads={torch.get_num_threads()}")
    print(f"{'model':<12} {'params (M)':>10} {'train img/s':>12} {'infer img/s':>12}   "
          "(median; all runs)")
    for name, r in results.items():
        tr, inf = statistics.median(r["train"]), statistics.median(r["infer"])
        runs = {k: [round(v, 3) for v in r[k]] for k in ("train", "infer")}
        print(f"{name:<12} {params[name]:>10.2f} {tr:>12.3f} {inf:>12.3f}   "
              f"train {runs['train']} infer {runs['infer']}")
    median = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}
    ratio = {k: median["detlab"][k] / median["torchvision"][k] for k in ("train", "infer")}
    print(f"detlab / torchvision: train {ratio['train']:.3f}x, inference {ratio['infer']:.3f}x")


if __name__ == "__main__":
    main()
