"""``YOLOHead``: anchor-free, decoupled, DFL box distribution — the YOLOv8 detection head.

Box distributions: Generalized Focal Loss (Li et al. 2020, arXiv:2006.04388); task-aligned
assignment: TOOD (Feng et al. 2021, arXiv:2108.07755); anchor points: FCOS (arXiv:1904.01355).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ...assigners.base import points_in_boxes
from ...checks import check_float, check_int, is_int
from ...errors import ConfigError, DataError
from ...ops.anchor_points import boxes_to_distances, distances_to_boxes, grid_points
from ...ops.coords import boxes_to_original
from ...postprocess.staged import STAGES
from ...registry import ASSIGNERS, HEADS, LOSSES
from ...structures import Batch, Prediction
from ..layers import Norm, check_norm, conv_norm_act, output_conv
from .base import Head

__all__ = ["YOLOHead", "pad_targets", "to_original"]

# YOLOv8's loss gains (box 7.5, cls 0.5, dfl 1.5) as each component's ``weight``.
DEFAULT_ASSIGNER = dict(type="TaskAlignedAssigner", topk=10, alpha=0.5, beta=6.0)
DEFAULT_CLS_LOSS = dict(type="SigmoidBCELoss", weight=0.5)
DEFAULT_BOX_LOSS = dict(type="CIoULoss", weight=7.5)
DEFAULT_DFL_LOSS = dict(type="DFLoss", weight=1.5)
DEFAULT_POSTPROCESSOR = dict(type="BoxPostProcessor", score_threshold=0.001, iou_threshold=0.7,
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
        norm: normalization in the branches, one of :data:`~detlab.models.layers.NORMS`.
        assigner: ``ASSIGNERS`` config called as ``assigner(scores (B, A, C), boxes (B, A, 4),
            points (A, 2), gt_labels, gt_boxes, gt_valid, anchor_strides=, num_anchors_per_level=)``
            (``TaskAlignedAssigner``, ``ATSSAssigner``).
        cls_loss: ``LOSSES`` config called as ``(logits (N, C), targets (N, C), weight (N,),
            avg_factor)`` (``SigmoidBCELoss``, ``VarifocalLoss``, ``QualityFocalLoss``).
        box_loss: called as ``(pred (P, 4), target (P, 4), weight (P,), avg_factor)``, xyxy px
            (``CIoULoss``, ``WIoULoss``, ``InnerIoULoss`` …).
        dfl_loss: called as ``(logits (P, 4, reg_max), target (P, 4), weight, avg_factor)``;
            built with this ``reg_max`` unless it sets its own (which must match).
        postprocessor: the post-processing slot (``dict(type=..., val=dict(...),
            test=dict(...))``, :class:`~detlab.postprocess.staged.StagedPostprocessor`); each
            stage's post-processor is called as ``batched(boxes (B, A, 4), scores (B, A, C))``.
            Default ``BoxPostProcessor(score_threshold=0.001, iou_threshold=0.7,
            max_detections=300)``.
        prior_prob: initial class probability of every anchor (RetinaNet, arXiv:1708.02002);
            ``None`` uses YOLOv8's per-level rule, 5 objects per class on a
            ``prior_image_size``² image: bias ``log(5 / C / (prior_image_size / stride)²)``.
        prior_image_size: image side of that rule, px.

    ``forward(feats)`` returns ``cls_logits`` ``(B, A, C)``, ``box_dist`` ``(B, A, 4 * reg_max)``
    (side-major: left bins, top bins, …), ``anchor_points`` ``(A, 2)`` (x, y) px, ``strides``
    ``(A,)`` px and ``num_anchors_per_level`` (list of ints), anchors level by level, row-major.

    Extension hooks: a subclass changes a branch by overriding :meth:`build_cls_branch` /
    :meth:`build_reg_branch` (``self.cls_channels``/``self.reg_channels`` hold the width rule,
    :meth:`conv_branch` the default branch, :mod:`detlab.models.layers` the blocks) and the
    bias init by overriding :meth:`init_cls_bias` / :meth:`init_reg_bias`, which receive each
    built branch (see docs/guides/custom-head.md).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        reg_max: int = 16,
        cls_channels: int | None = None,
        reg_channels: int | None = None,
        norm: Norm = "batch",
        assigner: Any = None,
        cls_loss: Any = None,
        box_loss: Any = None,
        dfl_loss: Any = None,
        postprocessor: Any = None,
        prior_prob: float | None = None,
        prior_image_size: int = 640,
    ) -> None:
        super().__init__()
        in_channels, strides = list(in_channels), list(strides)
        if not in_channels or len(in_channels) != len(strides) or not all(
            is_int(v) and v > 0 for v in in_channels + strides
        ):
            raise ConfigError(
                f"YOLOHead: in_channels {in_channels!r} and strides {strides!r} must be equally "
                "long non-empty lists of positive ints (one per level)"
            )
        check_int("YOLOHead", "num_classes", num_classes, low=1)
        check_int("YOLOHead", "reg_max", reg_max, low=2)
        check_int("YOLOHead", "prior_image_size", prior_image_size, low=1)
        if prior_prob is not None:
            check_float("YOLOHead", "prior_prob", prior_prob, low=0, high=1, low_open=True,
                        high_open=True)
        self.num_classes, self.reg_max, self.strides = num_classes, reg_max, strides
        self.norm = check_norm("YOLOHead", norm)
        #: Branch widths (YOLOv8's rule unless set), read by :meth:`build_cls_branch` /
        #: :meth:`build_reg_branch` and by subclasses that replace them.
        self.cls_channels = check_int("YOLOHead", "cls_channels", cls_channels or max(
            in_channels[0], min(num_classes, 100)), low=1)
        self.reg_channels = check_int("YOLOHead", "reg_channels", reg_channels or max(
            16, in_channels[0] // 4, 4 * reg_max), low=1)
        self.cls_branches = nn.ModuleList(self.build_cls_branch(c) for c in in_channels)
        self.reg_branches = nn.ModuleList(self.build_reg_branch(c) for c in in_channels)
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
        for arg, obj in (("assigner", self.assigner), ("cls_loss", self.cls_loss),
                         ("box_loss", self.box_loss), ("dfl_loss", self.dfl_loss)):
            if not callable(obj):
                raise ConfigError(f"YOLOHead: {arg} must be a config dict or callable, got {obj!r}")
        self.build_postprocessor(postprocessor, DEFAULT_POSTPROCESSOR)
        for stage in STAGES:
            if not callable(getattr(self.postprocessor.for_stage(stage), "batched", None)):
                raise ConfigError(
                    "YOLOHead: postprocessor must build an object with batched(boxes, scores) "
                    f"(e.g. BoxPostProcessor), got {self.postprocessor.for_stage(stage)!r}")
        self.init_biases(prior_prob, prior_image_size)

    # -- extension hooks ------------------------------------------------------------------------
    def conv_branch(self, in_channels: int, width: int, out_channels: int) -> nn.Sequential:
        """YOLOv8's branch: two 3x3 conv-norm-SiLU of ``width`` channels (norm ``self.norm``),
        then a 1x1 conv to ``out_channels``; ``(B, in_channels, H, W) -> (B, out, H, W)``."""
        return nn.Sequential(conv_norm_act(in_channels, width, 3, norm=self.norm),
                             conv_norm_act(width, width, 3, norm=self.norm),
                             nn.Conv2d(width, out_channels, 1))

    def build_cls_branch(self, in_channels: int) -> nn.Module:
        """The classification branch of one level: ``(B, in_channels, H, W) -> (B,
        num_classes, H, W)`` logits; its last conv gets :meth:`init_cls_bias`. Override to
        change it (``self.cls_channels``, ``self.num_classes``, ``self.norm`` are set)."""
        return self.conv_branch(in_channels, self.cls_channels, self.num_classes)

    def build_reg_branch(self, in_channels: int) -> nn.Module:
        """The box branch of one level: ``(B, in_channels, H, W) -> (B, 4 * reg_max, H, W)``
        bin logits; its last conv gets :meth:`init_reg_bias`."""
        return self.conv_branch(in_channels, self.reg_channels, 4 * self.reg_max)

    def init_cls_bias(self, branch: nn.Module, prior: float) -> None:
        """Start every class probability of ``branch`` at ``prior``: the bias of its last conv
        (:func:`~detlab.models.layers.output_conv`) is set to ``log(prior / (1 - prior))``."""
        nn.init.constant_(output_conv(branch).bias, math.log(prior / (1 - prior)))

    def init_reg_bias(self, branch: nn.Module) -> None:
        """Bias 1.0 on every bin of ``branch``'s last conv: equal bins, mid-range distances."""
        nn.init.constant_(output_conv(branch).bias, 1.0)

    def init_biases(self, prior_prob: float | None, image_size: int) -> None:
        """Per level, :meth:`init_cls_bias` with ``prior_prob`` (``None``: YOLOv8's ~5 objects
        per class on an ``image_size``² image) and :meth:`init_reg_bias`; sets
        ``score_prior``, the highest initial class probability (the collapse check's prior)."""
        self.score_prior = 0.0
        for cls_branch, reg_branch, s in zip(self.cls_branches, self.reg_branches, self.strides):
            if prior_prob is None:
                prior = 1.0 / (1.0 + (self.num_classes * (image_size / s) ** 2) / 5)
            else:
                prior = prior_prob
            self.score_prior = max(self.score_prior, prior)
            self.init_cls_bias(cls_branch, prior)
            self.init_reg_bias(reg_branch)

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
        # Whether any image carries ignore flags is known on the host (no read of the flags).
        if any(isinstance(t.get("ignore"), Tensor) for t in batch.targets):
            in_ignore = points_in_boxes(points, gt_boxes.float(), ignored).any(dim=1)
            cls_weight = (~(in_ignore & ~fg)).float().reshape(-1)
        loss_cls = self.cls_loss(cls_logits.reshape(b * a, c), target_scores.reshape(b * a, c),
                                 weight=cls_weight, avg_factor=norm)

        # One nonzero for all positive gathers (each boolean-mask index would be a host sync);
        # row-major, so the same rows in the same order as ``x[fg]``.
        pos = fg.reshape(-1).nonzero().squeeze(1)
        pos_anchor = pos % a
        box_weight = target_scores.sum(dim=-1).reshape(-1)[pos]
        target_boxes = assign.target_boxes.reshape(b * a, 4)[pos].float()
        loss_box = self.box_loss(pred_boxes.reshape(b * a, 4)[pos], target_boxes,
                                 weight=box_weight, avg_factor=norm)
        target_dist = boxes_to_distances(points[pos_anchor], target_boxes) / strides[pos_anchor, None]
        loss_dfl = self.dfl_loss(box_dist.reshape(b * a, -1)[pos].reshape(-1, 4, self.reg_max),
                                 target_dist, weight=box_weight, avg_factor=norm)
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_dfl": loss_dfl}

    # -- predictions ----------------------------------------------------------------------------
    def postprocess(
        self, outputs: Mapping[str, Any], batch: Batch, stage: str = "test"
    ) -> list[Prediction]:
        """Decode, run the post-processor, map boxes back to original pixels (``meta`` scale and
        pad: ``orig = (input - pad) / scale``) and clip them to ``orig_size``."""
        return self.postprocess_decoded(*self.decode_outputs(outputs), batch, stage)

    def decode_outputs(self, outputs: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """What the post-processor takes from the raw outputs: ``(boxes, scores)``, xyxy
        input-pixel boxes ``(B, A, 4)`` and class probabilities ``(B, A, C)``, float32. They do
        not depend on the post-processing settings, so ``detlab sweep`` decodes once."""
        scores = outputs["cls_logits"].detach().float().sigmoid()
        boxes = self.decode(outputs["box_dist"].detach(), outputs["anchor_points"],
                            outputs["strides"])
        return boxes, scores

    def postprocess_decoded(self, boxes: Tensor, scores: Tensor, batch: Batch,
                            stage: str = "test") -> list[Prediction]:
        """:meth:`postprocess` of :meth:`decode_outputs`' ``(boxes, scores)``."""
        detections = self.postprocessor.for_stage(stage).batched(boxes, scores)
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
