"""Segmentation post-processing: per-pixel probabilities -> mask, at one threshold.

The threshold of :class:`SegmentationPostProcessor` (``model.head.postprocessor.threshold``) is
the one knob: the head's masks use it and :class:`~detlab.evaluation.segmentation.
SegmentationEvaluator` takes its Dice/IoU threshold from the predictions (``extras["threshold"]``),
so ``detlab eval``/``sweep`` over it move the metrics and the written masks together.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from ..checks import check_choice, check_float
from ..registry import POSTPROCESSORS

__all__ = ["SegmentationPostProcessor"]


@POSTPROCESSORS.register()
class SegmentationPostProcessor:
    """Mask from class probabilities ``(C, H, W)``.

    Args:
        threshold: a pixel is in a class's mask when its sigmoid probability is ``>=
            threshold`` (the evaluator's rule), in ``(0, 1)``. Softmax heads: the mask is the
            one-hot argmax; ``threshold`` still sets the evaluator's Dice/IoU threshold.

    ``__call__(probs (C, H, W), activation="sigmoid"|"softmax") -> mask (C, H, W) bool``.
    """

    #: ``detlab sweep`` may vary ``model.head.postprocessor.threshold``.
    sweepable: tuple[str, ...] = ("threshold",)

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = check_float("SegmentationPostProcessor", "threshold", threshold,
                                     low=0.0, high=1.0, low_open=True, high_open=True)

    def __call__(self, probs: Tensor, activation: Literal["sigmoid", "softmax"] = "sigmoid"
                 ) -> Tensor:
        """Boolean mask of ``probs`` ``(C, H, W)`` (see the class docstring)."""
        check_choice("SegmentationPostProcessor", "activation", activation,
                     ("sigmoid", "softmax"))
        if activation == "sigmoid":
            return probs >= self.threshold
        return F.one_hot(probs.argmax(0), probs.shape[0]).permute(2, 0, 1).bool()

    def __repr__(self) -> str:
        return f"SegmentationPostProcessor(threshold={self.threshold:g})"
