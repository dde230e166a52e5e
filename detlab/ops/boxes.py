"""Box format conversions and the IoU family (IoU, GIoU, DIoU, CIoU), pairwise and aligned.

Formats (absolute pixels unless a caller says otherwise):

* ``xyxy``   — (x1, y1, x2, y2), top-left and bottom-right corners;
* ``xywh``   — (x1, y1, w, h), top-left corner and size (COCO's format);
* ``cxcywh`` — (cx, cy, w, h), centre and size (YOLO's format).

Pairwise functions (``Tensor[N, 4]`` × ``Tensor[M, 4]`` → ``Tensor[N, M]``) are torchvision's
(:mod:`torchvision.ops.boxes`); they expect valid boxes (``x1 < x2``, ``y1 < y2``) and give NaN
for two zero-area boxes. :func:`aligned_iou` (elementwise, ``Tensor[..., 4]`` × ``Tensor[..., 4]``
→ ``Tensor[...]``) is written here for the losses and assigners: it broadcasts, upcasts half
precision to float32, and stays finite in value and gradient for degenerate boxes (zero width or
height, points, identical or far-apart boxes).

References: GIoU — Rezatofighi et al. 2019, arXiv:1902.09630; DIoU and CIoU — Zheng et al. 2020,
arXiv:1911.08287.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor
from torchvision.ops import box_area as _tv_box_area
from torchvision.ops import box_convert as _tv_box_convert
from torchvision.ops import box_iou as _tv_box_iou
from torchvision.ops import complete_box_iou as _tv_complete_box_iou
from torchvision.ops import distance_box_iou as _tv_distance_box_iou
from torchvision.ops import generalized_box_iou as _tv_generalized_box_iou

__all__ = [
    "BoxFormat",
    "IoUKind",
    "IOU_KINDS",
    "box_convert",
    "xyxy_to_xywh",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "xywh_to_cxcywh",
    "cxcywh_to_xywh",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "pairwise_iou",
    "aligned_iou",
    "IoUTerms",
    "aligned_iou_terms",
    "iou_from_terms",
]

BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
IoUKind = Literal["iou", "giou", "diou", "ciou"]
IOU_KINDS: tuple[str, ...] = get_args(IoUKind)
_FORMATS: tuple[str, ...] = get_args(BoxFormat)


# -- conversions --------------------------------------------------------------------------------
def box_convert(boxes: Tensor, in_fmt: BoxFormat, out_fmt: BoxFormat) -> Tensor:
    """Convert ``Tensor[..., 4]`` boxes between ``xyxy``, ``xywh`` and ``cxcywh``."""
    for arg, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in _FORMATS:
            raise ValueError(f"{arg}={fmt!r} is not a box format; expected one of {_FORMATS}")
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4), got {tuple(boxes.shape)}")
    return _tv_box_convert(boxes, in_fmt=in_fmt, out_fmt=out_fmt)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` (x1, y1, x2, y2) → (x1, y1, w, h)."""
    return box_convert(boxes, "xyxy", "xywh")


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` (x1, y1, w, h) → (x1, y1, x2, y2)."""
    return box_convert(boxes, "xywh", "xyxy")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` (x1, y1, x2, y2) → (cx, cy, w, h)."""
    return box_convert(boxes, "xyxy", "cxcywh")


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` (cx, cy, w, h) → (x1, y1, x2, y2)."""
    return box_convert(boxes, "cxcywh", "xyxy")


