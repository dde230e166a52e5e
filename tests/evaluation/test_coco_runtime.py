"""CocoEvaluator plumbing: DDP gather + dedup, faster-coco-eval backend, registry, errors."""

from __future__ import annotations

import pickle
import sys

import pytest
import torch
from coco_cases import FAR, GT, evaluate, feed, image, random_images

import detlab.evaluation.coco as coco_mod
from detlab.errors import ConfigError, DataError
from detlab.evaluation.coco import CocoEvaluator
from detlab.registry import EVALUATORS
from detlab.structures import Batch, Prediction


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
    with pytest.raises(DataError, match=r"image 0: ground-truth box 0 has label 1, outside"):
        feed(ev, [image(gt=[GT], labels=[1])])


def test_rank_order_does_not_change_score_ties(monkeypatch):
    # COCO breaks score ties across images by image order; records are put in image-id order
    # so 1 and 2 processes agree. FP (image 1) and TP (image 2) tie at score 0.9.
    images = [image(gt=[FAR], dt=[FAR], scores=[0.95]), image(dt=[GT]), image(gt=[GT], dt=[GT])]
    single = evaluate(images)
    ranks = [CocoEvaluator(), CocoEvaluator()]
    feed(ranks[0], [images[0], images[2]], ids=[0, 2])
    feed(ranks[1], [images[1]], ids=[1])
    merged = ranks[0]._records + ranks[1]._records
    monkeypatch.setattr(coco_mod, "gather_objects", lambda items: merged)
    assert ranks[0].compute() == single
    # Ranked TP(0.95), FP(0.9, image 1), TP(0.9, image 2) over 2 gts: interpolated precision
    # 1 up to recall 0.5 (51 points), 2/3 above (50 points). Rank order would give TP, TP → 1.
    assert single["AP50"] == pytest.approx((51 + 50 * 2 / 3) / 101)
