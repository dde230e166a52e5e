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

from ..errors import ConfigError
from .staged import StagedPostprocessor

__all__ = ["evaluated_only", "stage_postprocessor"]


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
    # box_nms imports torch: not at import time (the CLI starts without it)
    from .box_nms import BoxPostProcessor

    post = stage_postprocessor(head)
    caps = [_cap(e) for e in evaluators]
    if not isinstance(post, BoxPostProcessor) or not caps or None in caps:
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


def _cap(evaluator: Any) -> int | None:
    """``evaluator.detections_read_per_class()``, checked: None or an int >= 1 (a wrong value
    would cut detections the evaluator reads and silently change its numbers)."""
    read = getattr(evaluator, "detections_read_per_class", None)
    cap = read() if callable(read) else None
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ConfigError(
            f"{type(evaluator).__name__}.detections_read_per_class() must return None (every "
            f"detection counts) or an int >= 1 (detections read per image and class), got "
            f"{cap!r}")
    return cap