def xywh_to_cxcywh(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` (x1, y1, w, h) → (cx, cy, w, h)."""
    return box_convert(boxes, "xywh", "cxcywh")


def cxcywh_to_xywh(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` (cx, cy, w, h) → (x1, y1, w, h)."""
    return box_convert(boxes, "cxcywh", "xywh")


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``Tensor[N, 4]`` xyxy boxes → ``Tensor[N]`` (torchvision)."""
    return _tv_box_area(boxes)


# -- pairwise (torchvision) ---------------------------------------------------------------------
def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of xyxy ``Tensor[N, 4]`` and ``Tensor[M, 4]`` → ``Tensor[N, M]``."""
    return _tv_box_iou(boxes1, boxes2)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise GIoU (arXiv:1902.09630) of xyxy ``Tensor[N, 4]``, ``Tensor[M, 4]`` → ``[N, M]``."""
    return _tv_generalized_box_iou(boxes1, boxes2)


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise DIoU (arXiv:1911.08287) of xyxy ``Tensor[N, 4]``, ``Tensor[M, 4]`` → ``[N, M]``."""
    return _tv_distance_box_iou(boxes1, boxes2, eps=eps)


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise CIoU (arXiv:1911.08287) of xyxy ``Tensor[N, 4]``, ``Tensor[M, 4]`` → ``[N, M]``."""
    return _tv_complete_box_iou(boxes1, boxes2, eps=eps)


def pairwise_iou(
    boxes1: Tensor, boxes2: Tensor, kind: IoUKind = "iou", eps: float = 1e-7
) -> Tensor:
    """Pairwise IoU of ``kind`` for xyxy ``Tensor[N, 4]`` × ``Tensor[M, 4]`` → ``Tensor[N, M]``."""
    _check_kind(kind)
    if kind == "iou":
        return box_iou(boxes1, boxes2)
    if kind == "giou":
        return generalized_box_iou(boxes1, boxes2)
    if kind == "diou":
        return distance_box_iou(boxes1, boxes2, eps=eps)
    return complete_box_iou(boxes1, boxes2, eps=eps)


# -- aligned (elementwise) ----------------------------------------------------------------------
class IoUTerms(NamedTuple):
    """Pieces of the IoU family for aligned box pairs (all ``Tensor[...]``).

    ``iou``: plain IoU; ``enclose_area``: area of the smallest enclosing box; ``union``: area of
    the union; ``center_dist2``: squared distance of the centres (ρ² in the DIoU paper);
    ``enclose_diag2``: squared diagonal of the enclosing box (c²); ``aspect``: the CIoU aspect-ratio
    consistency term v = 4/π² (atan(w₂/h₂) − atan(w₁/h₁))².
    """

    iou: Tensor
    union: Tensor
    enclose_area: Tensor
    center_dist2: Tensor
    enclose_diag2: Tensor
    aspect: Tensor


def _check_kind(kind: str) -> None:
    if kind not in IOU_KINDS:
        raise ValueError(f"kind={kind!r} is not an IoU kind; expected one of {IOU_KINDS}")


def _upcast(x: Tensor) -> Tensor:
    """float16/bfloat16/integer → float32; float32/float64 unchanged."""
    if x.is_floating_point() and x.dtype.itemsize >= 4:
        return x
    return x.float()


def _safe_ratio(num: Tensor, den: Tensor, eps: float) -> Tensor:
    """``num / den`` where ``den > eps`` and 0 elsewhere, with a zero (not huge) gradient there.

    Adding eps to a zero denominator would give gradients of order 1/eps for two coinciding
    zero-area boxes, which overflow float16; a degenerate pair has no useful direction anyway.
    """
    ok = den > eps
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def aligned_iou_terms(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> IoUTerms:
    """All terms of the IoU family for aligned xyxy boxes ``Tensor[..., 4]`` (broadcastable).

    Computed in float32 (float64 stays float64). See :class:`IoUTerms` for the fields.
    """
    if boxes1.shape[-1] != 4 or boxes2.shape[-1] != 4:
        raise ValueError(
            f"boxes must have shape (..., 4), got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    b1, b2 = _upcast(boxes1), _upcast(boxes2)
    if b1.dtype != b2.dtype:
        dtype = torch.promote_types(b1.dtype, b2.dtype)
        b1, b2 = b1.to(dtype), b2.to(dtype)
    x1a, y1a, x2a, y2a = b1.unbind(-1)
    x1b, y1b, x2b, y2b = b2.unbind(-1)
    # relu (not clamp) so that touching or coinciding edges pass a zero gradient, not a tie split.
    wa, ha = (x2a - x1a).relu(), (y2a - y1a).relu()
    wb, hb = (x2b - x1b).relu(), (y2b - y1b).relu()
    inter = (torch.minimum(x2a, x2b) - torch.maximum(x1a, x1b)).relu() * (
        torch.minimum(y2a, y2b) - torch.maximum(y1a, y1b)
    ).relu()
    union = wa * ha + wb * hb - inter
    iou = _safe_ratio(inter, union, eps)

    ew = torch.maximum(x2a, x2b) - torch.minimum(x1a, x1b)
    eh = torch.maximum(y2a, y2b) - torch.minimum(y1a, y1b)
    center_dist2 = ((x1a + x2a - x1b - x2b) ** 2 + (y1a + y2a - y1b - y2b) ** 2) / 4
    # atan2 on sizes clamped away from zero: equals atan(w / h) for real boxes, and a zero side
    # gets no gradient instead of one of order 1/eps.
    ang_a = torch.atan2(wa.clamp(min=eps), ha.clamp(min=eps))
    ang_b = torch.atan2(wb.clamp(min=eps), hb.clamp(min=eps))
    aspect = (4 / math.pi**2) * (ang_b - ang_a) ** 2
    return IoUTerms(iou, union, ew * eh, center_dist2, ew**2 + eh**2, aspect)


def iou_from_terms(t: IoUTerms, kind: IoUKind, eps: float = 1e-7) -> Tensor:
    """Combine :class:`IoUTerms` into IoU, GIoU, DIoU or CIoU (``Tensor[...]``)."""
    _check_kind(kind)
    if kind == "iou":
        return t.iou
    if kind == "giou":  # arXiv:1902.09630 eq. (1): IoU − |C \ (A ∪ B)| / |C|
        return t.iou - _safe_ratio(t.enclose_area - t.union, t.enclose_area, eps)
    diou = t.iou - _safe_ratio(t.center_dist2, t.enclose_diag2, eps)  # arXiv:1911.08287 eq. (6)
    if kind == "diou":
        return diou
    # CIoU (eq. 8-11): α is a trade-off weight, not a path for gradients (as in torchvision).
    with torch.no_grad():
        alpha = t.aspect / (1 - t.iou + t.aspect + eps)
    return diou - alpha * t.aspect


def aligned_iou(
    boxes1: Tensor, boxes2: Tensor, kind: IoUKind = "iou", eps: float = 1e-7
) -> Tensor:
    """IoU, GIoU, DIoU or CIoU of aligned xyxy boxes: ``Tensor[N, 4]`` × ``Tensor[N, 4]`` → ``[N]``.

    Shapes broadcast (``Tensor[..., 4]``), so ``(B, G, 1, 4)`` × ``(B, 1, A, 4)`` gives
    ``(B, G, A)``. The result is float32 for half-precision inputs. Pairs whose union (IoU),
    enclosing area (GIoU) or enclosing diagonal (DIoU/CIoU) is ``<= eps`` get 0 for that ratio,
    with zero gradient, so degenerate boxes never give NaN or inf.

    GIoU: Rezatofighi et al. 2019 (arXiv:1902.09630); DIoU/CIoU: Zheng et al. 2020
    (arXiv:1911.08287). Equals the diagonal of the torchvision pairwise functions for valid boxes.
    """
    _check_kind(kind)
    return iou_from_terms(aligned_iou_terms(boxes1, boxes2, eps), kind, eps)
