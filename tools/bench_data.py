"""Training data pipeline throughput: detlab's YOLO-txt loader against Ultralytics'.

Usage::

    python tools/bench_data.py [--root /tmp/bench_data] [--sizes 192 640] [--runs 5]
        [--ultra-python /work/ultraenv/bin/python] [--cache none ram] [--uint8 off on]
        [--profile]

What it does:

1. Writes ``--root`` once (skipped when it exists): 400 PNGs of 640x480 made from the
   photographs scikit-image ships (random crops of astronaut, coffee, chelsea, rocket …) with
   1-8 pasted LFW face crops each (12-96 px), and YOLO ``.txt`` labels of the pasted faces
   (2 classes), plus a ``data.yaml``. The files are read from scikit-image's data folder
   (``--photos``), without importing scikit-image.
2. detlab: ``YoloDetection`` with the helmet recipe's augmentation (HorizontalFlip p=0.5,
   RandomBrightnessContrast 0.2/0.2 p=0.5) and its ``TinyObjectOversampler`` (weight 2,
   area 0.001), through the real :class:`~detlab.data.datamodule.DataModule` train loader:
   ``SeededDataset``, ``NoSingletonBatchSampler``, ``Collate``, 1 worker, batch 8. With
   ``--uint8 on`` the loader is the one Lightning trains from with ``data.uint8_batches``
   (uint8 batches, :mod:`detlab.data.uint8_batches`) and each batch is normalized in the timed
   loop, on the CPU of the main process, as the training step's device would
   (``normalize_batch_images``): that cost is in detlab's figure. Ultralytics' figure does not
   include its ``img.float() / 255``, which its trainer runs in the training step.
3. Ultralytics (only when ``--ultra-python`` names an interpreter that has it; it is AGPL and
   never a detlab dependency): this file re-runs itself under that interpreter with
   ``--ultra-worker`` and times ``ultralytics.data.build.build_yolo_dataset`` +
   ``build_dataloader`` on the same folder, 1 worker, batch 8, with its default augmentation
   (mosaic, random perspective, HSV, flip) and with ``mosaic=0``.

A run is one epoch (400 images) on a freshly built loader, so worker start-up is included for
both. Runs alternate between the libraries (the CPU is shared) and the medians are printed with
the ratio detlab / Ultralytics, in images/s and in images per CPU-second (main process plus
workers, from /proc: steadier than wall time on a shared machine). ``--profile`` prints a
cProfile (CPU time) of one detlab epoch in the main process (``num_workers=0``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

N_IMAGES = 400
FRAME = (480, 640)  # h, w
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "retina.jpg", "brick.png", "grass.png", "gravel.png",
          "color.png", "camera.png", "ihc.png")
SKIMAGE_DATA = "/work/dataenv/lib/python3.11/site-packages/skimage/data"
HELMET_TRANSFORMS = [
    dict(type="HorizontalFlip", p=0.5),
    dict(type="RandomBrightnessContrast", brightness_limit=0.2, contrast_limit=0.2, p=0.5),
]
CLASS_NAMES = ["face", "face_dark"]


# -- 1. the data ------------------------------------------------------------------------------
def make_data(root: Path, n: int = N_IMAGES, seed: int = 0,
              photo_dir: str | Path = SKIMAGE_DATA) -> None:
    """Write ``n`` 640x480 PNGs with pasted faces and their YOLO labels under ``root``, from
    the photographs and LFW faces in scikit-image's data folder ``photo_dir``."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    photos = []
    for name in PHOTOS:
        img = cv2.imread(str(Path(photo_dir) / name), cv2.IMREAD_COLOR)
        if img is not None and min(img.shape[:2]) >= 300:
            photos.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if not photos:
        raise SystemExit(f"no photographs found in {photo_dir} (scikit-image's data folder)")
    faces = np.load(Path(photo_dir) / "lfw_subset.npy")  # (200, 25, 25) gray faces in [0, 1]
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    fh, fw = FRAME
    for i in range(n):
        photo = photos[int(rng.integers(len(photos)))]
        ph, pw = photo.shape[:2]
        zoom = rng.uniform(max(fh / ph, fw / pw), max(fh / ph, fw / pw) * 1.6)
        big = cv2.resize(photo, (int(np.ceil(pw * zoom)), int(np.ceil(ph * zoom))),
                         interpolation=cv2.INTER_LINEAR)
        y0 = int(rng.integers(0, big.shape[0] - fh + 1))
        x0 = int(rng.integers(0, big.shape[1] - fw + 1))
        frame = big[y0:y0 + fh, x0:x0 + fw].copy()
        lines = []
        for _ in range(int(rng.integers(1, 9))):
            side = int(np.exp(rng.uniform(np.log(12), np.log(96))))
            face = faces[int(rng.integers(len(faces)))]
            patch = cv2.resize((face * 255).astype(np.uint8), (side, side),
                               interpolation=cv2.INTER_LINEAR)
            cls = int(rng.integers(2))
            tint = np.array([1.0, 0.85, 0.7]) if cls == 0 else np.array([0.5, 0.45, 0.4])
            patch = (patch[..., None] * tint).clip(0, 255).astype(np.uint8)
            x, y = int(rng.integers(0, fw - side)), int(rng.integers(0, fh - side))
            frame[y:y + side, x:x + side] = patch
            lines.append(f"{cls} {(x + side / 2) / fw:.6f} {(y + side / 2) / fh:.6f} "
                         f"{side / fw:.6f} {side / fh:.6f}")
        cv2.imwrite(str(root / "images" / "train" / f"{i:04d}.png"),
                    cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        (root / "labels" / "train" / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: images/train\nval: images/train\nnames:\n"
        + "".join(f"  {k}: {v}\n" for k, v in enumerate(CLASS_NAMES)))


def tree_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (default: this one) and all its live
    descendants, from /proc (Linux); loader workers are descendants. 0.0 elsewhere."""
    pid = os.getpid() if pid is None else pid
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                total += sum(tree_cpu_seconds(int(c)) for c in f.read().split())
    except (OSError, ValueError, IndexError):
        pass
    return total


# -- 2. detlab --------------------------------------------------------------------------------
def detlab_cfg(root: Path, img_size: int, workers: int, cache: str | None) -> dict:
    """The ``data`` section of the benchmark: YOLO txt + helmet augmentation + oversampler."""
    train = dict(type="YoloDetection", root=str(root), split="train", class_names=CLASS_NAMES,
                 img_size=img_size, transforms=HELMET_TRANSFORMS)
    cfg = dict(train=train, batch_size=8, num_workers=workers,
               sampler=dict(type="TinyObjectOversampler", weight=2.0, area_threshold=0.001))
    if cache is not None:
        cfg["cache"] = cache
    return cfg


def detlab_epoch(module, uint8: bool = False) -> tuple[float, float]:
    """``(images/s, CPU ms per image)`` of one epoch on a freshly built train loader (worker
    start-up included; CPU of this process and its workers); ``uint8``: uint8 batches,
    normalized here (module docstring)."""
    from detlab.data.uint8_batches import normalize_batch_images

    c0, t0 = tree_cpu_seconds(), time.perf_counter()
    loader = module.train_dataloader(uint8=uint8)
    n = 0
    for batch in loader:
        batch = normalize_batch_images(batch)
        n += batch.images.shape[0]
    dt, cpu = time.perf_counter() - t0, tree_cpu_seconds() - c0  # workers still alive
    del loader
    return n / dt, 1e3 * cpu / n


def detlab_module(root: Path, img_size: int, workers: int, cache: str | None):
    """A checked :class:`~detlab.data.datamodule.DataModule` over the benchmark folder."""
    from detlab.data.datamodule import DataModule

    module = DataModule(detlab_cfg(root, img_size, workers, cache), size_divisor=32, seed=0)
    module.check()
    if cache is not None:  # fill now, outside the timed epochs (Ultralytics fills at build)
        module.train_dataloader()
    return module


def profile_detlab(root: Path, img_size: int, uint8: bool = False) -> None:
    """cProfile of one epoch in the main process (no workers), top 25 by own time."""
    import cProfile
    import pstats

    module = detlab_module(root, img_size, 0, None)
    prof = cProfile.Profile(time.process_time)  # CPU time: the machine may be shared
    prof.enable()
    detlab_epoch(module, uint8)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


# -- 3. Ultralytics (run under --ultra-python) --------------------------------------------------
def ultra_worker(root: str, img_size: int, mode: str, cache: str | None) -> None:
    """One Ultralytics epoch; prints ``{"ips": images/s}`` as JSON (runs in the other venv)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    overrides = dict(imgsz=img_size, batch=8, workers=1, cache=cache or False,
                     plots=False, verbose=False)
    if mode == "no_mosaic":
        overrides["mosaic"] = 0.0
    cfg = get_cfg(overrides=overrides)
    data = check_det_dataset(str(Path(root) / "data.yaml"))
    dataset = build_yolo_dataset(cfg, data["train"], 8, data, mode="train", stride=32)
    c0, t0 = tree_cpu_seconds(), time.perf_counter()
    loader = build_dataloader(dataset, 8, 1, shuffle=True)
    n = 0
    for batch in loader:
        n += int(batch["img"].shape[0])
    dt, cpu = time.perf_counter() - t0, tree_cpu_seconds() - c0
    print(json.dumps({"ips": n / dt, "cpu_ms": 1e3 * cpu / n}))


def ultra_run(python: str, root: Path, img_size: int, mode: str, cache: str | None
              ) -> tuple[float, float]:
    """``(images/s, CPU ms per image)`` of one Ultralytics epoch in a subprocess with
    ``python``."""
    cmd = [python, __file__, "--ultra-worker", "--root", str(root), "--sizes", str(img_size),
           "--ultra-mode", mode, "--cache", cache or "none"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["YOLO_OFFLINE"] = "1"
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            res = json.loads(line)
            return float(res["ips"]), float(res["cpu_ms"])
    raise RuntimeError(f"Ultralytics run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/bench_data"))
    p.add_argument("--photos", default=SKIMAGE_DATA, help="scikit-image's data folder")
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 640])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cache", nargs="+", default=["none"],
                   help="detlab data.cache settings to time: none ram disk")
    p.add_argument("--uint8", nargs="+", choices=("off", "on"), default=["off", "on"],
                   help="detlab uint8 batches (data.uint8_batches) to time")
    p.add_argument("--ultra-python", default="/work/ultraenv/bin/python")
    p.add_argument("--ultra-modes", nargs="+", default=["default", "no_mosaic"])
    p.add_argument("--profile", action="store_true")
    p.add_argument("--ultra-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ultra-mode", default="default", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    caches = [None if c == "none" else c for c in args.cache]
    if args.ultra_worker:
        ultra_worker(str(args.root), args.sizes[0], args.ultra_mode, caches[0])
        return 0
    if not (args.root / "data.yaml").is_file():
        print(f"writing {N_IMAGES} images to {args.root} …", flush=True)
        make_data(args.root, photo_dir=args.photos)
    import torch

    torch.set_num_threads(1)
    if args.profile:
        for size in args.sizes:
            for u in args.uint8:
                profile_detlab(args.root, size, u == "on")
        return 0
    ultra = args.ultra_python if args.ultra_python and Path(args.ultra_python).exists() else None
    if ultra is None:
        print(f"no Ultralytics interpreter at {args.ultra_python!r}: detlab numbers only")
    for size in args.sizes:
        modules = {c: detlab_module(args.root, size, args.workers, c) for c in caches}
        times: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for c, module in modules.items():
                for u in args.uint8:
                    times.setdefault(f"detlab cache={c} uint8={u}", []).append(
                        detlab_epoch(module, u == "on"))
            for mode in args.ultra_modes if ultra else ():
                for c in caches:
                    times.setdefault(f"ultralytics {mode} cache={c}", []).append(
                        ultra_run(ultra, args.root, size, mode, c))
        med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
               for k, v in times.items()}
        print(f"\n{size} px, {N_IMAGES} images, batch 8, {args.workers} worker(s), "
              f"{args.runs} runs: median images/s (runs) | median CPU ms per image, main "
              "process + workers")
        for k, (ips, cpu) in med.items():
            runs = ", ".join(f"{r[0]:.0f}" for r in times[k])
            print(f"  {k:<36} {ips:7.1f}  [{runs}]  | {cpu:6.2f} ms")
        for c in caches:
            for mode in args.ultra_modes if ultra else ():
                ips, cpu = med[f"ultralytics {mode} cache={c}"]
                for u in args.uint8:
                    d_ips, d_cpu = med[f"detlab cache={c} uint8={u}"]
                    print(f"  detlab uint8={u} / ultralytics {mode} (cache={c}): images/s "
                          f"{d_ips / ips:.2f}x, images per CPU-second {cpu / d_cpu:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
