"""Box losses given NaN/inf: raise in debug mode, a NaN loss and a count otherwise, never a
finite number that hides the bad row (Wise-IoU returned 0.72 with one NaN box)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import detlab.losses.nonfinite as nonfinite
from detlab.errors import DataError
from detlab.losses.dfl import DFLoss
from detlab.losses.iou import CIoULoss, DIoULoss, GIoULoss, InnerIoULoss, IoULoss, WIoULoss
from detlab.losses.nonfinite import total_nonfinite

BOX_LOSSES = [IoULoss, GIoULoss, DIoULoss, CIoULoss, InnerIoULoss, WIoULoss]
PRED = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 12.0, 12.0], [0.0, 0.0, 5.0, 5.0]])
TARGET = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])


@pytest.fixture(autouse=True)
def _normal_mode(monkeypatch):
    monkeypatch.delenv("DETLAB_DEBUG", raising=False)
    monkeypatch.setattr(nonfinite, "DEBUG", False)


def _spoil(which: str, value: float) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = PRED.clone(), TARGET.clone()
    (pred if which == "pred" else target)[1, 2] = value
    return pred, target


@pytest.mark.parametrize("cls", BOX_LOSSES)
@pytest.mark.parametrize("which", ["pred", "target"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_normal_mode_gives_nan_and_counts(cls, which, value):
    pred, target = _spoil(which, value)
    loss = cls()
    assert math.isnan(loss(pred, target).item())
    assert loss.nonfinite_count == 1
    rows = cls(reduction="none")(pred, target)
    assert math.isnan(rows[1].item())
    clean = cls(reduction="none")(PRED[[0, 2]], TARGET[[0, 2]])
    assert torch.allclose(rows[[0, 2]], clean)  # the finite rows keep their values
    loss(pred, target)
    assert loss.nonfinite_count == 2 and int(total_nonfinite(nn.ModuleList([loss]))) == 2
    loss.reset_nonfinite()
    assert loss.nonfinite_count == 0


@pytest.mark.parametrize("cls", BOX_LOSSES)
def test_finite_input_counts_nothing(cls):
    loss = cls()
    assert math.isfinite(loss(PRED, TARGET).item()) and loss.nonfinite_count == 0


@pytest.mark.parametrize("cls", BOX_LOSSES)
@pytest.mark.parametrize("how", ["env", "flag"])
def test_debug_mode_raises_naming_the_row(cls, how, monkeypatch):
    if how == "env":
        monkeypatch.setenv("DETLAB_DEBUG", "1")
    else:
        monkeypatch.setattr(nonfinite, "DEBUG", True)
    with pytest.raises(FloatingPointError, match=r"1 of 3 prediction rows are not finite; "
                       r"first: row 1 = \[2.0, 2.0, nan, 12.0\]"):
        cls()(*_spoil("pred", math.nan))
    with pytest.raises(DataError, match=r"1 of 3 target rows are not finite; first: row 1"):
        cls()(*_spoil("target", math.inf))
    assert math.isfinite(cls()(PRED, TARGET).item())


def test_wiou_running_mean_ignores_nan_rows():
    loss, reference = WIoULoss(momentum=0.5), WIoULoss(momentum=0.5)
    pred, target = _spoil("pred", math.nan)
    loss(pred, target)
    reference(PRED[[0, 2]], TARGET[[0, 2]])
    assert torch.isfinite(loss.iou_loss_mean)
    assert loss.iou_loss_mean.item() == pytest.approx(reference.iou_loss_mean.item())
    all_bad = torch.full((2, 4), math.nan)
    before = loss.iou_loss_mean.item()
    loss(all_bad, TARGET[:2])  # nothing finite to average: no update
    assert loss.iou_loss_mean.item() == before


def test_dfl_nan_target_is_counted_not_an_index_error():
    loss = DFLoss(reg_max=4)
    logits = torch.zeros(3, 4, 4)
    target = torch.tensor([[1.0] * 4, [1.0, math.nan, 1.0, 1.0], [2.0] * 4])
    assert math.isnan(loss(logits, target).item()) and loss.nonfinite_count == 1
    rows = DFLoss(reg_max=4, reduction="none")(logits, target)
    assert math.isnan(rows[1].item()) and torch.allclose(rows[[0, 2]], torch.tensor(math.log(4)))
    bad_logits = logits.clone()
    bad_logits[2, 0, 3] = math.inf
    assert math.isnan(loss(bad_logits, torch.ones(3, 4)).item()) and loss.nonfinite_count == 2
    loss.reset_stats()
    assert loss.nonfinite_count == 0


def test_dfl_debug_mode_raises(monkeypatch):
    monkeypatch.setenv("DETLAB_DEBUG", "1")
    with pytest.raises(DataError, match="DFLoss: 1 of 2 target rows"):
        DFLoss(reg_max=4)(torch.zeros(2, 4), torch.tensor([1.0, math.nan]))
    with pytest.raises(FloatingPointError, match="DFLoss: 1 of 2 prediction rows"):
        DFLoss(reg_max=4)(torch.tensor([[0.0] * 4, [math.nan] * 4]), torch.tensor([1.0, 1.0]))


def test_total_nonfinite_over_a_model():
    head = nn.ModuleDict({"iou": CIoULoss(), "dfl": DFLoss(reg_max=4), "other": nn.Linear(1, 1)})
    assert int(total_nonfinite(head)) == 0
    head["iou"](*_spoil("pred", math.nan))
    head["dfl"](torch.zeros(2, 4), torch.tensor([math.inf, 1.0]))
    assert int(total_nonfinite(head)) == 2
    assert total_nonfinite(nn.Linear(1, 1)) is None  # no box loss: nothing to log
