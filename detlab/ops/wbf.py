"""Weighted Boxes Fusion (Solovyev et al. 2021, arXiv:1910.13302) of several models' boxes.

:func:`weighted_boxes_fusion` follows ensemble-boxes' ``weighted_boxes_fusion`` (MIT, v1.0.9)
step for step, in **pixel** xyxy instead of coordinates normalised to [0, 1]: IoU and
score-weighted means do not change under per-axis scaling, so the fused boxes equal
ensemble-boxes' on ``boxes / (w, h, w, h)`` times ``(w, h, w, h)`` (tested to 1e-5).

Per label, boxes are visited by decreasing ``score * weight``; each joins the fused box it
overlaps most if that IoU is ``> iou_thr`` (the fused box is the score-weighted mean of its
members, updated after every join), else it starts a new one. Labels are independent, so one
step handles the next box of every label at once (whole-array operations, no per-box host
synchronisation; numpy on the CPU, see :func:`_cluster`): the number of steps is the largest
per-label box count.

Conventions that differ from ensemble-boxes: no clipping to the image (it clips to [0, 1]);
boxes with x2 < x1 or y2 < y1 are an error (it swaps them with a warning); zero-area boxes are
kept (they never match, so each is its own fused box; it drops them with a warning); equal
``score * weight`` are visited in input order (model 0 first; its order of ties is numpy's
unstable sort, reversed); a fused box whose members all score 0 is their plain mean (its
weighted mean divides 0 by 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

__all__ = ["ConfType", "CONF_TYPES", "weighted_boxes_fusion"]

ConfType = Literal["avg", "max", "box_and_model_avg", "absent_model_aware_avg"]
CONF_TYPES: tuple[str, ...] = get_args(ConfType)


def _as_tensor(x: Any, dtype: torch.dtype, device: torch.device | None) -> Tensor:
    return torch.as_tensor(x, dtype=dtype, device=device)


def weighted_boxes_fusion(
    boxes_list: Sequence[Any],
    scores_list: Sequence[Any],
    labels_list: Sequence[Any],
    weights: Sequence[float] | None = None,
    iou_thr: float = 0.55,
    skip_box_thr: float = 0.0,
    conf_type: ConfType = "avg",
    allows_overflow: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fuse the detections of ``M`` models of one image.

    Args:
        boxes_list: per model ``(N_m, 4)`` xyxy boxes in pixels (tensors or arrays).
        scores_list: per model ``(N_m,)`` scores.
        labels_list: per model ``(N_m,)`` integer labels; only boxes of one label are fused.
        weights: per-model weights (default 1 each); a box counts with ``score * weight``.
        iou_thr: a box joins a fused box when their IoU is ``> iou_thr``.
        skip_box_thr: boxes scoring ``< skip_box_thr`` are left out first.
        conf_type: fused score: ``"avg"`` (mean member score, times ``min(M, n) / sum(w)``
            for ``n`` members, or ``n / sum(w)`` with ``allows_overflow``), ``"max"`` (best
            member score / max weight), ``"box_and_model_avg"`` (mean over members, times the
            weight of the distinct models present / ``sum(w)``), ``"absent_model_aware_avg"``
            (member scores summed over member weights plus the weights of absent models).
        allows_overflow: ``"avg"`` scores may exceed 1 when a model has several members.

    Returns:
        ``(boxes (K, 4), scores (K,), labels (K,) int64)``, float64 on the first model's
        device, sorted by decreasing score.
    """
    m = len(boxes_list)
    if m == 0 or len(scores_list) != m or len(labels_list) != m:
        raise ValueError(f"weighted_boxes_fusion: need one boxes, scores and labels entry per "
                         f"model, got {len(boxes_list)}, {len(scores_list)}, {len(labels_list)}")
    if conf_type not in CONF_TYPES:
        raise ValueError(f"weighted_boxes_fusion: conf_type must be one of {CONF_TYPES}, "
                         f"got {conf_type!r}")
    first = boxes_list[0]
    device = first.device if isinstance(first, Tensor) else None
    f64 = torch.float64
    w = _as_tensor([1.0] * m if weights is None else weights, f64, device)
    if w.shape != (m,) or not bool((w >= 0).all()) or float(w.sum()) <= 0:
        raise ValueError(f"weighted_boxes_fusion: weights must be {m} numbers >= 0 with a "
                         f"positive sum, got {weights!r}")
    boxes, scores, labels, models = [], [], [], []
    for i, (b, s, lab) in enumerate(zip(boxes_list, scores_list, labels_list)):
        b = _as_tensor(b, f64, device).reshape(-1, 4)
        s = _as_tensor(s, f64, device).reshape(-1)
        lab = _as_tensor(lab, torch.long, device).reshape(-1)
        if s.shape[0] != b.shape[0] or lab.shape[0] != b.shape[0]:
            raise ValueError(f"weighted_boxes_fusion: model {i} has {b.shape[0]} boxes, "
                             f"{s.shape[0]} scores and {lab.shape[0]} labels")
        bad = ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).nonzero()
        if bad.numel():
            j = int(bad[0])
            raise ValueError(f"weighted_boxes_fusion: model {i} box {j} {b[j].tolist()} is "
                             "not xyxy (x2 < x1 or y2 < y1)")
        boxes.append(b), scores.append(s), labels.append(lab)
        models.append(torch.full_like(lab, i))
    box, score, label, model = (torch.cat(t) for t in (boxes, scores, labels, models))
    keep = score >= skip_box_thr
    box, score, label, model = box[keep], score[keep], label[keep], model[keep]
    if box.shape[0] == 0:
        return box.new_zeros((0, 4)), score.new_zeros((0,)), label.new_zeros((0,))
    weighted = score * w[model]
    # Visit order: by label, then decreasing weighted score (stable: input order on ties).
    order = torch.sort(-weighted, stable=True).indices
    order = order[torch.sort(label[order], stable=True).indices]
    box, weighted, label, model = box[order], weighted[order], label[order], model[order]
    groups, rank_group, counts = torch.unique_consecutive(
        label, return_inverse=True, return_counts=True)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(label.shape[0], device=label.device) - start[rank_group]
    fused = _cluster(box, weighted, w[model], model, rank_group, rank, counts, m, iou_thr)
    n, conf, wmax_member, wsum, present, coords, active = fused
    total = w.sum()
    mean = conf / n
    if conf_type == "avg":
        out = mean * (n if allows_overflow else torch.clamp(n, max=m)) / total
    elif conf_type == "max":
        out = wmax_member / w.max()
    elif conf_type == "box_and_model_avg":
        out = mean * n / wsum * (present.to(f64) @ w) / total
    else:
        absent = ((~present).to(f64) @ w)
        out = mean * n / (wsum + absent)
    fused_labels = groups[:, None].expand_as(n)[active]
    out, coords = out[active], coords[active]
    order = torch.sort(-out, stable=True).indices
    return coords[order], out[order], fused_labels[order]


