"""Metrics-only runs: a head's box post-processor stops at the detections the evaluators read.

``detlab eval`` and ``detlab sweep`` hand their predictions to an evaluator and nothing else.
A COCO evaluator reads each image's ``max_dets`` highest-scoring detections per class
(:meth:`~detlab.evaluation.base.Evaluator.detections_read_per_class`), so NMS may stop once
every class has that many (:attr:`~detlab.postprocess.box_nms.BoxPostProcessor.
evaluated_per_class`): the same numbers from less NMS (at IoU 0.5, 100 faces an image need a
fifth of the candidates 300 need). Never for predictions that are written or shown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from .staged import StagedPostprocessor

__all__ = ["stage_postprocessor", "evaluated_only"]


def stage_postprocessor(head: Any, stage: str = "test") -> Any:
    """The post-processor a head runs at ``stage`` (its slot itself when the slot is not
    staged; None if it has none)."""
    slot = getattr(head, "postprocessor", None)
    if isinstance(slot, StagedPostprocessor):
        return slot.for_stage(stage)
    return slot


@contextlib.contextmanager
def evaluated_only(head: Any, evaluators: Sequence[Any]) -> Iterator[int | None]:
    """Within the block, ``head``'s test-stage
    :class:`~detlab.postprocess.box_nms.BoxPostProcessor` stops at the largest
    number of detections per image and class that ``evaluators`` read; yields that number, or
    ``None`` (nothing changed: another post-processor, or an evaluator that reads them all).
    The setting is restored afterwards."""
    from .box_nms import BoxPostProcessor  # torch: not at import (the CLI starts without it)

    post = stage_postprocessor(head)
    caps = [getattr(e, "detections_read_per_class", lambda: None)() for e in evaluators]
    if not isinstance(post, BoxPostProcessor) or not caps or not all(
            isinstance(c, int) for c in caps):
        yield None
        return
    had = "evaluated_per_class" in vars(post)
    before = post.evaluated_per_class
    post.evaluated_per_class = max(caps)
    try:
        yield post.evaluated_per_class
    finally:
        if had:
            post.evaluated_per_class = before
        else:
            del post.evaluated_per_class
