"""CocoEvaluator: hand-computed APs, pycocotools run directly as an oracle, id/coordinate
invariances, relative-area buckets, DDP gather/dedup and the faster-coco-eval backend."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import sys

import numpy as np
import pytest
import torch

import detlab.evaluation.coco as coco_mod
from detlab.errors import ConfigError, DataError
from detlab.evaluation.coco import CocoEvaluator
from detlab.registry import EVALUATORS
from detlab.structures import Batch, Prediction

P101 = 51 / 101  # COCO's 101-point AP when precision is 1 up to recall 0.5, then 0


# -- helpers --------------------------------------------------------------------------------
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
        dt_labels = np.where(rng.uniform(size=len(dt)) < 0.9, labels[keep], rng.integers(0, num_classes, len(dt)))
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
        for box, lab, ign in zip(im["gt"].double().tolist(), im["labels"].tolist(), im["ignore"].tolist()):
            x1, y1, x2, y2 = box
            anns.append({"id": 7 + len(anns), "image_id": img_id, "category_id": 10 + lab,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": int(ign)})
        for box, s, lab in zip(im["dt"].double().tolist(), im["scores"].double().tolist(), im["dt_labels"].tolist()):
            x1, y1, x2, y2 = box
            dets.append({"image_id": img_id, "category_id": 10 + lab,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    cats = [{"id": 10 + k, "name": f"c{k}"} for k in range(num_classes)]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": cats}))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        gt = COCO(str(path))
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
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


# -- hand-computed cases --------------------------------------------------------------------
GT = [0.0, 0.0, 10.0, 10.0]
FAR = [50.0, 50.0, 60.0, 60.0]

HAND_CASES = {
    # 2 gts, one found with IoU 0.62 (matched at IoU thresholds .50 .55 .60 only): precision 1
    # up to recall 0.5 → 51 of 101 recall points.
    "one_of_two_iou_0.62": (
        [image(gt=[GT, FAR], dt=[[0, 0, 10, 6.2]])],
        {"AP50": P101, "AP75": 0.0, "AP": 0.3 * P101, "AR100": 0.15, "AR1": 0.15},
    ),
    # FP ranked above the only TP: precision 0.5 at recall 1, flat after interpolation.
    "fp_above_tp": (
        [image(gt=[GT], dt=[FAR, GT], scores=[0.9, 0.8])],
        {"AP": 0.5, "AP50": 0.5, "AR100": 1.0},
    ),
    "tp_above_fp": (
        [image(gt=[GT], dt=[FAR, GT], scores=[0.8, 0.9])],
        {"AP": 1.0, "AR100": 1.0},
    ),
    # An ignore gt neither needs a detection nor turns a detection on it into a FP.
    "ignored_gt_missed": (
        [image(gt=[GT, FAR], ignore=[False, True], dt=[GT])], {"AP": 1.0, "AR100": 1.0}
    ),
    "detection_on_ignored_gt": (
        [image(gt=[GT, FAR], ignore=[False, True], dt=[FAR, GT], scores=[0.9, 0.5])],
        {"AP": 1.0},
    ),
    "not_ignored_gt_missed": ([image(gt=[GT, FAR], dt=[GT])], {"AP": P101, "AR100": 0.5}),
    "wrong_class": ([image(gt=[GT], dt=[GT], dt_labels=[1])], {"AP": 0.0, "AP/class_1": 0.0}),
    # Empty image next to a perfect one: valid, changes nothing.
    "image_without_gt": ([image(gt=[GT], dt=[GT]), image()], {"AP": 1.0}),
    "fp_on_image_without_gt": (
        [image(gt=[GT], dt=[GT], scores=[0.5]), image(dt=[GT], scores=[0.9])], {"AP": 0.5}
    ),
}


@pytest.mark.parametrize("name", list(HAND_CASES))
def test_hand_computed_ap(name):
    images, expected = HAND_CASES[name]
    metrics = evaluate(images)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key


def test_perfect_predictions_give_one():
    images = random_images(0, n=5)
    for im in images:
        im["dt"], im["dt_labels"] = im["gt"].clone(), im["labels"].clone()
        im["scores"] = torch.linspace(0.9, 0.5, len(im["gt"]))
    metrics = evaluate(images, class_names=["a", "b", "c"])
    for key in ["AP", "AP50", "AP75", "AR100", "AP/a", "AP/b", "AP/c"]:
        assert metrics[key] == pytest.approx(1.0, abs=1e-12), key


def test_max_dets_drops_lower_scored_detections():
    images = [image(gt=[GT, FAR], dt=[GT, FAR], scores=[0.9, 0.8])]
    metrics = evaluate(images, max_dets=1)
    assert [k for k in metrics if k.startswith("AR") and k[2:].isdigit()] == ["AR1"]
    assert metrics["AP"] == pytest.approx(P101) and metrics["AR1"] == pytest.approx(0.5)


def test_per_class_ap_names_and_values():
    images = [image(gt=[GT, FAR, [20, 20, 30, 30]], labels=[0, 1, 1], dt=[GT, FAR], dt_labels=[0, 1])]
    named = evaluate(images, class_names=["helmet", "head"])
    assert named["AP/helmet"] == pytest.approx(1.0) and named["AP/head"] == pytest.approx(P101)
    assert named["AP"] == pytest.approx((1.0 + P101) / 2)
    default = evaluate(images)
    assert default["AP/class_0"] == named["AP/helmet"] and default["AP/class_1"] == named["AP/head"]


# -- pycocotools as oracle ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2])
def test_matches_pycocotools_run_directly(seed, tmp_path):
    images = random_images(seed, n=8)
    ev = CocoEvaluator(class_names=["a", "b", "c"])
    feed(ev, images)
    metrics = ev.compute()
    ref, ref_text = oracle(images, 3, tmp_path)
    assert [metrics[k] for k in STAT_KEYS] == [max(float(s), 0.0) for s in ref.stats]
    for k, name in enumerate("abc"):
        assert metrics[f"AP/{name}"] == max(mean_valid(ref.eval["precision"][:, :, k, 0, -1]), 0)
    assert ev.summary() == ref_text


def test_relative_buckets_match_pycocotools_with_scaled_absolute_ranges(tmp_path):
    # With one image size, a relative bucket [lo, hi] is the absolute range [lo, hi] * h * w.
    h, w = 400, 500
    images = random_images(3, n=8, size=(h, w))
    metrics = evaluate(images)
    rel = coco_mod.HELMET_RELATIVE_AREAS
    ref, _ = oracle(images, 3, tmp_path, area_rng=[[lo * h * w, hi * h * w] for lo, hi in rel.values()])
    for a, name in enumerate(rel):
        assert metrics[f"AP_rel_{name}"] == max(mean_valid(ref.eval["precision"][:, :, :, a, -1]), 0)
    assert any(metrics[f"AP_rel_{n}"] > 0 for n in rel)


# -- relative-area buckets ------------------------------------------------------------------
@pytest.mark.parametrize(
    "side, size, bucket",
    [
        (10, (1000, 1000), "tiny"),  # 0.01 % of the image
        (40, (1000, 1000), "small"),  # 0.16 %
        (100, (1000, 1000), "medium"),  # 1 %
        (300, (1000, 1000), "large"),  # 9 %
        (10, (100, 100), "medium"),  # 1 %: relative medium although COCO-absolute small
    ],
)
def test_relative_bucket_of_a_box(side, size, bucket):
    box = [5.0, 5.0, 5.0 + side, 5.0 + side]
    metrics = evaluate([image(size=size, gt=[box], dt=[box])])
    for name in coco_mod.HELMET_RELATIVE_AREAS:
        assert metrics[f"AP_rel_{name}"] == pytest.approx(float(name == bucket), abs=1e-12), name


def test_relative_bucket_ignores_unmatched_detections_of_other_sizes():
    # Like COCO's AP_small: a large false positive does not hurt the tiny bucket.
    tiny, big_fp = [0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 500.0, 500.0]
    metrics = evaluate([image(size=(1000, 1000), gt=[tiny], dt=[big_fp, tiny], scores=[0.9, 0.5])])
    assert metrics["AP_rel_tiny"] == pytest.approx(1.0) and metrics["AP"] == pytest.approx(0.5)


def test_relative_areas_configurable_and_disabled():
    images = [image(size=(1000, 1000), gt=[GT], dt=[GT])]
    assert evaluate(images, relative_areas={"any": (0.0, 1.0)})["AP_rel_any"] == pytest.approx(1.0)
    assert not any(k.startswith("AP_rel") for k in evaluate(images, relative_areas=None))


# -- ids, coordinates, empty epochs ---------------------------------------------------------
def test_image_id_schemes_give_identical_numbers():
    images = random_images(4, n=7)
    results = []
    for ids in (list(range(7)), list(range(1, 8)), [f"img_{i:03d}.jpg" for i in range(7)]):
        ev = CocoEvaluator()
        feed(ev, images, ids=ids)
        results.append(ev.compute())
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("scale, pad", [((0.5, 0.25), (16.0, 8.0)), ((2.0, 2.0), None)])
def test_gt_mapped_back_from_input_coordinates(scale, pad):
    images = random_images(5)
    ev = CocoEvaluator()
    feed(ev, images, scale=scale, pad=pad)  # exact (power-of-two) scales: identical numbers
    assert ev.compute() == evaluate(images)


def test_orig_boxes_preferred_and_inexact_scale_maps_back():
    im = image(size=(300, 200), gt=[[10.0, 20.0, 110.0, 70.0]], dt=[[10.0, 20.0, 110.0, 70.0]])
    ev = CocoEvaluator()
    target = {"boxes": im["gt"] * 0.37 + 3.0, "labels": im["labels"]}
    meta = {"image_id": "a", "orig_size": torch.tensor([300, 200]), "scale": 0.37, "pad": (3.0, 3.0)}
    ev.update([Prediction(im["dt"], im["scores"], im["dt_labels"])], Batch(torch.zeros(1, 3, 4, 4), [target], [meta]))
    np.testing.assert_allclose(ev._records[0]["gt_boxes"], im["gt"].numpy(), rtol=1e-6)
    # orig_boxes wins over wrong input-coordinate boxes
    ev2 = CocoEvaluator()
    target2 = {"boxes": torch.zeros(1, 4), "orig_boxes": im["gt"], "labels": im["labels"]}
    ev2.update([Prediction(im["dt"], im["scores"], im["dt_labels"])], Batch(torch.zeros(1, 3, 4, 4), [target2], [meta]))
    assert ev2.compute()["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "images",
    [[], [image()], [image(gt=[GT, FAR])], [image(gt=[GT], labels=[2])]],
    ids=["no_images", "no_gt_no_dt", "gts_no_dt", "gt_of_class_2_no_dt"],
)
def test_empty_predictions_give_zeros(images):
    ev = CocoEvaluator(class_names=["a", "b", "c"])
    feed(ev, images)
    metrics = ev.compute()
    assert set(metrics) >= set(STAT_KEYS) | {"AP/a", "AP/b", "AP/c", "AP_rel_tiny"}
    assert all(v == 0.0 for v in metrics.values())
    assert len(ev.summary().splitlines()) == 12


# -- DDP: gather + dedup --------------------------------------------------------------------
def test_duplicated_image_ids_are_counted_once():
    images = random_images(6)
    ev = CocoEvaluator()
    feed(ev, images)
    feed(ev, images[:3])  # the DistributedSampler pads with repeats
    assert ev.compute() == evaluate(images)


def test_gather_path_merges_ranks(monkeypatch):
    images = random_images(7, n=6)
    ranks = [CocoEvaluator(), CocoEvaluator()]
    ids = list(range(6))
    # DistributedSampler-style split (interleaved), rank 1 padded with a repeat of image 0
    feed(ranks[0], images[0::2], ids=ids[0::2])
    feed(ranks[1], images[1::2] + images[:1], ids=ids[1::2] + ids[:1])
    records = [r._records for r in ranks]
    pickle.loads(pickle.dumps(records))  # all_gather_object pickles: must be plain CPU data
    monkeypatch.setattr(coco_mod, "gather_objects", lambda items: records[0] + records[1])
    assert ranks[0].compute() == ranks[1].compute() == evaluate(images)


# -- backends, registry, errors -------------------------------------------------------------
def test_faster_coco_eval_gives_identical_numbers():
    pytest.importorskip("faster_coco_eval")
    images = random_images(1, n=8)  # has ignore gts and all sizes
    slow, fast = evaluate(images), evaluate(images, backend="faster_coco_eval")
    assert slow.keys() == fast.keys()
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], abs=1e-9), key


def test_missing_faster_coco_eval_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)
    with pytest.raises(ConfigError, match="pip install faster-coco-eval"):
        CocoEvaluator(backend="faster_coco_eval")


def test_registered_and_buildable():
    ev = EVALUATORS.build({"type": "CocoEvaluator", "class_names": ["a"], "primary": "AP50"})
    assert isinstance(ev, CocoEvaluator) and ev.primary == "AP50"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"class_names": "abc"}, "class_names"),
        ({"class_names": ["a", "a"]}, "class_names"),
        ({"max_dets": 0}, "max_dets"),
        ({"primary": "mAP"}, "primary"),
        ({"class_names": ["a"], "primary": "AP/b"}, "primary"),
        ({"relative_areas": {"x": (0.5, 0.1)}}, "relative_areas"),
        ({"backend": "detectron"}, "backend"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CocoEvaluator(**kwargs)


def test_bad_data():
    ev = CocoEvaluator(class_names=["a"])
    batch = Batch(torch.zeros(1, 3, 4, 4), [{"boxes": torch.zeros(2, 4), "labels": torch.zeros(1)}],
                  [{"image_id": 0, "orig_size": (10, 10)}])
    with pytest.raises(DataError, match="labels"):
        ev.update([Prediction()], batch)
    with pytest.raises(DataError, match="predictions"):
        ev.update([], batch)
    feed(ev, [image(gt=[GT], labels=[1])])
    with pytest.raises(DataError, match="out of range"):
        ev.compute()