def _iou(b: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """IoU of boxes ``b`` ``(G, 4)`` with fused boxes ``fused`` ``(G, C, 4)`` → ``(G, C)``."""
    b = b[:, None]
    iw = np.maximum(np.minimum(b[..., 2], fused[..., 2]) - np.maximum(b[..., 0], fused[..., 0]), 0)
    ih = np.maximum(np.minimum(b[..., 3], fused[..., 3]) - np.maximum(b[..., 1], fused[..., 1]), 0)
    inter = iw * ih
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    area_f = (fused[..., 2] - fused[..., 0]) * (fused[..., 3] - fused[..., 1])
    union = area_b + area_f - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _cluster(box: Tensor, weighted: Tensor, weight: Tensor, model: Tensor, group: Tensor,
             rank: Tensor, counts: Tensor, m: int, iou_thr: float) -> tuple[Tensor, ...]:
    """Sequential WBF clustering of every group (label) at once, one box per group a step.

    Runs in numpy on the CPU (a step is a dozen operations on ``(groups, clusters)`` arrays;
    numpy's per-call cost is a fraction of torch's) and returns tensors on ``box``'s device:
    per (group, cluster) slot the member count, summed weighted score, best weighted score,
    summed weight, which models are present ``(G, C, M)``, the fused coordinates and which
    slots hold a cluster."""
    device = box.device
    box_np, ws_np, w_np, model_np = (t.cpu().numpy() for t in (box, weighted, weight, model))
    group_np, rank_np = group.cpu().numpy(), rank.cpu().numpy()
    g, c = int(counts.shape[0]), int(counts.max())
    if c > 8 * g:  # few labels, many boxes: one label after the other, scalar updates
        out = _cluster_each(box_np, ws_np, w_np, model_np, counts.cpu().numpy(), m, iou_thr)
        return tuple(torch.from_numpy(a).to(device) for a in out)
    table = np.full((g, c), -1, dtype=np.int64)  # box index by (group, rank)
    table[group_np, rank_np] = np.arange(box_np.shape[0])
    coord_sum = np.zeros((g, c, 4))
    plain_sum = np.zeros((g, c, 4))
    fused = np.zeros((g, c, 4))
    conf, best, wsum, n = (np.zeros((g, c)) for _ in range(4))
    present = np.zeros((g, c, m), dtype=bool)
    clusters = np.zeros(g, dtype=np.int64)
    slots = np.arange(c)
    for step in range(c):
        idx = table[:, step]
        r = np.flatnonzero(idx >= 0)  # groups that still have a box at this rank
        j = idx[r]
        b = box_np[j]
        k = max(int(clusters.max()), 1)  # only slots that may hold a cluster
        iou = _iou(b, fused[:, :k] if r.size == g else fused[r, :k])
        iou[slots[None, :k] >= clusters[r, None]] = -1.0
        best_slot = iou.argmax(axis=1)  # first maximum, as ensemble-boxes' np.argmax
        matched = iou[np.arange(r.size), best_slot] > iou_thr
        t = np.where(matched, best_slot, clusters[r])
        ws = ws_np[j]
        coord_sum[r, t] += ws[:, None] * b
        plain_sum[r, t] += b
        conf[r, t] += ws
        best[r, t] = np.maximum(best[r, t], ws)
        wsum[r, t] += w_np[j]
        n[r, t] += 1
        present[r, t, model_np[j]] = True
        total = conf[r, t]
        ok = total > 0
        fused[r, t] = np.where(ok[:, None], coord_sum[r, t] / np.where(ok, total, 1.0)[:, None],
                               plain_sum[r, t] / n[r, t][:, None])
        clusters[r] += ~matched
    active = slots[None] < clusters[:, None]
    out = (n, conf, best, wsum, present, fused, active)
    return tuple(torch.from_numpy(a).to(device) for a in out)


def _cluster_each(box: np.ndarray, ws: np.ndarray, w: np.ndarray, model: np.ndarray,
                  counts: np.ndarray, m: int, iou_thr: float) -> tuple[np.ndarray, ...]:
    """:func:`_cluster` one group after the other (boxes sorted by group, then visit order):
    the IoU against the group's fused boxes is one numpy pass, the running sums are Python
    floats. Same arithmetic (float64, same order), same results."""
    g, c = counts.shape[0], int(counts.max())
    n, conf, best, wsum = (np.zeros((g, c)) for _ in range(4))
    present = np.zeros((g, c, m), dtype=bool)
    fused = np.zeros((g, c, 4))
    active = np.zeros((g, c), dtype=bool)
    start = 0
    for gi, count in enumerate(counts.tolist()):
        coords = fused[gi]  # (c, 4) view, filled slot by slot
        sums: list[list[float]] = []
        plain: list[list[float]] = []
        k = 0
        for j in range(start, start + count):
            b = box[j].tolist()
            t = -1
            if k:
                iou = _iou(box[j][None], coords[None, :k])[0]
                t = int(iou.argmax())
                if not iou[t] > iou_thr:
                    t = -1
            s = float(ws[j])
            if t < 0:
                t, k = k, k + 1
                sums.append([0.0] * 4)
                plain.append([0.0] * 4)
            row, prow = sums[t], plain[t]
            for q in range(4):
                row[q] += s * b[q]
                prow[q] += b[q]
            conf[gi, t] += s
            best[gi, t] = max(best[gi, t], s)
            wsum[gi, t] += w[j]
            n[gi, t] += 1
            present[gi, t, model[j]] = True
            total = float(conf[gi, t])
            coords[t] = ([v / total for v in row] if total > 0
                         else [v / float(n[gi, t]) for v in prow])
        active[gi, :k] = True
        start += count
    return n, conf, best, wsum, present, fused, active
