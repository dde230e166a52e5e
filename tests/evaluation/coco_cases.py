"""Shared test data for the CocoEvaluator tests: image builder, batch feeder, random scenes and
pycocotools run directly on a hand-written COCO JSON file (the oracle)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import torch

from detlab.evaluation.coco import CocoEvaluator
from detlab.structures import Batch, Prediction

P101 = 51 / 101  # COCO's 101-point AP when precision is 1 up to recall 0.5, then 0
GT = [0.0, 0.0, 10.0, 10.0]
FAR = [50.0, 50.0, 60.0, 60.0]


def image(
    size=(100, 100), gt=(), labels=None, ignore=None, dt=(), scores=None, dt_labels=None
) -> dict:
    """One image in original coordinates (plain lists in, float32 tensors as heads give)."""
    gt = torch.tensor(gt, dtype=torch.float32).reshape(-1, 4)
    dt = torch.tensor(dt, dtype=torch.float32).reshape(-1, 4)
    return {
        "size": size,
        "gt": gt,
        "labels": torch.tensor(labels if labels is not None else [0] * len(gt), dtype=torch.int64),
        "ignore": torch.tensor(ignore if ignore is not None else [False] * len(gt)),
        "dt": dt,
        "scores": torch.tensor(
            scores if scores is not None else [0.9] * len(dt), dtype=torch.float32
        ),
        "dt_labels": torch.tensor(
            dt_labels if dt_labels is not None else [0] * len(dt), dtype=torch.int64
        ),
    }


def feed(ev: CocoEvaluator, images: list[dict], ids=None, scale=(1.0, 1.0), pad=None) -> None:
    """Feed ``images`` one batch of two at a time; gt goes in input coords (orig*scale+pad)."""
    ids = list(range(len(images))) if ids is None else ids
    sy, sx = scale
    top, left = pad or (0.0, 0.0)
    for start in range(0, len(images), 2):
        chunk = list(zip(ids[start : start + 2], images[start : start + 2]))
        targets, meta, preds = [], [], []
        for image_id, im in chunk:
            gt_in = im["gt"] * torch.tensor([sx, sy, sx, sy]) + torch.tensor([left, top, left, top])
            targets.append({"boxes": gt_in, "labels": im["labels"], "ignore": im["ignore"]})
            m = {"image_id": image_id, "orig_size": im["size"], "scale": (sy, sx)}
            if pad is not None:
                m["pad"] = pad
            meta.append(m)
            preds.append(Prediction(boxes=im["dt"], scores=im["scores"], labels=im["dt_labels"]))
        batch = Batch(images=torch.zeros(len(chunk), 3, 4, 4), targets=targets, meta=meta)
        ev.update(preds, batch)


def evaluate(images: list[dict], **kwargs) -> dict[str, float]:
    ev = CocoEvaluator(**kwargs)
    feed(ev, images)
    return ev.compute()


def random_images(seed: int, n: int = 6, num_classes: int = 3, size=None) -> list[dict]:
    """Boxes of all COCO sizes, jittered true positives, false positives, some ignore gts."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = size or (int(rng.integers(200, 640)), int(rng.integers(200, 640)))
        g = int(rng.integers(0, 7))
        side = rng.choice([12.0, 40.0, 80.0, 150.0], size=(g, 2)) * rng.uniform(0.7, 1.3, (g, 2))
        x1 = rng.uniform(0, w - side[:, 0]) if g else np.zeros(0)
        y1 = rng.uniform(0, h - side[:, 1]) if g else np.zeros(0)
        gt = np.stack([x1, y1, x1 + side[:, 0], y1 + side[:, 1]], 1) if g else np.zeros((0, 4))
        labels = rng.integers(0, num_classes, g)
        ignore = rng.uniform(size=g) < 0.15
        keep = rng.uniform(size=g) < 0.8
        dt = gt[keep] + rng.normal(0, 4, (int(keep.sum()), 4))
        relabel = rng.integers(0, num_classes, len(dt))
        dt_labels = np.where(rng.uniform(size=len(dt)) < 0.9, labels[keep], relabel)
        f = int(rng.integers(0, 4))
        fx, fy = rng.uniform(0, w - 60, f), rng.uniform(0, h - 60, f)
        fs = rng.uniform(8, 60, (f, 2))
        fp = np.stack([fx, fy, fx + fs[:, 0], fy + fs[:, 1]], 1) if f else np.zeros((0, 4))
        dt = np.concatenate([dt, fp])
        dt_labels = np.concatenate([dt_labels, rng.integers(0, num_classes, f)])
        out.append(image(
            size=(h, w), gt=gt.tolist(), labels=labels.tolist(), ignore=ignore.tolist(),
            dt=dt.tolist(), scores=rng.uniform(0.05, 1.0, len(dt)).tolist(),
            dt_labels=dt_labels.tolist(),
        ))
    return out


def oracle(images: list[dict], num_classes: int, tmp_path, area_rng=None):
    """pycocotools straight from a hand-written COCO JSON file; returns the COCOeval object."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    imgs, anns, dets = [], [], []
    for i, im in enumerate(images):
        img_id = 1000 + i  # deliberately unlike the evaluator's internal ids
        imgs.append({"id": img_id, "height": im["size"][0], "width": im["size"][1]})
        gt_rows = zip(im["gt"].double().tolist(), im["labels"].tolist(), im["ignore"].tolist())
        for box, lab, ign in gt_rows:
            x1, y1, x2, y2 = box
            anns.append({"id": 7 + len(anns), "image_id": img_id, "category_id": 10 + lab,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": int(ign)})
        dt_rows = zip(im["dt"].double().tolist(), im["scores"].double().tolist(),
                      im["dt_labels"].tolist())
        for box, s, lab in dt_rows:
            x1, y1, x2, y2 = box
            dets.append({"image_id": img_id, "category_id": 10 + lab,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    cats = [{"id": 10 + k, "name": f"c{k}"} for k in range(num_classes)]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": cats}))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        gt = COCO(str(path))
        if dets:
            res = gt.loadRes(dets)
        else:  # loadRes refuses an empty list; COCOeval itself handles no detections
            res = COCO()
            res.dataset = {"images": imgs, "annotations": [], "categories": cats}
            res.createIndex()
        ev = COCOeval(gt, res, "bbox")
        if area_rng is not None:
            ev.params.areaRng = area_rng
        ev.evaluate()
        ev.accumulate()
    text = io.StringIO()
    if area_rng is None:
        with contextlib.redirect_stdout(text):
            ev.summarize()
    return ev, text.getvalue().strip("\n")


def mean_valid(a: np.ndarray) -> float:
    return float(a[a > -1].mean()) if (a > -1).any() else -1.0


STAT_KEYS = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
             "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large"]
