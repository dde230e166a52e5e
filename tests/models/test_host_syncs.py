"""Host synchronisations in the training losses (issue 17): on CUDA every ``.item()``,
``bool(tensor)`` or ``.tolist()`` stalls the launch queue, and a per-step one in a loss costs
the GPU its lead on the host. ``torch.cuda.set_sync_debug_mode`` needs a GPU, so these tests
count the Python-level host reads instead (every tensor -> Python value conversion a loss can
make), on the CPU, through the code path an accelerator takes.

What stays, on purpose: the YOLO loss reads the label range once (``check_gt``: a label out of
range must be a ``DataError`` naming the values, not a device-side assert in a scatter), and
its two ``nonzero`` calls (the assigner's sparse pairs, the positives' gather) have
data-dependent shapes; neither is a Python-level read, and both run once per step, never per box.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from test_every_head import CASES

import detlab.losses.db as db_loss
from detlab.losses.db import DBLoss
from detlab.models import Model

_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


@contextmanager
def count_host_reads() -> Iterator[list[tuple[str, str]]]:
    """Record ``(calling function, method)`` for every tensor -> host read in the block."""
    calls: list[tuple[str, str]] = []
    originals = {name: getattr(torch.Tensor, name) for name in _READS}

    def wrap(name, fn):
        def counted(self, *args, **kwargs):
            calls.append((sys._getframe(1).f_code.co_name, name))
            return fn(self, *args, **kwargs)
        return counted

    for name, fn in originals.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def _db_case(seed: int, with_text: bool = True) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    b, h, w = 2, 40, 56
    prob_map = torch.zeros(b, h, w)
    if with_text:
        prob_map[0, 5:15, 10:40] = 1.0
        prob_map[1, 20:30, 3:20] = 1.0
    prob_mask = (torch.rand(b, h, w, generator=g) > 0.05).float()
    targets = dict(prob_map=prob_map, prob_mask=prob_mask,
                   thresh_map=torch.rand(b, h, w, generator=g) * 0.4 + 0.3,
                   thresh_mask=(torch.rand(b, h, w, generator=g) > 0.5).float())
    outputs = dict(prob=torch.randn(b, 1, h, w, generator=g, requires_grad=True),
                   thresh=torch.rand(b, 1, h, w, generator=g),
                   binary=torch.rand(b, 1, h, w, generator=g))
    return outputs, targets


@pytest.mark.parametrize("with_text", [True, False])
def test_db_loss_device_path_has_no_host_reads_and_the_same_value(monkeypatch, with_text):
    loss = DBLoss(min_negatives=50)
    outputs, targets = _db_case(0, with_text)
    host = loss(outputs, targets)  # the CPU path: host counts, torch.topk
    monkeypatch.setattr(db_loss, "_host_counts", lambda device: False)  # what CUDA runs
    with count_host_reads() as calls:
        device = loss(outputs, targets)
    assert calls == []
    for key in host:  # same hard negatives; only the order of the sum differs
        assert device[key].item() == pytest.approx(host[key].item(), rel=1e-6), key
    device["loss_prob"].backward()
    assert torch.isfinite(outputs["prob"].grad).all()
    assert outputs["prob"].grad.abs().sum() > 0


def test_db_loss_device_path_mines_the_hardest_negatives(monkeypatch):
    """Hand-made case: 1 positive pixel, ratio 2 -> the 2 largest negative losses count."""
    monkeypatch.setattr(db_loss, "_host_counts", lambda device: False)
    gt = torch.tensor([[[1.0, 0.0, 0.0, 0.0, 0.0]]])
    logits = torch.tensor([[[0.0, 3.0, -1.0, 2.0, -5.0]]])
    mask = torch.ones_like(gt)
    got = DBLoss(negative_ratio=2.0, eps=1e-6).mined_bce(logits, gt, mask)
    bce = torch.nn.functional.softplus  # BCE of a negative pixel = softplus(logit)
    want = (bce(torch.tensor(-0.0)) + bce(torch.tensor(3.0)) + bce(torch.tensor(2.0))) / (3 + 1e-6)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("ignore", [False, True])
def test_yolo_loss_reads_the_host_only_for_the_label_check(ignore):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Model(**CASES["YOLOHead"].model)
    batch = CASES["YOLOHead"].batch()
    if ignore:
        for t in batch.targets:
            t["ignore"] = torch.zeros(len(t["labels"]), dtype=torch.bool)
        batch.targets[0]["ignore"][1] = True
    with count_host_reads() as calls:
        losses = model.loss(batch)
    assert calls == [("check_gt", "tolist")]
    assert all(torch.isfinite(v) for v in losses.values())


def _model(name: str) -> tuple[Model, object]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return Model(**CASES[name].model), CASES[name].batch()


def test_db_and_unet_losses_have_no_host_reads(monkeypatch):
    monkeypatch.setattr(db_loss, "_host_counts", lambda device: False)
    for name in ("DBHead", "AttentionUNetHead"):
        model, batch = _model(name)
        with count_host_reads() as calls:
            model.loss(batch)
        assert calls == [], name  # DBHead counted its words with int() per image before


def test_faster_rcnn_label_check_is_one_read_per_batch():
    model, batch = _model("FasterRCNNHead")
    batch.targets[1] = dict(batch.targets[0])  # two images with labels: was four int() reads
    with count_host_reads() as calls:
        model.loss(batch)
    assert calls == [("_targets", "tolist")]


@pytest.mark.parametrize(("name", "caller", "per_batch"),
                         [("DBHead", "postprocess", 1), ("AttentionUNetHead", "<listcomp>", 4)])
def test_postprocess_copies_to_the_host_once_per_batch(name, caller, per_batch):
    """DB: the probability maps (OpenCV needs them on the host); U-Net: the 4 gate levels,
    whatever the batch size (was one copy per image and level)."""
    model, batch = _model(name)
    model.eval()
    with torch.no_grad(), count_host_reads() as calls:
        preds = model.predict(batch)
    assert len(preds) == 2
    assert [c for c in calls if c[1] == "cpu"] == [(caller, "cpu")] * per_batch or [
        c for c in calls if c[1] == "cpu"] == [("postprocess", "cpu")] * per_batch  # 3.12 inlines
