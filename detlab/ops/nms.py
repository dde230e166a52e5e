"""Non-maximum suppression: standard (torchvision), Soft-NMS (Gaussian, linear) and DIoU-NMS.

All variants take ``boxes`` ``Tensor[N, 4]`` xyxy, ``scores`` ``Tensor[N]`` and optional
``labels`` ``Tensor[N]`` (per-class NMS unless ``class_agnostic``), and return
``(keep, kept_scores)``: int64 indices into the inputs and the boxes' final scores (decayed by
Soft-NMS, unchanged otherwise), sorted by decreasing final score.

References: Soft-NMS — Bodla et al. 2017 (arXiv:1704.04503); DIoU-NMS — Zheng et al. 2020
(arXiv:1911.08287).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor
from torchvision.ops import batched_nms as _tv_batched_nms
from torchvision.ops import nms as _tv_nms

from .boxes import aligned_iou

__all__ = ["NMSMethod", "NMS_METHODS", "nms", "soft_nms", "diou_nms", "offset_by_class"]

NMSMethod = Literal["standard", "soft_gaussian", "soft_linear", "diou"]
NMS_METHODS: tuple[str, ...] = get_args(NMSMethod)


def offset_by_class(boxes: Tensor, labels: Tensor) -> Tensor:
    """Shift ``Tensor[N, 4]`` xyxy boxes so that boxes of different ``labels`` never overlap.

    Any overlap measure of the IoU family is then <= 0 across classes, so one class-agnostic
    pass does per-class NMS (the "coordinate trick" of torchvision's ``batched_nms``).
    """
    if boxes.numel() == 0:
        return boxes
    low, high = boxes.min(), boxes.max()
    return boxes - low + (labels.to(boxes) * (high - low + 1))[:, None]


def diou_nms(
    boxes: Tensor, scores: Tensor, iou_threshold: float, max_keep: int | None = None
) -> Tensor:
    """Class-agnostic greedy DIoU-NMS: a box is dropped when its DIoU (IoU minus normalized
    centre distance) with a kept, higher-scoring box exceeds ``iou_threshold``. Returns kept
    indices in decreasing score order; stops after ``max_keep`` (same first boxes)."""
    order = scores.argsort(descending=True, stable=True)
    keep: list[Tensor] = []
    limit = order.numel() if max_keep is None else max_keep
    while order.numel() and len(keep) < limit:
        best, rest = order[0], order[1:]
        keep.append(best)
        overlap = aligned_iou(boxes[best][None], boxes[rest], "diou")
        order = rest[overlap <= iou_threshold]
    if not keep:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    return torch.stack(keep)


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    method: Literal["gaussian", "linear"] = "gaussian",
    score_threshold: float = 0.001,
    max_keep: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Class-agnostic Soft-NMS (Bodla et al. 2017, arXiv:1704.04503).

    Repeatedly keeps the highest-scoring remaining box and decays the others' scores by its IoU
    ``u``: Gaussian ``s · exp(−u² / sigma)`` (``iou_threshold`` unused), or linear
    ``s · (1 − u)`` where ``u > iou_threshold``. Boxes whose score falls below
    ``score_threshold`` are dropped. Returns ``(keep, kept_scores)`` in decreasing score order;
    stops after ``max_keep`` boxes (the first picks do not depend on later ones).
    """
    if method not in ("gaussian", "linear"):
        raise ValueError(f"method={method!r}: expected 'gaussian' or 'linear'")
    remaining = torch.arange(boxes.shape[0], device=boxes.device)
    current = scores.clone()
    keep: list[Tensor] = []
    kept_scores: list[Tensor] = []
    limit = boxes.shape[0] if max_keep is None else max_keep
    alive = current >= score_threshold
    remaining, current = remaining[alive], current[alive]
    while remaining.numel() and len(keep) < limit:
        top = current.argmax()
        keep.append(remaining[top])
        kept_scores.append(current[top])
        others = torch.ones_like(remaining, dtype=torch.bool)
        others[top] = False
        remaining, current = remaining[others], current[others]
        iou = aligned_iou(boxes[keep[-1]][None], boxes[remaining]).to(current.dtype)
        if method == "gaussian":
            current = current * torch.exp(-(iou * iou) / sigma)
        else:
            current = torch.where(iou > iou_threshold, current * (1 - iou), current)
        alive = current >= score_threshold
        remaining, current = remaining[alive], current[alive]
    if not keep:
        return torch.empty(0, dtype=torch.long, device=boxes.device), scores[:0]
    return torch.stack(keep), torch.stack(kept_scores)


def nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor | None = None,
    method: NMSMethod = "standard",
    iou_threshold: float = 0.5,
    class_agnostic: bool = False,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    max_keep: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Non-maximum suppression of ``Tensor[N, 4]`` xyxy boxes with ``Tensor[N]`` scores.

    Args:
        labels: ``Tensor[N]`` classes; boxes of different classes never suppress each other
            unless ``class_agnostic`` (None means class-agnostic).
        method: ``"standard"`` (torchvision ``nms``/``batched_nms``; per-class over more than
            1000 boxes on CPU, one ``nms`` over float64 class-offset boxes, which gives the same
            boxes without torchvision's loop over classes), ``"soft_gaussian"``,
            ``"soft_linear"`` or ``"diou"``.
        iou_threshold: suppression threshold (IoU, or DIoU for ``"diou"``; linear Soft-NMS
            decays above it; Gaussian Soft-NMS ignores it).
        sigma: Gaussian Soft-NMS width.
        score_threshold: Soft-NMS drops boxes whose decayed score falls below it.
        max_keep: return at most this many (the highest-scoring) boxes; Soft- and DIoU-NMS stop
            early.

    Returns:
        ``(keep, kept_scores)``: int64 indices into the inputs and their final scores, sorted by
        decreasing final score.
    """
    if method not in NMS_METHODS:
        raise ValueError(f"method={method!r} is not an NMS method; expected one of {NMS_METHODS}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(
            f"boxes must be (N, 4) and scores (N,), got {tuple(boxes.shape)}, {tuple(scores.shape)}"
        )
    per_class = labels is not None and not class_agnostic
    if method == "standard":
        if per_class and boxes.device.type == "cpu" and boxes.shape[0] > 1000:
            # torchvision loops over classes here (a mask over all boxes per class: slow with 80
            # classes); one pass over class-offset boxes is the same, exact in float64.
            shifted = offset_by_class(boxes.double(), labels)
            keep = _tv_nms(shifted, scores.double(), iou_threshold)
        elif per_class:
            keep = _tv_batched_nms(boxes, scores, labels, iou_threshold)
        else:
            keep = _tv_nms(boxes, scores, iou_threshold)
        if max_keep is not None:
            keep = keep[:max_keep]
        return keep, scores[keep]
    # Offsetting a float32 copy keeps the trick exact enough and the variants class-aware.
    work = boxes.float() if boxes.dtype.itemsize < 4 else boxes
    if per_class:
        work = offset_by_class(work, labels)
    if method == "diou":
        keep = diou_nms(work, scores, iou_threshold, max_keep)
        return keep, scores[keep]
    kind = "gaussian" if method == "soft_gaussian" else "linear"
    return soft_nms(work, scores, iou_threshold, sigma, kind, score_threshold, max_keep)
