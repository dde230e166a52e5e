"""Train-step images/s and peak memory of a detlab family next to its peer, same inputs, same run.

    python tools/bench_train.py FAMILY [--device cpu|cuda] [--precision 32-true|bf16-mixed|16-mixed]
        [--channels-last] [--compile] [--batch B] [--size S] [--steps N] [--runs R]
        [--threads T] [--no-peer] [--timeout SECONDS] [--set KEY=VALUE ...]

FAMILY and its peer (both built from scratch, no weights, forward + loss + backward + AdamW step):

* ``yolo``: ``recipes/helmet_yolo.py``'s model (``--set`` overrides it, e.g.
  ``--set model.backbone.name=cs3darknet_s``) vs Ultralytics YOLOv8n (``yolov8n.yaml``, same
  number of classes). Ultralytics is AGPL and never a detlab dependency: it runs only in a
  separate interpreter, ``--ultra-python`` (default ``/work/ultraenv/bin/python``), and the peer
  is skipped with a message when that interpreter cannot ``import ultralytics``.
* ``frcnn``: ResNet-50-FPN Faster R-CNN (tools/bench_faster_rcnn.py's layouts) vs torchvision's
  ``fasterrcnn_resnet50_fpn_v2``.
* ``unet``: ``UNetEncoder`` (32 ... 512 channels, 5 levels) + ``AttentionUNetHead`` (decoder
  256 ... 32, the fracture recipe's loss) vs MONAI's ``AttentionUnet`` with the same channels
  and ``DiceFocalLoss``, 1-channel images, binary masks.
* ``dbnet``: ``recipes/receipt_dbnet.py``'s model on a batch of its synthetic data (the
  recipe's image size: ``--size`` does not apply, the input shape is printed); no peer is
  installed (MMOCR / PaddleOCR are not), so only absolute numbers are printed.

Both sides run in their own worker process (so peak RSS is per side) and take turns: run ``r``
times ``--steps`` steps of each, alternating which goes first; medians over ``--runs`` runs and
the ratios detlab / peer are printed. Peak memory: the worker's peak RSS on CPU
(``ru_maxrss``, includes the interpreter and libraries), ``torch.cuda.max_memory_allocated``
on CUDA. GFLOPs are of one forward pass of one image (``torch.utils.flop_counter``), in eval
mode; for ``frcnn`` they depend on how many proposals survive the untrained RPN's NMS, so
its GFLOP/s ratio is not a like-for-like number.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"yolo": (192, 8), "frcnn": (320, 2), "unet": (128, 8), "dbnet": (320, 4)}
ULTRA_PYTHON = "/work/ultraenv/bin/python"
NUM_CLASSES = 2


# -- inputs shared by both sides (same seed, same torch: same tensors) ---------------------------
def _boxes(batch: int, size: int, per_image: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B*n, 4)`` xyxy pixel boxes and ``(B*n,)`` labels, ``n`` per image."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(batch * per_image, 2, generator=g) * size * 0.7
    wh = torch.rand(batch * per_image, 2, generator=g) * size * 0.25 + 6
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1)
    return boxes, torch.randint(0, NUM_CLASSES, (batch * per_image,), generator=g)


def _images(batch: int, size: int, chans: int = 3) -> torch.Tensor:
    return torch.rand(batch, chans, size, size, generator=torch.Generator().manual_seed(1))


def _detlab_batch(images: torch.Tensor, targets: list[dict]) -> Any:
    from detlab.structures import Batch

    size = images.shape[-1]
    meta = [dict(image_id=i, orig_size=(size, size), scale=(1.0, 1.0), pad=(0, 0))
            for i in range(len(images))]
    return Batch(images, targets, meta)


# -- one side of one family: (module, loss(batch) -> scalar, batch, compile targets) -----------
def _build(family: str, side: str, args: argparse.Namespace) -> tuple[torch.nn.Module, Callable,
                                                                     Any, list]:
    size, batch = args.size, args.batch
    if family == "yolo" and side == "peer":
        from ultralytics.cfg import get_cfg
        from ultralytics.nn.tasks import DetectionModel
        from ultralytics.utils import DEFAULT_CFG

        model = DetectionModel("yolov8n.yaml", nc=NUM_CLASSES, verbose=False)
        model.args = get_cfg(DEFAULT_CFG)
        boxes, labels = _boxes(batch, size)
        xywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
        data = {"img": _images(batch, size), "cls": labels[:, None].float(),
                "bboxes": xywh / size,
                "batch_idx": torch.arange(batch).repeat_interleave(len(boxes) // batch).float()}
        return model, lambda b: model.loss(b)[0].sum(), data, [(model, "predict")]
    if family == "unet" and side == "peer":
        from monai.losses import DiceFocalLoss
        from monai.networks.nets import AttentionUnet

        model = AttentionUnet(spatial_dims=2, in_channels=1, out_channels=1,
                              channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2))
        loss = DiceFocalLoss(sigmoid=True)
        data = (_images(batch, size, 1), _unet_masks(batch, size)[:, None])
        return model, lambda b: loss(model(b[0]), b[1]), data, [(model, "forward")]
    if family == "frcnn":
        sys.path.insert(0, str(ROOT / "tools"))
        import bench_faster_rcnn as bf

        det_batch, tv_images, tv_targets = bf.make_inputs(batch, size, torch.device("cpu"))
        if side == "peer":
            model = bf.torchvision_model(size)
            return (model, lambda b: sum(model(b[0], b[1]).values()), (tv_images, tv_targets),
                    [(model.backbone, "forward"), (model.roi_heads.box_head, "forward")])
        model = bf.detlab_model(size)
        return model, lambda b: sum(model.loss(b).values()), det_batch, _detlab_parts(model)
    # detlab yolo / unet / dbnet
    from detlab.models import Model
    from detlab.recipe import load
    from detlab.registry import MODELS

    if family == "unet":
        recipe = load(ROOT / "recipes" / "fracture_unet.py")
        head = dict(recipe["model"]["head"], decoder_channels=(256, 128, 64, 32))
        model = Model(backbone=dict(type="UNetEncoder", depth=5, init_features=32, in_chans=1),
                      head=head)
        masks = _unet_masks(batch, size)
        data = _detlab_batch(_images(batch, size, 1), [{"mask": m} for m in masks])
    elif family == "yolo":
        recipe = load(ROOT / "recipes" / "helmet_yolo.py", list(args.set))
        model = MODELS.build(recipe["model"], key="model")
        boxes, labels = _boxes(batch, size)
        n = len(boxes) // batch
        data = _detlab_batch(_images(batch, size), [
            {"boxes": boxes[i * n:(i + 1) * n], "labels": labels[i * n:(i + 1) * n]}
            for i in range(batch)])
    else:  # dbnet: the recipe's own synthetic receipts (DB targets come from the data pipeline)
        from detlab.data.datamodule import DataModule

        recipe = load(ROOT / "recipes" / "receipt_dbnet.py", [
            "data.num_workers=0", f"data.batch_size={batch}", *args.set])
        model = MODELS.build(recipe["model"], key="model")
        dm = DataModule(recipe.section("data"), size_divisor=model.size_divisor)
        data = next(iter(dm.train_dataloader()))
    return model, lambda b: sum(model.loss(b).values()), data, _detlab_parts(model)


def _unet_masks(batch: int, size: int) -> torch.Tensor:
    """``(B, H, W)`` binary masks: one random square lesion per image."""
    g = torch.Generator().manual_seed(2)
    masks = torch.zeros(batch, size, size)
    for i, (x, y) in enumerate((torch.rand(batch, 2, generator=g) * size * 0.8).long()):
        masks[i, y:y + size // 10, x:x + size // 10] = 1
    return masks


def _detlab_parts(model: torch.nn.Module) -> list:
    """The dense parts torch.compile gets: backbone, neck, head forward (losses stay eager).
    Faster R-CNN trains through ``head.loss``, never ``head.forward`` (the test-mode path):
    there the RPN's conv head and the RoI box head are compiled, as on the peer's side."""
    head = model.head
    if hasattr(head, "rpn") and hasattr(head, "roi"):
        parts = [model.backbone, model.neck, head.rpn.core.head, head.roi.box_head]
    else:
        parts = [model.backbone, model.neck, head]
    return [(p, "forward") for p in parts if p is not None]


# -- worker: one side, driven over stdin/stdout ---------------------------------------------------
def _to(obj: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device)
        return obj.contiguous(memory_format=torch.channels_last) if (
            channels_last and obj.ndim == 4) else obj
    if isinstance(obj, dict):
        return {k: _to(v, device, channels_last) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device, channels_last) for v in obj)
    if hasattr(obj, "images") and hasattr(obj, "to"):  # detlab Batch
        out = obj.to(device)
        if channels_last:
            out.images = out.images.contiguous(memory_format=torch.channels_last)
        return out
    return obj


def _flops(model: torch.nn.Module, data: Any, family: str, side: str) -> float:
    """GFLOPs of one forward pass of one image (0.0 where the counter cannot run it)."""
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(data, dict):
        x = data["img"][:1]
    elif isinstance(data, tuple):
        x = data[0][:1] if isinstance(data[0], torch.Tensor) else [data[0][0]]
    else:
        x = data.images[:1]
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops() / 1e9
    except Exception:  # e.g. a model whose eval forward needs more than images
        return 0.0
    finally:
        model.train(was)


def worker(family: str, side: str, args: argparse.Namespace) -> None:
    """Build one side, answer ``run`` with one timing as a JSON line, ``quit`` to stop."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, loss_fn, data, parts = _build(family, side, args)
    gflops = _flops(model, data, family, side)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    model = model.to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        for module, attr in parts:
            setattr(module, attr, torch.compile(getattr(module, attr)))
    data = _to(data, device, args.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "16-mixed")

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(data)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up: allocator, cudnn autotuning, compilation
        step()
    sync()
    images = data["img"] if isinstance(data, dict) else data[0] if isinstance(data, tuple) \
        else data.images
    shape = list(images.shape) if isinstance(images, torch.Tensor) else [len(images),
                                                                         *images[0].shape]
    print(json.dumps(dict(ready=True, params=params, gflops=gflops, input=shape)), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        elapsed = time.perf_counter() - start
        peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        print(json.dumps(dict(img_s=args.batch * args.steps / elapsed, peak_mib=peak / 2**20)),
              flush=True)


# -- driver -------------------------------------------------------------------------------------
class Side:
    """A worker process for one side; ``ask()`` sends a command and reads its JSON answer."""

    def __init__(self, name: str, python: str, argv: list[str], timeout: float) -> None:
        self.name, self.timeout = name, timeout
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT), os.environ.get("PYTHONPATH", "")]) if name == "detlab"
            else os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([python, __file__, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.info = self._read()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read(self) -> dict:
        while True:  # libraries may print; our answers are JSON objects
            try:
                line = self.lines.get(timeout=self.timeout)
            except queue.Empty:
                self.proc.kill()
                raise RuntimeError(f"{self.name} worker gave no answer in {self.timeout:.0f} s "
                                   "(--timeout)") from None
            if line is None:
                raise RuntimeError(f"{self.name} worker exited with {self.proc.wait()}")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _peer_python(family: str, args: argparse.Namespace) -> tuple[str | None, str]:
    """Interpreter for the peer, or None and why it is skipped."""
    if args.no_peer:
        return None, "--no-peer"
    if family == "dbnet":
        return None, "no DBNet peer is installed (MMOCR / PaddleOCR): absolute numbers only"
    if family != "yolo":
        return sys.executable, ""
    python = args.ultra_python
    if not os.path.exists(python):
        return None, f"{python} does not exist (Ultralytics lives only in a separate venv)"
    check = subprocess.run([python, "-c", "import ultralytics"], capture_output=True, timeout=120)
    if check.returncode:
        return None, f"{python} cannot import ultralytics: {check.stderr.decode()[-200:]}"
    return python, ""


def main() -> None:
    """Parse the command line; drive both workers (or be one, with the hidden --worker)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=list(FAMILIES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32-true",
                        choices=["32-true", "bf16-mixed", "16-mixed"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch", type=int, default=None, help="default: per family")
    parser.add_argument("--size", type=int, default=None, help="square input px; per family")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run and side")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds a worker may take to build or to answer one run")
    parser.add_argument("--ultra-python", default=ULTRA_PYTHON)
    parser.add_argument("--set", action="append", default=[], help="detlab recipe override")
    parser.add_argument("--worker", choices=["detlab", "peer"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    default_size, default_batch = FAMILIES[args.family]
    args.size, args.batch = args.size or default_size, args.batch or default_batch
    if args.worker:
        return worker(args.family, args.worker, args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the workers
    argv = list(sys.argv[1:])
    peer_python, why = _peer_python(args.family, args)
    timeout = args.timeout
    sides: dict[str, Side] = {}
    try:  # built one after the other: the first does not time the second's start-up
        sides["detlab"] = Side("detlab", sys.executable, [*argv, "--worker", "detlab"], timeout)
        if peer_python:
            sides["peer"] = Side("peer", peer_python, [*argv, "--worker", "peer"], timeout)
        results: dict[str, list[dict]] = {k: [] for k in sides}
        for run in range(args.runs):
            for name in (list(sides) if run % 2 == 0 else list(sides)[::-1]):
                results[name].append(sides[name].ask())
    finally:
        for side in sides.values():
            side.close()
    print(f"{args.family}: device={args.device} precision={args.precision} "
          f"channels_last={args.channels_last} compile={args.compile} size={args.size} "
          f"batch={args.batch} steps={args.steps} runs={args.runs} threads={args.threads}")
    print(f"{'side':<8} {'params M':>8} {'GFLOPs':>7} {'img/s':>8} {'peak MiB':>9}  all runs img/s")
    med = {}
    for name, runs in results.items():
        ips = [r["img_s"] for r in runs]
        med[name] = (statistics.median(ips), max(r["peak_mib"] for r in runs))
        info = sides[name].info
        print(f"{name:<8} {info['params']:>8.2f} {info['gflops']:>7.2f} {med[name][0]:>8.2f} "
              f"{med[name][1]:>9.0f}  {[round(v, 2) for v in ips]}  input {info['input']}")
    if "peer" not in med:
        print(f"peer skipped: {why}")
        return
    (d_ips, d_mem), (p_ips, p_mem) = med["detlab"], med["peer"]
    line = f"detlab / peer: images/s {d_ips / p_ips:.3f}x, peak memory {d_mem / p_mem:.3f}x"
    d_fl, p_fl = sides["detlab"].info["gflops"], sides["peer"].info["gflops"]
    if d_fl and p_fl:
        line += f", GFLOP/s {d_ips * d_fl / (p_ips * p_fl):.3f}x"
    print(line)


if __name__ == "__main__":
    main()
