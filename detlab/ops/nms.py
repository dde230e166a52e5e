"""Non-maximum suppression: standard (torchvision), Soft-NMS (Gaussian, linear) and DIoU-NMS.

All variants take ``boxes`` ``Tensor[N, 4]`` xyxy, ``scores`` ``Tensor[N]`` and optional
``labels`` ``Tensor[N]`` (per-class NMS unless ``class_agnostic``), and return
``(keep, kept_scores)``: int64 indices into the inputs and the boxes' final scores (decayed by
Soft-NMS, unchanged otherwise), sorted by decreasing final score.

Soft- and DIoU-NMS are greedy: each pick depends on the previous ones. They run as one loop of
a few whole-array operations per *kept* box over a precomputed ``N x N`` decay (Soft-NMS) or
suppression (DIoU) matrix, or, above :data:`MATRIX_LIMIT` candidates (or when ``max_keep`` is
far below ``N``), over one row computed per pick (memory ``O(N)``):

- on the CPU the loop runs in numpy (a fifth of torch's per-call cost) with the same IEEE
  operations, only ``exp`` is left to torch, so the results are bit-identical to the former
  torch loop (tests keep it as the oracle);
- on other devices it runs in torch without compaction and without reading a value back per
  box: one host synchronisation every :data:`SYNC_EVERY` picks.

Per-class runs mask by label instead of shifting boxes apart, so they equal each class run
alone bit for bit. Peers (``python tools/bench_nms.py``): ensemble-boxes' Soft-NMS loop and
torchvision's hard NMS.

References: Soft-NMS — Bodla et al. 2017 (arXiv:1704.04503); DIoU-NMS — Zheng et al. 2020
(arXiv:1911.08287).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms as _tv_batched_nms
from torchvision.ops import nms as _tv_nms

__all__ = [
    "NMSMethod", "NMS_METHODS", "MATRIX_LIMIT", "SYNC_EVERY", "PER_CLASS_ROWS_FROM", "nms",
    "soft_nms", "diou_nms", "offset_by_class", "pairwise_overlap", "overlap_matrix",
    "per_class_standard_rows",
]

NMSMethod = Literal["standard", "soft_gaussian", "soft_linear", "diou"]
NMS_METHODS: tuple[str, ...] = get_args(NMSMethod)

#: Candidates up to which the ``N x N`` matrix is precomputed (2048² float32 = 16 MiB).
MATRIX_LIMIT = 2048
#: Picks between two checks whether any candidate is left (the only host synchronisations).
SYNC_EVERY = 64
#: Candidates above which per-class standard NMS on the CPU runs one torchvision pass per class
#: (:func:`_per_class_standard`) instead of torchvision's ``batched_nms``.
PER_CLASS_ROWS_FROM = 1000
_EPS = 1e-7  # as detlab.ops.boxes.aligned_iou: a union or diagonal <= eps gives a 0 ratio


def offset_by_class(boxes: Tensor, labels: Tensor) -> Tensor:
    """Shift ``Tensor[N, 4]`` xyxy boxes so that boxes of different ``labels`` never overlap.

    Any overlap measure of the IoU family is then <= 0 across classes, so one class-agnostic
    pass does per-class NMS (the "coordinate trick" of torchvision's ``batched_nms``).
    """
    if boxes.numel() == 0:
        return boxes
    low, high = boxes.min(), boxes.max()
    return boxes - low + (labels.to(boxes) * (high - low + 1))[:, None]


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    ok = den > _EPS
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def pairwise_overlap(a: Tensor, b: Tensor, kind: Literal["iou", "diou"] = "iou") -> Tensor:
    """IoU or DIoU of xyxy boxes ``a`` ``Tensor[..., 4]`` and ``b`` (broadcast: ``a[:, None]``
    and ``b[None]`` give the ``(N, M)`` matrix). Float32 for half-precision inputs.

    The arithmetic is that of :func:`detlab.ops.boxes.aligned_iou` operation for operation (so
    the values are bit-identical), without the terms IoU and DIoU do not need.
    """
    if not a.is_floating_point() or a.dtype.itemsize < 4:
        a = a.float()
    b = b.to(a.dtype)
    x1a, y1a, x2a, y2a = a.unbind(-1)
    x1b, y1b, x2b, y2b = b.unbind(-1)
    area_a = (x2a - x1a).relu() * (y2a - y1a).relu()
    area_b = (x2b - x1b).relu() * (y2b - y1b).relu()
    inter = (torch.minimum(x2a, x2b) - torch.maximum(x1a, x1b)).relu() * (
        torch.minimum(y2a, y2b) - torch.maximum(y1a, y1b)
    ).relu()
    iou = _ratio(inter, area_a + area_b - inter)
    if kind == "iou":
        return iou
    ew = torch.maximum(x2a, x2b) - torch.minimum(x1a, x1b)
    eh = torch.maximum(y2a, y2b) - torch.minimum(y1a, y1b)
    center_dist2 = ((x1a + x2a - x1b - x2b) ** 2 + (y1a + y2a - y1b - y2b) ** 2) / 4
    return iou - _ratio(center_dist2, ew**2 + eh**2)


def _greedy_rows_numpy(
    boxes: Tensor, scores: Tensor, labels: Tensor | None, kind: str,
    effect: Callable[[np.ndarray], np.ndarray], hard: bool, score_threshold: float | None,
    limit: int,
) -> tuple[Tensor, Tensor]:
    """:func:`_greedy` on the CPU without a matrix: each pick's IoU/DIoU row over the
    candidates not yet picked, computed with :func:`pairwise_overlap`'s operations in numpy
    (IEEE, so the same values). The pick is swapped to the front of the columns so the rest
    stay one contiguous slice (no copies); dead candidates keep decaying scores below the
    threshold (or -inf when suppressed) and are never picked before live ones."""
    b, area = _numpy_boxes(boxes)
    cols = [b[:, 0].copy(), b[:, 1].copy(), b[:, 2].copy(), b[:, 3].copy(), area.copy()]
    lab = None if labels is None else labels.numpy().copy()
    live = scores.numpy().copy()
    floor = -np.inf if score_threshold is None else score_threshold
    if score_threshold is not None:
        live[live < score_threshold] = -np.inf
    order = np.arange(live.shape[0])
    picks: list[int] = []
    values: list[Any] = []
    p, n = 0, live.shape[0]
    while p < n and len(picks) < limit:
        seg = live[p:]
        t = int(seg.argmax())
        best = seg[t]
        if not best >= floor or best == -np.inf:
            break
        ties = np.flatnonzero(seg == best)
        if ties.size > 1:  # the lowest input index among equal scores, as the matrix path
            t = int(ties[order[p + ties].argmin()])
        q = p + t
        for arr in (*cols, live, order) + ((lab,) if lab is not None else ()):
            arr[p], arr[q] = arr[q], arr[p]
        picks.append(int(order[p]))
        values.append(live[p])
        x1, y1, x2, y2, ar = (c[p + 1:] for c in cols)
        ax1, ay1, ax2, ay2, aa = (c[p] for c in cols)
        iw = np.maximum(np.minimum(ax2, x2) - np.maximum(ax1, x1), 0)
        ih = np.maximum(np.minimum(ay2, y2) - np.maximum(ay1, y1), 0)
        inter = iw * ih
        u = _ratio_numpy(inter, (aa + ar) - inter)
        if kind == "diou":
            ew = np.maximum(ax2, x2) - np.minimum(ax1, x1)
            eh = np.maximum(ay2, y2) - np.minimum(ay1, y1)
            center_dist2 = ((ax1 + ax2 - x1 - x2) ** 2 + (ay1 + ay2 - y1 - y2) ** 2) / 4
            u = u - _ratio_numpy(center_dist2, ew**2 + eh**2)
        hit = effect(u)
        rest = live[p + 1:]
        if lab is not None:
            other = lab[p + 1:] != lab[p]
            hit = np.where(other, False, hit) if hard else np.where(other, 1, hit).astype(
                hit.dtype, copy=False)
        if hard:
            rest[hit] = -np.inf
        else:
            rest *= hit
        p += 1
    if not picks:
        return torch.empty(0, dtype=torch.long), scores[:0]
    return torch.tensor(picks, dtype=torch.long), torch.from_numpy(np.array(values,
                                                                            dtype=live.dtype))


def _ratio_numpy(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    ok = den > _EPS
    return np.where(ok, num / np.where(ok, den, 1), 0).astype(num.dtype, copy=False)


def _numpy_boxes(boxes: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """CPU boxes as numpy (float32 at least, as :func:`pairwise_overlap`) and their areas."""
    if not boxes.is_floating_point() or boxes.dtype.itemsize < 4:
        boxes = boxes.float()
    b = boxes.numpy()
    return b, np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)


def overlap_matrix(boxes: Tensor, kind: Literal["iou", "diou"] = "iou") -> Tensor:
    """``(N, N)`` IoU or DIoU of ``Tensor[N, 4]`` xyxy boxes with each other: the values of
    :func:`pairwise_overlap` ``(boxes[:, None], boxes[None])`` bit for bit, ~2x faster
    (contiguous coordinate columns, in-place steps, per-box terms computed once)."""
    if not boxes.is_floating_point() or boxes.dtype.itemsize < 4:
        boxes = boxes.float()
    x1, y1, x2, y2 = (c.contiguous() for c in boxes.unbind(-1))
    area = (x2 - x1).relu() * (y2 - y1).relu()
    inter = (torch.minimum(x2[:, None], x2[None]) - torch.maximum(x1[:, None], x1[None])).relu_()
    inter.mul_((torch.minimum(y2[:, None], y2[None])
                - torch.maximum(y1[:, None], y1[None])).relu_())
    iou = _ratio(inter, (area[:, None] + area[None]).sub_(inter))
    if kind == "iou":
        return iou
    ew = torch.maximum(x2[:, None], x2[None]) - torch.minimum(x1[:, None], x1[None])
    eh = torch.maximum(y2[:, None], y2[None]) - torch.minimum(y1[:, None], y1[None])
    sx, sy = x1 + x2, y1 + y2  # x1a + x2a - x1b - x2b = ((x1a + x2a) - x1b) - x2b
    dx = (sx[:, None] - x1[None]).sub_(x2[None]).pow_(2)
    dy = (sy[:, None] - y1[None]).sub_(y2[None]).pow_(2)
    center_dist2 = dx.add_(dy).div_(4)
    return iou.sub_(_ratio(center_dist2, ew.pow_(2).add_(eh.pow_(2))))


def _greedy(
    scores: Tensor,
    row: Callable[[Tensor], Tensor],
    matrix: Callable[[], Tensor] | None,
    hard: bool,
    score_threshold: float | None,
    limit: int,
    row_numpy: Callable[[int], tuple[Tensor, Tensor]] | None = None,
) -> tuple[Tensor, Tensor]:
    """The loop Soft- and DIoU-NMS share: pick the best live candidate (lowest index on ties),
    then multiply the scores by its decay row (Soft-NMS) or kill the candidates its
    suppression row marks (hard). Dead and picked candidates carry a ``-inf`` penalty."""
    table = matrix() if matrix is not None else None
    if scores.device.type == "cpu" and (table is not None or row_numpy is not None):
        if table is not None:
            rows = table.numpy()
            return _greedy_numpy(scores, lambda i, alive: rows[i, alive], hard,
                                 score_threshold, limit)
        return row_numpy(limit)
    current = scores.clone()
    penalty = torch.zeros_like(current)
    if score_threshold is not None:
        penalty.masked_fill_(current < score_threshold, float("-inf"))
    picks: list[Tensor] = []
    values: list[Tensor] = []
    for step in range(limit):
        live = current + penalty
        top = live.argmax()
        picks.append(top)
        values.append(live[top])
        effect = table[top] if table is not None else row(top)
        if hard:
            penalty.masked_fill_(effect, float("-inf"))
        else:
            current = current * effect
            penalty.masked_fill_(current < score_threshold, float("-inf"))
        penalty[top] = float("-inf")
        if (step + 1) % SYNC_EVERY == 0 and not bool(torch.isfinite(values[-1])):
            break
    if not picks:
        return torch.empty(0, dtype=torch.long, device=scores.device), scores[:0]
    keep, kept = torch.stack(picks), torch.stack(values)
    found = int(torch.isfinite(kept).sum())  # picks stay valid until the first -inf
    return keep[:found], kept[:found]


def _greedy_numpy(scores: Tensor, effect_of: Callable[[int, np.ndarray], np.ndarray],
                  hard: bool, score_threshold: float | None,
                  limit: int) -> tuple[Tensor, Tensor]:
    """:func:`_greedy` on the CPU in numpy: the same IEEE operations (so bit-identical picks
    and scores), at a fifth of torch's per-call cost; one pick costs a few operations over the
    candidates still alive (compacted as they die). ``effect_of(i, alive)``: the decay
    factors (or suppression flags) of pick ``i`` for the candidates ``alive``."""
    current = scores.numpy().copy()
    alive = np.arange(current.shape[0])
    if score_threshold is not None:
        alive = alive[current >= score_threshold]
    live = current[alive]
    picks: list[int] = []
    values: list[float] = []
    while alive.size and len(picks) < limit:
        top = int(live.argmax())  # first maximum: the lowest index among equal scores
        index = int(alive[top])
        picks.append(index)
        values.append(live[top])
        effect = effect_of(index, alive)
        if hard:
            keep = ~effect
        else:
            live = live * effect
            keep = live >= score_threshold
        keep[top] = False
        alive, live = alive[keep], live[keep]
    keep_t = torch.tensor(picks, dtype=torch.long)
    return keep_t, torch.tensor(np.array(values, dtype=current.dtype)) if picks else scores[:0]


def _use_matrix(n: int, limit: int) -> bool:
    # The matrix costs ~n² work up front, rows ~n per pick: rows win when few picks are wanted.
    return n <= MATRIX_LIMIT and 4 * limit >= n


def diou_nms(
    boxes: Tensor, scores: Tensor, iou_threshold: float, max_keep: int | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """Greedy DIoU-NMS: a box is dropped when its DIoU (IoU minus normalized centre distance)
    with a kept, higher-scoring box (of the same label, when ``labels`` is given) exceeds
    ``iou_threshold``. Returns kept indices in decreasing score order (ties: lower index
    first); stops after ``max_keep`` (same first boxes)."""
    n = boxes.shape[0]
    limit = n if max_keep is None else min(max_keep, n)

    def row(i: Tensor) -> Tensor:
        hit = pairwise_overlap(boxes[i][None], boxes, "diou") > iou_threshold
        return hit if labels is None else hit & (labels == labels[i])

    def matrix() -> Tensor:
        hit = overlap_matrix(boxes, "diou") > iou_threshold
        return hit if labels is None else hit & (labels[:, None] == labels[None])

    def row_numpy(count: int) -> tuple[Tensor, Tensor]:
        return _greedy_rows_numpy(boxes, scores, labels, "diou",
                                  lambda u: u > iou_threshold, True, None, count)

    keep, _ = _greedy(scores, row, matrix if _use_matrix(n, limit) else None, True, None, limit,
                      row_numpy)
    return keep


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    method: Literal["gaussian", "linear"] = "gaussian",
    score_threshold: float = 0.001,
    max_keep: int | None = None,
    labels: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al. 2017, arXiv:1704.04503); per label when ``labels`` is given.

    Repeatedly keeps the highest-scoring remaining box (lower index on ties) and decays the
    others' scores by its IoU ``u``: Gaussian ``s · exp(−u² / sigma)`` (``iou_threshold``
    unused), or linear ``s · (1 − u)`` where ``u > iou_threshold``. Boxes whose score falls
    below ``score_threshold`` are dropped. Returns ``(keep, kept_scores)`` in decreasing score
    order; stops after ``max_keep`` boxes (the first picks do not depend on later ones).
    """
    if method not in ("gaussian", "linear"):
        raise ValueError(f"method={method!r}: expected 'gaussian' or 'linear'")
    n = boxes.shape[0]
    limit = n if max_keep is None else min(max_keep, n)

    def decay(u: Tensor, same: Tensor | None) -> Tensor:
        u = u.to(scores.dtype)
        if method == "gaussian":
            factor = torch.exp(-(u * u) / sigma)
        else:
            factor = torch.where(u > iou_threshold, 1 - u, torch.ones_like(u))
        return factor if same is None else torch.where(same, factor, torch.ones_like(factor))

    def row(i: Tensor) -> Tensor:
        same = None if labels is None else labels == labels[i]
        return decay(pairwise_overlap(boxes[i][None], boxes), same)

    def matrix() -> Tensor:
        same = None if labels is None else labels[:, None] == labels[None]
        return decay(overlap_matrix(boxes), same)

    def effect_numpy(u: np.ndarray) -> np.ndarray:
        # IEEE arithmetic in numpy gives torch's bits; only exp is left to torch (their exp
        # implementations may differ in the last bit)
        u = u.astype(scores.numpy().dtype, copy=False)
        if method == "linear":
            return np.where(u > iou_threshold, 1 - u, 1).astype(u.dtype, copy=False)
        return torch.from_numpy(-(u * u) / sigma).exp_().numpy()

    def row_numpy(count: int) -> tuple[Tensor, Tensor]:
        return _greedy_rows_numpy(boxes, scores, labels, "iou", effect_numpy, False,
                                  score_threshold, count)

    return _greedy(scores, row, matrix if _use_matrix(n, limit) else None, False,
                   score_threshold, limit, row_numpy)


def _per_class_standard(boxes: Tensor, scores: Tensor, labels: Tensor,
                        iou_threshold: float) -> Tensor:
    """Per-class standard NMS of many CPU boxes: the result of one torchvision ``nms`` over the
    float64 class-offset boxes (the "coordinate trick"), bit for bit, at a fraction of its cost.

    torchvision's CPU ``nms`` compares every kept box with every later one, so one pass over
    all classes costs ~ kept x N while one pass per class costs ~ sum over classes of
    kept_c x N_c. The classes are contiguous slices of one stable sort (torchvision's own class
    loop masks all N boxes per class: slow with 80 classes). Each slice runs on the same
    offset float64 coordinates as the single pass (the same IoU bits), and the kept boxes are
    merged as that pass orders them: score down, ties by index (torchvision sorts stably)."""
    shifted = offset_by_class(boxes.double(), labels)
    values = scores.double()
    order = torch.argsort(labels, stable=True)
    counts = torch.unique_consecutive(labels[order], return_counts=True)[1].tolist()
    kept, start = [], 0
    for count in counts:
        index = order[start:start + count]
        kept.append(index[_tv_nms(shifted[index], values[index], iou_threshold)])
        start += count
    keep = torch.cat(kept).sort().values if kept else order[:0]
    return keep[values[keep].sort(descending=True, stable=True).indices]


def per_class_standard_rows(boxes: Tensor, scores: Tensor, labels: Tensor, counts: list[int],
                            rows: list[int], iou_threshold: float) -> dict[int, Tensor]:
    """Per-class standard NMS of several images' candidates at once, as
    :func:`_per_class_standard` of each image alone, bit for bit, with the per-image work
    (offsets, class slices, merging) done once for the whole batch.

    Args:
        boxes: ``(R, K, 4)`` xyxy CPU candidates per image, ``scores`` ``(R, K)`` sorted
            decreasing along each row (as ``topk`` gives them), ``labels`` ``(R, K)``.
        counts: valid candidates per row (a prefix of each row).
        rows: the rows to process.

    Returns:
        ``{row: keep}``: candidate indices kept, in the order :func:`_per_class_standard`
        returns them (score down, ties by index: with sorted scores, increasing index).
    """
    sub = torch.tensor(rows)
    b, v, lab = boxes[sub].double(), scores[sub].double(), labels[sub]
    n = torch.tensor([counts[r] for r in rows])
    valid = torch.arange(b.shape[1]) < n[:, None]
    low = torch.where(valid[..., None], b, torch.inf).amin(dim=(1, 2))
    high = torch.where(valid[..., None], b, -torch.inf).amax(dim=(1, 2))
    # offset_by_class row by row: (boxes - low) + labels * (high - low + 1), same operations
    shifted = (b - low[:, None, None]) + (lab.to(b) * (high - low + 1)[:, None])[..., None]
    lab = lab - lab.min()  # class buckets 0..C-1, C for the padding after the valid prefix
    top = int(lab.max()) + 1
    key = torch.where(valid, lab, top)
    order = torch.argsort(key, dim=1, stable=True)
    per_row = torch.bincount((key + torch.arange(len(rows))[:, None] * (top + 1)).reshape(-1),
                             minlength=len(rows) * (top + 1)).reshape(len(rows), top + 1)
    # class-sorted copies: each class of each row is then a contiguous slice, not a gather
    shifted = shifted.gather(1, order[..., None].expand(-1, -1, 4))
    v = v.gather(1, order)
    out = {}
    for j, (row, class_counts) in enumerate(zip(rows, per_row[:, :top].tolist())):
        kept, start = [], 0
        for count in class_counts:
            if count:
                end = start + count
                keep = _tv_nms(shifted[j, start:end], v[j, start:end], iou_threshold)
                kept.append(order[j, start:end][keep])
                start = end
        out[row] = torch.cat(kept).sort().values if kept else order[j, :0]
    return out


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
            1000 boxes on CPU, what one ``nms`` over float64 class-offset boxes gives, run per
            class: :func:`_per_class_standard`), ``"soft_gaussian"``,
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
        if per_class and boxes.device.type == "cpu" and boxes.shape[0] > PER_CLASS_ROWS_FROM:
            keep = _per_class_standard(boxes, scores, labels, iou_threshold)
        elif per_class:
            keep = _tv_batched_nms(boxes, scores, labels, iou_threshold)
        else:
            keep = _tv_nms(boxes, scores, iou_threshold)
        if max_keep is not None:
            keep = keep[:max_keep]
        return keep, scores[keep]
    groups = labels if per_class else None
    if method == "diou":
        keep = diou_nms(boxes, scores, iou_threshold, max_keep, groups)
        return keep, scores[keep]
    kind = "gaussian" if method == "soft_gaussian" else "linear"
    return soft_nms(boxes, scores, iou_threshold, sigma, kind, score_threshold, max_keep, groups)
