"""One test over every registered head: shapes, finite ``loss_*`` terms, gradients reaching
every parameter, predictions inside the original image; for detection heads (``empty_batch``
given), an image without objects gives zero box loss and a positive classification loss.

A new head must add an entry to ``CASES`` (tiny model config, batch builder, output check);
the test fails for a registered head that has none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detlab.models import Model
from detlab.registry import HEADS, discover
from detlab.structures import Batch, Prediction


class _BCE(nn.Module):
    def forward(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits, target)


@dataclass
class Case:
    model: dict[str, Any]  # Model(**model)
    batch: Callable[[], Batch]
    check_outputs: Callable[[Any, Batch], None]  # raw head outputs vs. batch
    empty_batch: Callable[[], Batch] | None = None  # detection: images without objects


def _seg_batch() -> Batch:
    """Two 1-channel images of 48x80 (not a multiple of 32), orig sizes at scale 2 and 1."""
    torch.manual_seed(0)
    images = torch.randn(2, 1, 48, 80)
    masks = [(torch.rand(2, 48, 80) > 0.7).float() for _ in range(2)]
    meta = [
        dict(image_id=0, path="a", orig_size=(24, 40), input_size=(48, 80), scale=(2.0, 2.0)),
        dict(image_id=1, path="b", orig_size=(48, 80), input_size=(48, 80), scale=(1.0, 1.0)),
    ]
    return Batch(images=images, targets=[{"mask": m} for m in masks], meta=meta)


def _check_attention_unet(outputs: Any, batch: Batch) -> None:
    assert outputs["logits"].shape == (2, 2, 64, 96)  # padded to a multiple of 32 by Model
    shapes = [tuple(a.shape) for a in outputs["attention"]]
    assert shapes == [(2, 1, 64 // s, 96 // s) for s in (16, 8, 4, 2)]


def _det_batch(empty: bool = False) -> Batch:
    """Two 3-channel 64x96 images, letterboxed from 32x48 (scale 2) and 64x96 originals."""
    torch.manual_seed(0)
    boxes = [torch.tensor([[8.0, 10.0, 30.0, 40.0], [50.0, 4.0, 58.0, 12.0]]),
             torch.tensor([[20.0, 20.0, 90.0, 60.0]])]
    targets = [{"boxes": b[:0] if empty else b, "labels": torch.arange(0 if empty else len(b))}
               for b in boxes]
    meta = [
        dict(image_id=0, path="a", orig_size=(32, 48), input_size=(64, 96), scale=(2.0, 2.0)),
        dict(image_id=1, path="b", orig_size=(64, 96), input_size=(64, 96), scale=(1.0, 1.0)),
    ]
    return Batch(images=torch.randn(2, 3, 64, 96), targets=targets, meta=meta)


def _check_yolo(outputs: Any, batch: Batch) -> None:  # P2..P5 of a 64x96 input
    assert outputs["num_anchors_per_level"] == [16 * 24, 8 * 12, 4 * 6, 2 * 3]
    assert outputs["cls_logits"].shape == (2, 510, 2)
    assert outputs["box_dist"].shape == (2, 510, 64)


_TINY_TIMM = dict(type="TimmBackbone", name="resnet10t", out_indices=(1, 2, 3, 4))


def _frcnn_batch() -> Batch:
    """Two 3-channel 48x80 images: three boxes at scale 2 with a top pad, and none (empty)."""
    torch.manual_seed(0)
    targets = [dict(boxes=torch.tensor([[4.0, 8, 20, 30], [30, 10, 44, 40], [50, 6, 78, 20]]),
                    labels=torch.tensor([0, 2, 1])),
               dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))]
    meta = [dict(image_id=0, path="a", orig_size=(20, 40), input_size=(44, 80), scale=(2.0, 2.0),
                 pad=(4, 0)),
            dict(image_id=1, path="b", orig_size=(48, 80), input_size=(48, 80), scale=(1.0, 1.0))]
    return Batch(images=torch.randn(2, 3, 48, 80), targets=targets, meta=meta)


def _check_faster_rcnn(outputs: Any, batch: Batch) -> None:
    assert outputs["image_size"] == (48, 80) and len(outputs["proposals"]) == 2
    rois = sum(len(p) for p in outputs["proposals"])
    assert outputs["cls_logits"].shape == (rois, 4) and outputs["box_deltas"].shape == (rois, 16)


def _text_batch() -> Batch:
    """Two 3-channel images of 48x80 with DB targets; image 0 has a "###" word, image 1 none
    (an image without text), orig sizes at scale 2 and 1."""
    import numpy as np

    from detlab.data.db_targets import make_db_targets

    torch.manual_seed(0)
    words = [np.array([[8, 8], [44, 8], [44, 24], [8, 24]], np.float32),
             np.array([[50, 28], [76, 30], [75, 44], [49, 42]], np.float32)]
    targets = []
    for polys, ignore in ((words, np.array([False, True])), ([], np.zeros(0, bool))):
        maps = make_db_targets(polys, ignore, 48, 80)
        targets.append({"polygons": polys, "ignore": torch.as_tensor(ignore),
                        **{k: torch.from_numpy(v) for k, v in maps.items()}})
    meta = [
        dict(image_id=0, path="a", orig_size=(24, 40), input_size=(48, 80), scale=(2.0, 2.0)),
        dict(image_id=1, path="b", orig_size=(48, 80), input_size=(48, 80), scale=(1.0, 1.0)),
    ]
    return Batch(images=torch.randn(2, 3, 48, 80), targets=targets, meta=meta)


def _check_db(outputs: Any, batch: Batch) -> None:
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        k: (2, 1, 64, 96) for k in ("prob_logits", "thresh", "binary")}


CASES: dict[str, Case] = {
    "YOLOHead": Case(
        model=dict(backbone=_TINY_TIMM, neck=dict(type="PAN", levels=(2, 3, 4, 5),
                                                  out_channels=16),
                   head=dict(type="YOLOHead", num_classes=2)),
        batch=_det_batch, check_outputs=_check_yolo, empty_batch=lambda: _det_batch(True),
    ),
    "DBHead": Case(
        model=dict(
            backbone=dict(type="TimmBackbone", name="resnet10t", out_indices=(1, 2, 3, 4)),
            neck=dict(type="DBFPN", inner_channels=32),
            head=dict(type="DBHead",
                      # thresholds low enough that the untrained model predicts polygons
                      postprocessor=dict(type="DBPostProcessor", binarize_threshold=0.005,
                                       box_threshold=0.005)),
        ),
        batch=_text_batch,
        check_outputs=_check_db,
    ),
    "AttentionUNetHead": Case(
        model=dict(
            backbone=dict(type="TimmBackbone", name="resnet10t", in_chans=1),
            head=dict(type="AttentionUNetHead", num_classes=2, loss=_BCE()),
        ),
        batch=_seg_batch,
        check_outputs=_check_attention_unet,
    ),
    "FasterRCNNHead": Case(
        model=dict(
            backbone=dict(type="TimmBackbone", name="resnet10t", out_indices=(1, 2, 3)),
            neck=dict(type="FPN", out_channels=16, levels=(2, 3, 4)),
            head=dict(type="FasterRCNNHead", num_classes=3,
                      rpn=dict(anchor_generator=dict(sizes=(8, 16, 32))),
                      roi=dict(box_head=dict(representation_size=32), sampler=dict(num=32))),
        ),
        batch=_frcnn_batch,
        check_outputs=_check_faster_rcnn,
    ),
}


def _check_inside_image(pred: Prediction, orig_size: tuple[int, int]) -> None:
    h, w = orig_size
    if pred.probs is not None:
        assert pred.probs.shape[-2:] == (h, w) and pred.mask.shape == pred.probs.shape
        assert pred.mask.dtype == torch.bool and 0 <= pred.probs.min() and pred.probs.max() <= 1
    if pred.boxes is not None and len(pred.boxes):
        b = pred.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert len(pred.scores) == len(b) == len(pred.labels)
    for poly in pred.polygons or []:
        assert (poly[:, 0] >= 0).all() and (poly[:, 0] <= w).all()
        assert (poly[:, 1] >= 0).all() and (poly[:, 1] <= h).all()


discover()


@pytest.mark.parametrize("name", HEADS.names())
def test_every_head(name: str) -> None:
    if name not in CASES:
        pytest.fail(f"head {name!r} is registered but has no entry in CASES of {__file__}")
    case = CASES[name]
    torch.manual_seed(0)
    model = Model(**case.model)
    batch = case.batch()

    case.check_outputs(model(batch.images), batch)

    losses = model.loss(batch)
    assert losses and all(k.startswith("loss_") for k in losses), sorted(losses)
    for key, value in losses.items():
        assert value.ndim == 0 and torch.isfinite(value), (key, value)
    sum(losses.values()).backward()
    no_grad = [
        n for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:10]}"

    model.eval()
    with torch.no_grad():
        preds = model.predict(batch)
    assert len(preds) == len(batch)
    for pred, meta in zip(preds, batch.meta):
        _check_inside_image(pred, tuple(meta["orig_size"]))

    if case.empty_batch is not None:  # DESIGN §6: no objects -> no box loss, some cls loss
        model.train()
        with torch.no_grad():
            empty = model.loss(case.empty_batch())
        box_keys = [k for k in empty if "box" in k or "dfl" in k]
        cls_keys = [k for k in empty if "cls" in k]
        assert box_keys and cls_keys, sorted(empty)
        assert all(empty[k].item() == 0.0 for k in box_keys), empty
        assert all(empty[k].item() > 0.0 for k in cls_keys), empty
