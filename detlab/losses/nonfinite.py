"""Non-finite inputs of the box losses: raised in debug mode, counted (and propagated) otherwise.

A box loss that clamps or masks its way past a NaN/inf box returns a finite number for a row
that has no meaning (Wise-IoU gave 0.72 for a batch with one NaN box), so a diverging head
trains on quietly. :class:`NonFiniteRows` gives the IoU family, Wise-IoU and DFL one rule:

* **debug mode** (``DETLAB_DEBUG=1`` in the environment, or :data:`DEBUG` set to True):
  a non-finite row raises at once, naming the loss, the row and its values: a
  ``FloatingPointError`` for predictions (the model diverged), a
  :class:`~detlab.errors.DataError` for targets (the ground truth is garbage);
* **normal mode**: the row's loss is NaN (so the reduced loss is NaN, which the training step
  refuses with the loss terms), and the row is counted in ``nonfinite_count``; the training step
  logs the sum of these counters as ``train/nonfinite_boxes``. Counters stay on the device
  until read (no synchronisation per step).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from ..errors import DataError

__all__ = ["DEBUG", "debug_enabled", "NonFiniteRows", "nan_where", "total_nonfinite"]

DEBUG = False  # set to True (or DETLAB_DEBUG=1) to raise on the first non-finite row


def debug_enabled() -> bool:
    """Whether non-finite rows raise: :data:`DEBUG`, or ``DETLAB_DEBUG=1`` in the environment."""
    return DEBUG or os.environ.get("DETLAB_DEBUG") == "1"


class NonFiniteRows:
    """Mixin for losses over rows (boxes): finds, counts or raises on non-finite rows."""

    _nonfinite: Tensor | int = 0

    @property
    def nonfinite_count(self) -> int:
        """Rows with a non-finite prediction or target seen since construction or
        :meth:`reset_nonfinite` (their loss was NaN)."""
        return int(self._nonfinite)

    @property
    def nonfinite_counter(self) -> Tensor | int:
        """:attr:`nonfinite_count` without a device synchronisation (a tensor once counted)."""
        return self._nonfinite

    def reset_nonfinite(self) -> None:
        """Zero :attr:`nonfinite_count`."""
        self._nonfinite = 0

    def nonfinite_rows(self, n: int, pred: Tensor, target: Tensor) -> Tensor:
        """``(n,)`` bool, True where row ``i`` of ``pred`` or ``target`` (first dim ``n``) has a
        NaN/inf; counts them, or raises in debug mode (see the module docstring)."""
        if n == 0:
            return torch.zeros(0, dtype=torch.bool, device=pred.device)
        bad_pred = ~torch.isfinite(pred.detach().reshape(n, -1)).all(dim=1)
        bad_target = ~torch.isfinite(target.detach().reshape(n, -1)).all(dim=1)
        bad = bad_pred | bad_target
        if debug_enabled() and bool(bad.any()):
            owner = type(self).__name__
            for flags, what, values, error in (
                (bad_target, "target", target, DataError),
                (bad_pred, "prediction", pred, FloatingPointError),
            ):
                if bool(flags.any()):
                    i = int(flags.nonzero()[0])
                    raise error(
                        f"{owner}: {int(flags.sum())} of {n} {what} rows are not finite; first: "
                        f"row {i} = {values.detach().reshape(n, -1)[i].tolist()} (DETLAB_DEBUG "
                        "mode; in normal mode the loss is NaN and the rows are counted)"
                    )
        count = bad.sum()
        previous = self._nonfinite
        if isinstance(previous, Tensor):  # the module may have moved device since
            previous = previous.to(count.device)
        self._nonfinite = previous + count
        return bad


def nan_where(bad: Tensor, loss: Tensor) -> Tensor:
    """``loss`` with the rows where ``bad`` replaced by NaN (``bad`` ``(N,)``, loss ``(N, ...)``)."""
    if loss.dim() > 1:
        bad = bad.reshape(bad.shape + (1,) * (loss.dim() - 1))
    return torch.where(bad, torch.full_like(loss, float("nan")), loss)


def total_nonfinite(module: torch.nn.Module) -> Tensor | None:
    """Sum of ``nonfinite_counter`` over ``module`` and its submodules (no synchronisation), or
    None when none of them counts non-finite rows; what ``train/nonfinite_boxes`` logs."""
    counters = [
        m.nonfinite_counter for m in module.modules() if isinstance(m, NonFiniteRows)
    ]
    if not counters:
        return None
    total = torch.zeros(())
    for c in counters:
        total = total.to(c.device) + c if isinstance(c, Tensor) else total + c
    return total.float()
