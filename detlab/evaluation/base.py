"""The :class:`Evaluator` contract and the DDP gather every evaluator uses."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ..structures import Batch, Prediction

__all__ = ["Evaluator", "gather_objects", "world_size"]


def world_size() -> int:
    """Number of processes in the default group (1 without ``torch.distributed``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_objects(items: list[Any]) -> list[Any]:
    """Concatenate a per-process list across all processes (identity without DDP).

    Every process receives the full list, in rank order, so ``compute()`` gives the same result
    on every rank. Tensors inside ``items`` should be on the CPU.
    """
    n = world_size()
    if n == 1:
        return list(items)
    gathered: list[list[Any] | None] = [None] * n
    dist.all_gather_object(gathered, list(items))
    out: list[Any] = []
    for part in gathered:
        out.extend(part or [])
    return out


class Evaluator:
    """Accumulates predictions over an epoch and computes metrics.

    Subclasses implement :meth:`reset`, :meth:`update` and :meth:`compute` and set
    :attr:`primary` to the metric checkpoints monitor; :attr:`higher_is_better` says in which
    direction. ``compute`` must be correct under DDP: keep per-image state in Python lists and
    pass them through :func:`gather_objects` first. Duplicated samples (the distributed sampler
    pads the last batch) are dropped by ``image_id`` in :meth:`dedup`.
    """

    primary: str = ""
    higher_is_better: bool = True

    def reset(self) -> None:  # pragma: no cover - abstract
        """Forget everything seen so far."""
        raise NotImplementedError

    def update(self, predictions: list[Prediction], batch: Batch) -> None:  # pragma: no cover
        """Add one batch of predictions (original coordinates) and its ground truth."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:  # pragma: no cover - abstract
        """Metrics over everything seen since :meth:`reset`; contains :attr:`primary`."""
        raise NotImplementedError

    def detections_read_per_class(self) -> int | None:
        """The most detections per image and class whose presence can change :meth:`compute`
        (it reads only the highest-scoring ones, in the order given), or ``None``: every
        detection counts. ``detlab sweep`` and ``detlab eval`` let a box post-processor stop
        once it has found these (:attr:`~detlab.postprocess.box_nms.BoxPostProcessor.
        evaluated_per_class`); the evaluator then holds only those, so a method that reads
        more than :meth:`compute` does (the F1 curves of
        :meth:`~detlab.evaluation.coco.CocoEvaluator.curve_data`) must not be used after
        such a run."""
        return None

    @staticmethod
    def dedup(records: list[dict[str, Any]], key: str = "image_id") -> list[dict[str, Any]]:
        """Keep the first record per ``key`` (the DistributedSampler repeats samples)."""
        seen: set[Any] = set()
        out = []
        for r in records:
            k = r[key]
            if k in seen:
                continue
            seen.add(k)
            out.append(r)
        return out

    @staticmethod
    def to_cpu(t: torch.Tensor | None) -> torch.Tensor | None:
        """Detach and move to CPU (evaluator state never lives on the GPU)."""
        return None if t is None else t.detach().cpu()
