"""Sliced (SAHI-style) inference settings and the merge of overlapping tile detections.

The recipe's ``inference`` section holds the settings, read by the one inference loop of
``detlab eval``, ``predict`` and ``sweep`` (:mod:`detlab.engine.sliced`)::

    inference = dict(slicing=dict(type="SlicedInference", slice_height=640, overlap=0.2,
                                  merge="greedy_nmm", match_metric="ios", match_threshold=0.5))

Merging follows SAHI (``sahi.postprocess.combine``, v0.12): boxes are visited by decreasing
score (ties: smaller x1, y1, x2, y2 first); two boxes *match* when their IoU or IoS
(intersection over the smaller area) is ``>= match_threshold`` (and they have the same label
unless ``class_agnostic``).

* ``"nms"``: a kept box drops every later box matching it.
* ``"greedy_nmm"``: a kept box claims every later unclaimed box matching it; the claimed boxes
  are then merged into it one by one (score order), each only if it still matches the
  growing merged box.
* ``"nmm"``: like greedy NMM, but a claimed box claims in turn the boxes matching it
  (transitive groups).

A merge takes the union of the two boxes, the higher score and that box's label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..checks import check_section, is_int, is_number
from ..errors import ConfigError
from ..registry import POSTPROCESSORS

__all__ = ["SlicedInference", "inference_section", "INFERENCE_KEYS", "MERGE_METHODS",
           "MATCH_METRICS", "BLEND_MODES", "NETWORK_KEYS", "merge_detections", "pairwise_match"]

MERGE_METHODS = ("nms", "nmm", "greedy_nmm")
MATCH_METRICS = ("iou", "ios")
BLEND_MODES = ("gaussian", "linear", "constant")
# Settings that change the tiles the network sees; the others only change the merge (or the
# blend of dense maps), so ``detlab sweep`` reuses the tile outputs for them.
NETWORK_KEYS = ("slice_height", "slice_width", "overlap", "batch_size")
KEY = "inference.slicing"


@POSTPROCESSORS.register
@dataclass(frozen=True)
class SlicedInference:
    """Settings of sliced inference (``inference.slicing`` in a recipe).

    Args:
        slice_height, slice_width: tile size in ORIGINAL-image pixels (``slice_width`` defaults
            to ``slice_height``); each tile is then preprocessed like a val image (the val
            dataset's resize, pad and normalization). A frame smaller than a tile is one tile.
        overlap: fraction of a tile shared with its neighbour, in [0, 1), both axes.
        full_image: also predict the whole frame (the usual val input) and merge it in.
        batch_size: tiles per forward pass; ``None``: 16 on a GPU, 2 on the CPU (a CPU runs
            a batch of eight 640 px tiles ~1.5x slower than eight single tiles: the
            activations leave the caches; a GPU needs the batch to be busy).
        merge: ``"greedy_nmm"``, ``"nmm"`` or ``"nms"`` (module docstring); box heads.
        match_metric: ``"ios"`` (intersection over the smaller box) or ``"iou"``.
        match_threshold: boxes match when the metric is ``>=`` this, in [0, 1].
        class_agnostic: match boxes of different labels too.
        blend: weights of overlapping tiles' probability maps (segmentation, DB text):
            ``"gaussian"``, ``"linear"`` or ``"constant"``
            (:func:`detlab.ops.slicing.blend_weights`); with ``full_image`` the whole-frame map
            is averaged in with equal weight.
        during_training: also slice the validation of ``detlab train`` (off by default: it
            costs a forward per tile every validation epoch, ~``tiles per frame`` times the
            unsliced validation), so ``val/*`` and the ``best.ckpt`` choice use the metric
            ``detlab eval`` reports with these settings (same tiles, same merge, the test
            post-processing; with ``inference.tta`` the same views too).
    """

    slice_height: int = 640
    slice_width: int | None = None
    overlap: float = 0.2
    full_image: bool = True
    batch_size: int | None = None
    merge: str = "greedy_nmm"
    match_metric: str = "ios"
    match_threshold: float = 0.5
    class_agnostic: bool = False
    blend: str = "gaussian"
    during_training: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(f"{KEY}.{name}={getattr(self, name)!r}: expected {expected}")

        for name in ("slice_height", "slice_width", "batch_size"):
            value = getattr(self, name)
            if name in ("slice_width", "batch_size") and value is None:
                continue
            if not is_int(value) or value < 1:
                raise bad(name, "a positive int (pixels)" if name != "batch_size"
                          else "a positive int (tiles per forward pass)")
        ov = self.overlap
        if not is_number(ov) or not 0 <= ov < 1:
            raise bad("overlap", "a number in [0, 1)")
        mt = self.match_threshold
        if not is_number(mt) or not 0 <= mt <= 1:
            raise bad("match_threshold", "a number in [0, 1]")
        for name in ("full_image", "class_agnostic", "during_training"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")
        for name, allowed in (("merge", MERGE_METHODS), ("match_metric", MATCH_METRICS),
                              ("blend", BLEND_MODES)):
            if getattr(self, name) not in allowed:
                raise bad(name, "one of " + ", ".join(repr(a) for a in allowed))

    def tiles_per_forward(self, device: Any) -> int:
        """``batch_size``, or its default for ``device`` (see the class docstring)."""
        if self.batch_size is not None:
            return self.batch_size
        return 16 if torch.device(device).type == "cuda" else 2

    @property
    def tile_size(self) -> tuple[int, int]:
        """``(height, width)`` of a tile in original pixels."""
        return self.slice_height, self.slice_width or self.slice_height

    @classmethod
    def from_config(cls, cfg: Any) -> SlicedInference | None:
        """Settings from a recipe's ``inference.slicing`` (a dict, an instance or ``None``)."""
        if cfg is None or isinstance(cfg, SlicedInference):
            return cfg
        args = check_section(KEY, cfg, [f.name for f in fields(cls)],
                             "a dict of SlicedInference arguments")
        kind = cfg.get("type", "SlicedInference")
        if kind not in ("SlicedInference", cls):
            raise ConfigError(f"{KEY}.type={kind!r}: expected 'SlicedInference'")
        return cls(**args)

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any]) -> SlicedInference | None:
        """The recipe's ``inference.slicing`` settings, or ``None`` (no slicing)."""
        return cls.from_config(inference_section(recipe).get("slicing"))

    def to_config(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        return {"type": "SlicedInference", **asdict(self)}

    def network_settings(self) -> tuple[Any, ...]:
        """The values that change what the network sees (:data:`NETWORK_KEYS`)."""
        return (self.tile_size, float(self.overlap), self.batch_size)

    def merge_boxes(self, boxes: Tensor, scores: Tensor, labels: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor]:
        """Merge one frame's tile detections with these settings (:func:`merge_detections`)."""
        return merge_detections(boxes, scores, labels, self.merge, self.match_metric,
                                self.match_threshold, self.class_agnostic)


def _overlap(box: np.ndarray, area: np.ndarray, boxes: np.ndarray, areas: np.ndarray,
             metric: str) -> np.ndarray:
    """float32 IoU / IoS of each ``box`` (``(..., 1, 4)``) with ``boxes`` (``(M, 4)``)."""
    iw = np.clip(np.minimum(box[..., 2], boxes[:, 2]) - np.maximum(box[..., 0], boxes[:, 0]),
                 0, None)
    ih = np.clip(np.minimum(box[..., 3], boxes[:, 3]) - np.maximum(box[..., 1], boxes[:, 1]),
                 0, None)
    inter = iw * ih
    denom = area + areas - inter if metric == "iou" else np.minimum(area, areas)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, inter / np.where(denom > 0, denom, 1), 0.0)
    return out.astype(np.float32)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def pairwise_match(boxes: np.ndarray, metric: str) -> np.ndarray:
    """``(N, N)`` float32 IoU or IoS (intersection over the smaller area) of xyxy ``boxes``
    (0 where the denominator is 0)."""
    area = _areas(boxes)
    return _overlap(boxes[:, None, :], area[:, None], boxes, area, metric)


def _match(a: list[float], b: list[float], metric: str, threshold: float) -> bool:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    denom = area_a + area_b - inter if metric == "iou" else min(area_a, area_b)
    return denom > 0 and inter / denom >= threshold


def _greedy(b: np.ndarray, lab: np.ndarray, order: np.ndarray, metric: str, threshold: float,
            class_agnostic: bool) -> list[tuple[int, list[int]]]:
    """NMS / greedy NMM visit: ``(kept box, later unclaimed boxes matching it)`` per kept box.
    Only the kept boxes' rows of the match matrix are computed (kept << N)."""
    area = _areas(b)
    claimed = np.zeros(len(order), bool)
    out = []
    for pos, idx in enumerate(order):
        if claimed[idx]:
            continue
        rest = order[pos + 1:]
        rest = rest[~claimed[rest]]
        hit = _overlap(b[idx][None], area[idx], b[rest], area[rest], metric) >= threshold
        if not class_agnostic:
            hit &= lab[rest] == lab[idx]
        take = rest[hit]
        claimed[take] = True
        out.append((int(idx), take.tolist()))
    return out


def _groups(matches: np.ndarray, order: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
            method: str) -> list[tuple[int, list[int]]]:
    """NMM: ``(keeper, claimed boxes in claim order)`` per group (module docstring)."""
    n = len(order)
    # nmm: box i may claim box j when j scores lower, or ties and sorts no later (SAHI's rule)
    lower = scores[:, None] > scores[None]
    tie = scores[:, None] == scores[None]
    before, equal = np.zeros((n, n), bool), np.ones((n, n), bool)
    for col in range(4):
        before |= equal & (boxes[:, col][:, None] < boxes[:, col][None])
        equal &= boxes[:, col][:, None] == boxes[:, col][None]
    claims = matches & (lower | (tie & ~before))
    np.fill_diagonal(claims, False)
    owner = np.full(n, -1)
    members: dict[int, list[int]] = {}
    for idx in order:
        idx = int(idx)
        if owner[idx] < 0:
            owner[idx] = idx
            members[idx] = []
        keeper = int(owner[idx])
        for j in np.flatnonzero(claims[idx] & (owner < 0)):
            members[keeper].append(int(j))
            owner[j] = keeper
    return list(members.items())


def merge_detections(boxes: Tensor, scores: Tensor, labels: Tensor, method: str = "greedy_nmm",
                     metric: str = "ios", threshold: float = 0.5, class_agnostic: bool = False
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Merge the ``(N, 4)`` xyxy ``boxes`` (frame pixels), ``(N,)`` ``scores`` and int64
    ``labels`` of all tiles of one frame (module docstring for the rules).

    Returns ``(boxes (K, 4), scores (K,), labels (K,))`` sorted by decreasing score, on the
    inputs' device and dtypes.
    """
    if method not in MERGE_METHODS:
        raise ConfigError(f"{KEY}.merge={method!r}: expected one of {MERGE_METHODS}")
    if metric not in MATCH_METRICS:
        raise ConfigError(f"{KEY}.match_metric={metric!r}: expected one of {MATCH_METRICS}")
    n = int(boxes.shape[0])
    if n == 0:
        return boxes.reshape(0, 4), scores.reshape(0), labels.reshape(0)
    if not class_agnostic and len(classes := torch.unique(labels)) > 1:
        # Classes never match each other: merge each on its own (N²/C pairs, not N²).
        outs = [merge_detections(boxes[labels == c], scores[labels == c], labels[labels == c],
                                 method, metric, threshold, True) for c in classes]
        order = torch.cat([o[1] for o in outs]).argsort(descending=True, stable=True)
        return tuple(torch.cat([o[k] for o in outs])[order] for k in range(3))  # type: ignore
    b = boxes.detach().double().cpu().numpy()
    s = scores.detach().double().cpu().numpy()
    lab = labels.detach().cpu().numpy()
    order = np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], -s))
    if method == "nmm":
        matches = pairwise_match(b, metric) >= threshold
        if not class_agnostic:
            matches &= lab[:, None] == lab[None]
        groups = _groups(matches, order, b, s, method)
    else:
        groups = _greedy(b, lab, order, metric, threshold, class_agnostic)
    if method == "nms":
        index = torch.as_tensor([k for k, _ in groups], dtype=torch.long, device=boxes.device)
        return boxes[index], scores[index], labels[index]
    out_boxes, out_scores, out_labels = [], [], []
    for keeper, claimed in groups:
        box, score, label = b[keeper].tolist(), float(s[keeper]), int(lab[keeper])
        for j in claimed:
            other = b[j].tolist()
            if _match(box, other, metric, threshold):
                box = [min(box[0], other[0]), min(box[1], other[1]),
                       max(box[2], other[2]), max(box[3], other[3])]
                label = label if score > s[j] else int(lab[j])
                score = max(score, float(s[j]))
        out_boxes.append(box)
        out_scores.append(score)
        out_labels.append(label)
    rank = sorted(range(len(out_scores)), key=lambda i: -out_scores[i])
    return (torch.tensor([out_boxes[i] for i in rank], dtype=boxes.dtype,
                         device=boxes.device).reshape(-1, 4),
            torch.tensor([out_scores[i] for i in rank], dtype=scores.dtype, device=scores.device),
            torch.tensor([out_labels[i] for i in rank], dtype=labels.dtype, device=labels.device))


INFERENCE_KEYS = ("channels_last", "ensemble", "fuse_bn", "precision", "slicing", "tta")


def inference_section(recipe: Mapping[str, Any]) -> Mapping[str, Any]:
    """The recipe's ``inference`` section (``{}`` when absent), checked once for every reader:
    ``slicing`` (:class:`SlicedInference`), ``tta`` and ``ensemble``
    (:mod:`detlab.engine.ensemble`)."""
    section = recipe.get("inference")
    if section is None:
        return {}
    check_section("inference", section, INFERENCE_KEYS,
                  f"a dict with keys from {list(INFERENCE_KEYS)}", ignore=())
    return section
