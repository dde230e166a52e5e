"""The RoI stage of :class:`~detlab.models.heads.faster_rcnn.FasterRCNNHead` (``model.head.roi``):
RoIAlign over pyramid levels, a registered box head (``TwoMLPBoxHead``, ``ConvFCBoxHead``),
torchvision's ``FastRCNNPredictor``, RoI assignment and sampling, the loss plug-in and the
per-class detection selection.

Labels inside this module follow torchvision: 0 is background, class ``c`` of the dataset is
``c + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper

from ...assigners import maxiou as _maxiou  # noqa: F401  (registers MaxIoUAssigner)
from ...assigners import sampling as _sampling  # noqa: F401  (registers BalancedSampler)
from ...checks import check_choice, check_int, check_int_list, is_int
from ...errors import ConfigError
from ...ops.nms import nms
from ...postprocess.box_nms import BoxPostProcessor
from ...registry import ASSIGNERS, BOX_HEADS, BOX_SAMPLERS, LOSSES
from .two_stage import OWNER, box_target_space, build_box_coder, component, regression_loss
from .two_stage import settings

__all__ = ["TwoMLPBoxHead", "ConvFCBoxHead", "RoILoss", "RoIStage", "box_target_space",
           "select_detections"]

_ROI_ALIGN_DEFAULTS: dict[str, Any] = dict(levels=None, output_size=7, sampling_ratio=2)


@BOX_HEADS.register
class TwoMLPBoxHead(TwoMLPHead):
    """Flatten + two FC layers (Faster R-CNN FPN, arXiv:1612.03144): ``(R, C, S, S)`` pooled
    RoI features → ``(R, representation_size)``.

    Args:
        in_channels, output_size: ``C`` and ``S`` (given by the RoI stage).
        representation_size: width of both FC layers.
    """

    def __init__(self, in_channels: int, output_size: int, representation_size: int = 1024) -> None:
        check_int("TwoMLPBoxHead", "representation_size", representation_size, low=1)
        super().__init__(in_channels * output_size**2, representation_size)
        self.out_channels = representation_size


@BOX_HEADS.register
class ConvFCBoxHead(FastRCNNConvFCHead):
    """3x3 convs then one FC (torchvision's v2 box head, arXiv:2111.11429): ``(R, C, S, S)`` →
    ``(R, representation_size)``.

    Args:
        in_channels, output_size: ``C`` and ``S`` (given by the RoI stage).
        conv_channels: output channels of each 3x3 conv.
        representation_size: width of the FC layer.
        norm: ``"none"`` or ``"batch"`` after each conv.
    """

    def __init__(self, in_channels: int, output_size: int,
                 conv_channels: Sequence[int] = (256, 256, 256, 256),
                 representation_size: int = 1024, norm: str = "none") -> None:
        owner = "ConvFCBoxHead"
        convs = check_int_list(owner, "conv_channels", conv_channels, low=1)
        check_int(owner, "representation_size", representation_size, low=1)
        check_choice(owner, "norm", norm, ("none", "batch"))
        super().__init__((in_channels, output_size, output_size), convs, [representation_size],
                         norm_layer=nn.BatchNorm2d if norm == "batch" else None)
        self.out_channels = representation_size


class RoILoss(nn.Module):
    """Classification and class-specific box regression loss of the sampled RoIs.

    Args:
        box_loss: loss config or module. Delta-space losses (:func:`box_target_space`) get the
            predicted deltas of each positive RoI's true class and the encoded targets; box-space
            losses (``GIoULoss``, ``DIoULoss``, ``CIoULoss`` …) get those deltas decoded onto the
            proposals and the matched ground-truth boxes, both xyxy px. detlab losses are called
            with ``avg_factor`` = number of sampled RoIs (as torchvision and mmdetection do, so
            IoU losses want ``weight`` ≈ 10 to weigh like smooth L1); torch's losses use their
            own reduction.
        cls_loss: ``None`` for softmax cross-entropy over ``num_classes + 1`` logits, or a loss
            called as ``loss(logits (R, K + 1), labels (R,) int64)``, e.g.
            ``dict(type="FocalLoss", activation="softmax", alpha=None, gamma=2.0)``.
        box_coder: torchvision ``BoxCoder`` of the RoI head (decodes for box-space losses).
        key: where the stage sits in the recipe (``loss_box``/``loss_cls`` below it).
    """

    def __init__(self, box_loss: Any, cls_loss: Any, box_coder: Any,
                 key: str = "model.head.roi") -> None:
        super().__init__()
        self.box_loss = LOSSES.build(box_loss, key=f"{key}.loss_box")
        self.cls_loss = None if cls_loss is None else LOSSES.build(cls_loss,
                                                                   key=f"{key}.loss_cls")
        for arg, loss in (("loss_box", self.box_loss), ("loss_cls", self.cls_loss)):
            if loss is not None and not callable(loss):
                raise ConfigError(f"{OWNER}: {key}.{arg} must be a loss config or module, got "
                                  f"{loss!r}")
        self.space = box_target_space(self.box_loss)
        self.box_coder = box_coder

    def forward(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        labels: list[Tensor],
        proposals: list[Tensor],
        matched_boxes: list[Tensor],
        regression_targets: list[Tensor],
    ) -> dict[str, Tensor]:
        """``{"loss_roi_cls", "loss_roi_box"}`` for ``R`` sampled RoIs of the batch.

        ``class_logits`` ``(R, K + 1)``, ``box_regression`` ``(R, (K + 1) * 4)``, per image:
        ``labels`` (0 = background), ``proposals`` and ``matched_boxes`` xyxy px, encoded
        ``regression_targets``. Without positives the box term is 0 (with a graph).
        """
        labels_all = torch.cat(labels)
        if self.cls_loss is None:
            loss_cls = F.cross_entropy(class_logits, labels_all)
        else:
            loss_cls = self.cls_loss(class_logits, labels_all)
        pos = torch.where(labels_all > 0)[0]
        deltas = box_regression.reshape(len(labels_all), -1, 4)[pos, labels_all[pos]]
        if self.space == "deltas":
            refs = targets = deltas  # unused by delta-space losses
            target_deltas = torch.cat(regression_targets)[pos]
        else:
            refs, targets = torch.cat(proposals)[pos], torch.cat(matched_boxes)[pos]
            target_deltas = deltas
        loss_box = regression_loss(self.box_loss, deltas, target_deltas, refs, targets,
                                   self.box_coder, len(labels_all))
        return {"loss_roi_cls": loss_cls, "loss_roi_box": loss_box}


class RoIStage(nn.Module):
    """RoIAlign, box head, predictor, RoI sampling and loss (``model.head.roi``).

    Args:
        in_channels, strides, num_classes: given by the head (channels of every level, their
            strides in px, foreground classes).
        roi_align: ``dict(levels=None, output_size=7, sampling_ratio=2)``: pyramid levels
            ``P_k`` (stride ``2**k``, contiguous; ``None`` = all) RoIAlign pools from (a box goes
            to level ``floor(4 + log2(sqrt(area) / 224))`` clamped to them), output side,
            sampling points per bin.
        assigner: proposal matching, default ``dict(type="MaxIoUAssigner", pos_iou=0.5,
            neg_iou=0.5)``.
        sampler: RoIs per image (ground truth included), default ``dict(type="BalancedSampler",
            num=512, pos_fraction=0.25)``.
        box_head: registered box head, default ``dict(type="TwoMLPBoxHead",
            representation_size=1024)``; or ``dict(type="ConvFCBoxHead", conv_channels=…,
            representation_size=…, norm="batch")``.
        box_coder: ``dict(weights=(10.0, 10.0, 5.0, 5.0))``: RoI delta encoding.
        loss_cls, loss_box: see :class:`RoILoss` (default CE and ``SmoothL1Loss(beta=1/9)``).
        key: where this stage sits in the recipe, for messages.
    """

    def __init__(
        self,
        in_channels: int,
        strides: Sequence[int],
        num_classes: int,
        roi_align: Mapping[str, Any] | None = None,
        assigner: Any = None,
        sampler: Any = None,
        box_head: Any = None,
        box_coder: Mapping[str, Any] | None = None,
        loss_cls: Any = None,
        loss_box: Any = None,
        key: str = "model.head.roi",
    ) -> None:
        super().__init__()
        self.strides = [int(s) for s in strides]
        align = settings(roi_align, _ROI_ALIGN_DEFAULTS, f"{key}.roi_align")
        output_size = check_int(OWNER, f"{key}.roi_align.output_size", align["output_size"],
                                low=1)
        ratio = check_int(OWNER, f"{key}.roi_align.sampling_ratio", align["sampling_ratio"],
                          low=-1)
        self.levels = self._levels(align["levels"], f"{key}.roi_align.levels")
        pool = MultiScaleRoIAlign([str(k) for k in self.levels], output_size, ratio)
        # The strides are known: set what torchvision would infer (and cache) from the first
        # batch's feature/image size ratios, so odd input sizes cannot mis-infer a level.
        pool.scales = [2.0 ** -k for k in self.levels]
        pool.map_levels = initLevelMapper(self.levels[0], self.levels[-1])
        self.box_roi_pool = pool
        self.box_head = BOX_HEADS.build(
            component(box_head, dict(type="TwoMLPBoxHead", representation_size=1024)),
            key=f"{key}.box_head", in_channels=in_channels, output_size=output_size)
        width = getattr(self.box_head, "out_channels", None)
        if not is_int(width):
            raise ConfigError(f"{OWNER}: {key}.box_head {type(self.box_head).__name__} must "
                              "have an int out_channels (its feature width per RoI)")
        self.box_predictor = FastRCNNPredictor(width, num_classes + 1)
        self.box_coder = build_box_coder(box_coder, (10.0, 10.0, 5.0, 5.0), f"{key}.box_coder")
        self.assigner = ASSIGNERS.build(component(assigner, dict(
            type="MaxIoUAssigner", pos_iou=0.5, neg_iou=0.5)), key=f"{key}.assigner")
        self.sampler = BOX_SAMPLERS.build(component(sampler, dict(
            type="BalancedSampler", num=512, pos_fraction=0.25)), key=f"{key}.sampler")
        self.criterion = RoILoss(
            loss_box if loss_box is not None else dict(type="SmoothL1Loss", beta=1 / 9),
            loss_cls, self.box_coder, key)

    def _levels(self, levels: Sequence[int] | None, key: str) -> list[int]:
        available = {int(round(math.log2(s))): s for s in self.strides if s > 0}
        if levels is None:
            return sorted(available)
        ok = isinstance(levels, Sequence) and levels and all(is_int(k) for k in levels)
        chosen = sorted(levels) if ok else []
        # RoIAlign maps a box to level k - min(levels): the levels must be contiguous.
        if not ok or any(k not in available for k in chosen) or (
            chosen != list(range(chosen[0], chosen[-1] + 1))
        ):
            raise ConfigError(
                f"{OWNER}: {key} {levels!r} must be contiguous pyramid levels P_k of the neck, "
                f"i.e. a range within {sorted(available)} (strides {self.strides})")
        return chosen

    def forward(self, feats: list[Tensor], proposals: list[Tensor],
                image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Class logits ``(sum P, K + 1)`` and class-specific deltas ``(sum P, (K + 1) * 4)`` of
        per-image ``proposals`` (xyxy px of the padded input of size ``image_size``)."""
        by_level = {int(round(math.log2(s))): f for s, f in zip(self.strides, feats)}
        pooled = self.box_roi_pool(
            {str(k): by_level[k] for k in self.levels}, proposals, [image_size] * len(proposals)
        )
        return self.box_predictor(self.box_head(pooled))

    def sample(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Training RoIs per image: proposals plus the ground-truth boxes, assigned and sampled.

        Returns per image ``(proposals, labels, matched ground-truth boxes, encoded regression
        targets)`` of the sampled RoIs (the steps of torchvision's ``select_training_samples``).
        """
        rois, labels, matched = [], [], []
        for props, t in zip(proposals, targets):
            props = torch.cat([props, t["boxes"].to(props.dtype)])
            result = self.assigner(props, t["boxes"], t["labels"])
            rois.append(props)
            labels.append(result.labels)
            matched.append(result.matched(t["boxes"].to(props.dtype)))
        for i, lab in enumerate(labels):
            pos, neg = self.sampler(lab)
            keep = torch.where(pos | neg)[0]
            rois[i], labels[i], matched[i] = rois[i][keep], lab[keep], matched[i][keep]
        return rois, labels, matched, list(self.box_coder.encode(matched, rois))

    def loss(self, feats: list[Tensor], proposals: list[Tensor], targets: list[dict[str, Tensor]],
             image_size: tuple[int, int]) -> tuple[dict[str, Tensor], Tensor]:
        """``({"loss_roi_cls", "loss_roi_box"}, positive RoI count)`` on sampled train RoIs."""
        rois, labels, matched, regression = self.sample(proposals, targets)
        cls_logits, box_deltas = self(feats, rois, image_size)
        terms = self.criterion(cls_logits, box_deltas, labels, rois, matched, regression)
        return terms, sum((lab > 0).sum() for lab in labels)


def select_detections(
    boxes: Tensor, scores: Tensor, settings: BoxPostProcessor, min_size: float = 1e-2
) -> tuple[Tensor, Tensor, Tensor]:
    """Final detections of one image from class-specific boxes.

    Args:
        boxes: ``(R, K, 4)`` xyxy, one box per RoI and foreground class.
        scores: ``(R, K)`` class probabilities (background column removed).
        settings: score threshold, pre-NMS top-k, NMS method/IoU, class-agnostic, max detections
            (and ``multi_label=False``: only each RoI's best class is a candidate).
        min_size: candidates with a side below this (px) are dropped.

    Returns:
        ``(boxes (D, 4), scores (D,), labels (D,) int64 in [0, K))``, by decreasing score.
    """
    r, k = scores.shape
    if not settings.multi_label and k:
        best = scores.argmax(dim=1, keepdim=True)
        scores = torch.zeros_like(scores).scatter_(1, best, scores.gather(1, best))
    flat = scores.reshape(-1)
    cand = torch.where(flat > settings.score_threshold)[0]
    if cand.numel() > settings.pre_nms_topk:
        cand = cand[flat[cand].topk(settings.pre_nms_topk).indices]
    cand_boxes = boxes.reshape(-1, 4)[cand]
    cand_scores, cand_labels = flat[cand], cand % k if k else cand
    wh = cand_boxes[:, 2:] - cand_boxes[:, :2]
    ok = (wh >= min_size).all(dim=1)
    cand_boxes, cand_scores, cand_labels = cand_boxes[ok], cand_scores[ok], cand_labels[ok]
    keep, kept = nms(
        cand_boxes, cand_scores, cand_labels, settings.method, settings.iou_threshold,
        settings.class_agnostic, settings.sigma, settings.score_threshold, settings.max_detections,
    )
    keep, kept = keep[: settings.max_detections], kept[: settings.max_detections]
    return cand_boxes[keep], kept, cand_labels[keep]
