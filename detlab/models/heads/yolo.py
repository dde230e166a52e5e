"""``YOLOHead``: anchor-free, decoupled, DFL box distribution — the YOLOv8 detection head.

Box distributions: Generalized Focal Loss (Li et al. 2020, arXiv:2006.04388); task-aligned
assignment: TOOD (Feng et al. 2021, arXiv:2108.07755); anchor points: FCOS (arXiv:1904.01355).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ...assigners.base import points_in_boxes
from ...errors import ConfigError, DataError
from ...ops.anchor_points import boxes_to_distances, distances_to_boxes, grid_points
from ...ops.coords import boxes_to_original
from ...registry import ASSIGNERS, HEADS, LOSSES, POSTPROCESSORS
from ...structures import Batch, Prediction
from ..necks.blocks import conv_norm_act, norm_layer
from .base import Head

__all__ = ["YOLOHead", "pad_targets", "to_original"]

# YOLOv8's loss gains (box 7.5, cls 0.5, dfl 1.5) as each component's ``weight``.
DEFAULT_ASSIGNER = dict(type="TaskAlignedAssigner", topk=10, alpha=0.5, beta=6.0)
DEFAULT_CLS_LOSS = dict(type="SigmoidBCELoss", weight=0.5)
DEFAULT_BOX_LOSS = dict(type="CIoULoss", weight=7.5)
DEFAULT_DFL_LOSS = dict(type="DFLoss", weight=1.5)
DEFAULT_POSTPROCESS = dict(type="BoxPostProcessor", score_threshold=0.001, iou_threshold=0.7,
                           max_detections=300)


@HEADS.register
class YOLOHead(Head):
    """Per level: a classification branch and a box branch (two 3x3 conv-norm-SiLU, then 1x1).

    Every cell of every level is an anchor point (its centre, in input pixels). The box branch
    predicts, per side (left, top, right, bottom), logits over ``reg_max`` bins; the distance is
    the softmax expectation ``sum_k softmax_k * k`` (``proj`` buffer) times the level stride, so
    one level covers distances up to ``(reg_max - 1) * stride``.

    Training (:meth:`compute_loss`): the ``assigner`` matches anchors to ground truth from the
    detached predictions and gives soft class targets; ``cls_loss`` runs on all anchors,
    ``box_loss`` (on xyxy pixel boxes) and ``dfl_loss`` (on ltrb distances in bins) on the
    positives weighted by their target score, and all three are divided by the sum of target
    scores (at least 1), as YOLOv8 does. Anchors inside ``ignore`` boxes that are not positive
    get no classification loss. Keys: ``loss_cls``, ``loss_box``, ``loss_dfl`` (fixed, so runs
    with different loss types log comparable columns). Each loss call also sets
    ``last_stats`` (0-d tensors: ``num_pos`` positive anchors, ``num_gt`` boxes,
    ``num_gt_below_stride``) and ``score_prior`` is the initial class probability, both read by
    :class:`~detlab.engine.diagnostics.DiagnosticsCallback`.

    Args:
        in_channels, strides: per level, given by ``Model`` from the neck (any levels, P2 too).
        num_classes: foreground classes (sigmoid per class, no background class).
        reg_max: bins per box side (YOLOv8: 16).
        cls_channels, reg_channels: branch widths; default YOLOv8's
            ``max(in_channels[0], min(num_classes, 100))`` and
            ``max(16, in_channels[0] // 4, 4 * reg_max)``.
        norm: normalization in the branches.
        assigner: ``ASSIGNERS`` config called as ``assigner(scores (B, A, C), boxes (B, A, 4),
            points (A, 2), gt_labels, gt_boxes, gt_valid, anchor_strides=, num_anchors_per_level=)``
            (``TaskAlignedAssigner``, ``ATSSAssigner``).
        cls_loss: ``LOSSES`` config called as ``(logits (N, C), targets (N, C), weight (N,),
            avg_factor)`` (``SigmoidBCELoss``, ``VarifocalLoss``, ``QualityFocalLoss``).
        box_loss: called as ``(pred (P, 4), target (P, 4), weight (P,), avg_factor)``, xyxy px
            (``CIoULoss``, ``WIoULoss``, ``InnerIoULoss`` …).
        dfl_loss: called as ``(logits (P, 4, reg_max), target (P, 4), weight, avg_factor)``;
            built with this ``reg_max`` unless it sets its own (which must match).
        postprocess: ``POSTPROCESSORS`` config called as ``batched(boxes (B, A, 4), scores (B, A,
            C))``, stored as ``self.postprocessor``.
        prior_prob: initial class probability of every anchor (RetinaNet, arXiv:1708.02002);
            ``None`` uses YOLOv8's per-level rule, 5 objects per class on a
            ``prior_image_size``² image: bias ``log(5 / C / (prior_image_size / stride)²)``.
        prior_image_size: image side of that rule, px.

    ``forward(feats)`` returns ``cls_logits`` ``(B, A, C)``, ``box_dist`` ``(B, A, 4 * reg_max)``
    (side-major: left bins, top bins, …), ``anchor_points`` ``(A, 2)`` (x, y) px, ``strides``
    ``(A,)`` px and ``num_anchors_per_level`` (list of ints), anchors level by level, row-major.
    """

    postprocess_args: tuple[str, ...] = ("postprocess",)

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        reg_max: int = 16,
        cls_channels: int | None = None,
        reg_channels: int | None = None,
        norm: Literal["batch", "group", "none"] = "batch",
        assigner: Any = None,
        cls_loss: Any = None,
        box_loss: Any = None,
        dfl_loss: Any = None,
        postprocess: Any = None,
        prior_prob: float | None = None,
        prior_image_size: int = 640,
    ) -> None:
        super().__init__()
        in_channels, strides = list(in_channels), list(strides)
        if not in_channels or len(in_channels) != len(strides) or not all(
            _is_pos_int(v) for v in in_channels + strides
        ):
            raise ConfigError(
                f"YOLOHead: in_channels {in_channels!r} and strides {strides!r} must be equally "
                "long non-empty lists of positive ints (one per level)"
            )
        for arg, value, low in (("num_classes", num_classes, 1), ("reg_max", reg_max, 2),
                                ("prior_image_size", prior_image_size, 1)):
            if not _is_pos_int(value) or value < low:
                raise ConfigError(f"YOLOHead: {arg} must be an int >= {low}, got {value!r}")
        if prior_prob is not None and not (
            isinstance(prior_prob, (int, float)) and 0 < prior_prob < 1
        ):
            raise ConfigError(f"YOLOHead: prior_prob must be in (0, 1) or None, got {prior_prob!r}")
        cls_channels = cls_channels or max(in_channels[0], min(num_classes, 100))
        reg_channels = reg_channels or max(16, in_channels[0] // 4, 4 * reg_max)
        for arg, value in (("cls_channels", cls_channels), ("reg_channels", reg_channels)):
            if not _is_pos_int(value):
                raise ConfigError(f"YOLOHead: {arg} must be a positive int, got {value!r}")
        norm_fn = norm_layer(norm, "YOLOHead")
        self.num_classes, self.reg_max, self.strides = num_classes, reg_max, strides

        def branch(c_in: int, width: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(conv_norm_act(c_in, width, 3, norm=norm_fn),
                                 conv_norm_act(width, width, 3, norm=norm_fn),
                                 nn.Conv2d(width, c_out, 1))

        self.cls_branches = nn.ModuleList(branch(c, cls_channels, num_classes) for c in in_channels)
        self.reg_branches = nn.ModuleList(branch(c, reg_channels, 4 * reg_max) for c in in_channels)
        self.register_buffer("proj", torch.arange(reg_max, dtype=torch.float32), persistent=False)

        self.assigner = ASSIGNERS.build(assigner or DEFAULT_ASSIGNER, key="model.head.assigner")
        self.cls_loss = LOSSES.build(cls_loss or DEFAULT_CLS_LOSS, key="model.head.cls_loss")
        self.box_loss = LOSSES.build(box_loss or DEFAULT_BOX_LOSS, key="model.head.box_loss")
        self.dfl_loss = LOSSES.build(dfl_loss or DEFAULT_DFL_LOSS, key="model.head.dfl_loss",
                                     reg_max=reg_max)
        if getattr(self.dfl_loss, "reg_max", reg_max) != reg_max:
            raise ConfigError(
                f"YOLOHead: dfl_loss.reg_max={self.dfl_loss.reg_max} differs from the head's "
                f"reg_max={reg_max}; set one of them (the loss takes the head's by default)"
            )
        self.postprocessor = POSTPROCESSORS.build(postprocess or DEFAULT_POSTPROCESS,
                                                  key="model.head.postprocess")
        for arg, obj in (("assigner", self.assigner), ("cls_loss", self.cls_loss),
                         ("box_loss", self.box_loss), ("dfl_loss", self.dfl_loss)):
            if not callable(obj):
                raise ConfigError(f"YOLOHead: {arg} must be a config dict or callable, got {obj!r}")
        if not callable(getattr(self.postprocessor, "batched", None)):
            raise ConfigError("YOLOHead: postprocess must build an object with batched(boxes, "
                              f"scores) (e.g. BoxPostProcessor), got {self.postprocessor!r}")
        self._init_biases(prior_prob, prior_image_size)

    def _init_biases(self, prior_prob: float | None, image_size: int) -> None:
        self.score_prior = 0.0  # highest initial class probability: the collapse check's prior
        for cls_branch, reg_branch, s in zip(self.cls_branches, self.reg_branches, self.strides):
            if prior_prob is None:  # YOLOv8: ~5 objects per class on an image_size² image
                bias = math.log(5 / self.num_classes / (image_size / s) ** 2)
            else:
                bias = math.log(prior_prob / (1 - prior_prob))
            self.score_prior = max(self.score_prior, 1.0 / (1.0 + math.exp(-bias)))
            nn.init.constant_(cls_branch[-1].bias, bias)
            nn.init.constant_(reg_branch[-1].bias, 1.0)  # equal bins: mid-range distances

    # -- raw outputs ----------------------------------------------------------------------------
    def forward(self, feats: list[Tensor]) -> dict[str, Any]:
        """Concatenated per-anchor outputs of all levels (see the class docstring)."""
        if len(feats) != len(self.cls_branches):
            raise ValueError(f"YOLOHead built for {len(self.cls_branches)} levels, got "
                             f"{len(feats)} feature maps")
        cls, reg, sizes = [], [], []
        for x, cls_branch, reg_branch in zip(feats, self.cls_branches, self.reg_branches):
            cls.append(cls_branch(x).flatten(2))
            reg.append(reg_branch(x).flatten(2))
            sizes.append((int(x.shape[-2]), int(x.shape[-1])))
        points, point_strides = grid_points(sizes, self.strides, device=feats[0].device)
        return {
            "cls_logits": torch.cat(cls, dim=2).transpose(1, 2),
            "box_dist": torch.cat(reg, dim=2).transpose(1, 2),
            "anchor_points": points,
            "strides": point_strides,
            "num_anchors_per_level": [h * w for h, w in sizes],
        }

    def decode(self, box_dist: Tensor, points: Tensor, strides: Tensor) -> Tensor:
        """xyxy px boxes ``(B, A, 4)`` from ``box_dist`` ``(B, A, 4 * reg_max)``: softmax
        expectation over the bins of each side, times the anchor's stride."""
        b, a = box_dist.shape[:2]
        probs = box_dist.float().reshape(b, a, 4, self.reg_max).softmax(dim=-1)
        # elementwise, not a matmul: autocast would run a matmul in half precision
        distances = (probs * self.proj).sum(dim=-1) * strides[:, None]
        return distances_to_boxes(points, distances)

    # -- loss -----------------------------------------------------------------------------------
    def compute_loss(self, outputs: Mapping[str, Any], batch: Batch) -> dict[str, Tensor]:
        """``loss_cls``, ``loss_box``, ``loss_dfl`` (each already weighted by its component)."""
        cls_logits, box_dist = outputs["cls_logits"], outputs["box_dist"]
        points, strides = outputs["anchor_points"], outputs["strides"]
        b, a, c = cls_logits.shape
        pred_boxes = self.decode(box_dist, points, strides)
        gt_boxes, gt_labels, gt_valid, ignored = pad_targets(batch.targets, cls_logits.device)
        assign = self.assigner(
            cls_logits.detach().float().sigmoid(), pred_boxes.detach(), points,
            gt_labels, gt_boxes, gt_valid & ~ignored,
            anchor_strides=strides, num_anchors_per_level=outputs["num_anchors_per_level"],
        )
        target_scores = assign.target_scores.float()
        # Sum of soft targets (>= 1): YOLOv8's normalizer, so the loss scale does not depend on
        # how many anchors a box gets.
        norm = target_scores.sum().clamp(min=1.0)
        fg = assign.fg_mask
        # Per-step counts for the collapse check (DiagnosticsCallback), not loss terms.
        used = gt_valid & ~ignored
        sides = (gt_boxes[..., 2:] - gt_boxes[..., :2]).amin(dim=-1)
        self.last_stats = {"num_pos": fg.sum(), "num_gt": used.sum(),
                           "num_gt_below_stride": (used & (sides < min(self.strides))).sum()}

        cls_weight = None
        if ignored.any():
            in_ignore = points_in_boxes(points, gt_boxes.float(), ignored).any(dim=1)
            cls_weight = (~(in_ignore & ~fg)).float().reshape(-1)
        loss_cls = self.cls_loss(cls_logits.reshape(b * a, c), target_scores.reshape(b * a, c),
                                 weight=cls_weight, avg_factor=norm)

        box_weight = target_scores.sum(dim=-1)[fg]
        target_boxes = assign.target_boxes[fg].float()
        loss_box = self.box_loss(pred_boxes[fg], target_boxes, weight=box_weight, avg_factor=norm)
        pos_points = points[None].expand(b, a, 2)[fg]
        pos_strides = strides[None].expand(b, a)[fg]
        target_dist = boxes_to_distances(pos_points, target_boxes) / pos_strides[:, None]
        loss_dfl = self.dfl_loss(box_dist[fg].reshape(-1, 4, self.reg_max), target_dist,
                                 weight=box_weight, avg_factor=norm)
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_dfl": loss_dfl}

    # -- predictions ----------------------------------------------------------------------------
    def postprocess(
        self, outputs: Mapping[str, Any], batch: Batch, stage: str = "test"
    ) -> list[Prediction]:
        """Decode, run the post-processor, map boxes back to original pixels (``meta`` scale and
        pad: ``orig = (input - pad) / scale``) and clip them to ``orig_size``."""
        scores = outputs["cls_logits"].detach().float().sigmoid()
        boxes = self.decode(outputs["box_dist"].detach(), outputs["anchor_points"],
                            outputs["strides"])
        detections = self.postprocessor.batched(boxes, scores)
        metas = batch.meta or [{} for _ in detections]
        return [Prediction(boxes=to_original(det_boxes, meta), scores=det_scores, labels=labels)
                for (det_boxes, det_scores, labels), meta in zip(detections, metas)]


def to_original(boxes: Tensor, meta: Mapping[str, Any]) -> Tensor:
    """xyxy input-pixel ``boxes`` ``(N, 4)`` → original pixels clipped to ``[0, w] x [0, h]``
    of ``orig_size`` (:func:`detlab.ops.coords.boxes_to_original`)."""
    return boxes_to_original(boxes, meta)


def pad_targets(
    targets: Sequence[Mapping[str, Any]], device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stack per-image ``boxes`` (N_i, 4) xyxy px / ``labels`` (N_i,) / optional ``ignore``
    (N_i,) into ``(B, G, 4)`` float32, ``(B, G)`` int64, ``valid (B, G)`` and ``ignore (B, G)``
    bool, ``G = max N_i`` (padding rows invalid)."""
    b = len(targets)
    g = 0
    for i, t in enumerate(targets):
        boxes, labels = t.get("boxes"), t.get("labels")
        if not isinstance(boxes, Tensor) or not isinstance(labels, Tensor) or boxes.dim() != 2 \
                or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:1]:
            raise DataError(
                f"YOLOHead: target {i} needs 'boxes' (N, 4) and 'labels' (N,) tensors, got "
                f"{_shape(boxes)} and {_shape(labels)}"
            )
        g = max(g, int(boxes.shape[0]))
    gt_boxes = torch.zeros(b, g, 4, device=device)
    gt_labels = torch.zeros(b, g, dtype=torch.long, device=device)
    valid = torch.zeros(b, g, dtype=torch.bool, device=device)
    ignore = torch.zeros(b, g, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = int(t["boxes"].shape[0])
        gt_boxes[i, :n] = t["boxes"].to(device, torch.float32)
        gt_labels[i, :n] = t["labels"].to(device, torch.long)
        valid[i, :n] = True
        if isinstance(t.get("ignore"), Tensor) and t["ignore"].numel() == n:
            ignore[i, :n] = t["ignore"].to(device, torch.bool)
    return gt_boxes, gt_labels, valid, ignore


def _shape(x: Any) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
