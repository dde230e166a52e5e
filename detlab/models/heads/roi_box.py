"""RoI box branch pieces of :class:`~detlab.models.heads.faster_rcnn.FasterRCNNHead`: the box
head (torchvision's ``TwoMLPHead`` or ``FastRCNNConvFCHead``), the loss plug-in and the
per-class detection selection.

Labels inside this module follow torchvision: 0 is background, class ``c`` of the dataset is
``c + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, TwoMLPHead

from ...errors import ConfigError
from ...ops.nms import nms
from ...postprocess.box_nms import BoxPostProcessor
from ...registry import LOSSES

__all__ = ["build_box_head", "RoILoss", "box_target_space", "select_detections"]

BoxHeadKind = Literal["two_mlp", "conv"]


def build_box_head(
    kind: BoxHeadKind,
    in_channels: int,
    output_size: int,
    representation_size: int,
    conv_channels: Sequence[int],
    norm: Literal["none", "batch"],
) -> nn.Module:
    """``(R, C, S, S)`` pooled RoI features → ``(R, representation_size)``.

    ``"two_mlp"``: flatten + two FC layers (Faster R-CNN FPN, arXiv:1612.03144); ``"conv"``:
    3x3 convs of ``conv_channels`` then one FC (torchvision's v2 box head, arXiv:2111.11429).
    """
    if kind == "two_mlp":
        return TwoMLPHead(in_channels * output_size**2, representation_size)
    norm_layer = nn.BatchNorm2d if norm == "batch" else None
    return FastRCNNConvFCHead(
        (in_channels, output_size, output_size), list(conv_channels), [representation_size],
        norm_layer=norm_layer,
    )


def box_target_space(loss: Any) -> Literal["deltas", "boxes"]:
    """What a box loss compares: encoded ``"deltas"`` (smooth L1, L1 …) or decoded xyxy
    ``"boxes"`` (the IoU family). A loss may say so with a ``target_space`` attribute; torch's
    own losses (``torch.nn.SmoothL1Loss`` …) work on deltas; anything else gets boxes."""
    space = getattr(loss, "target_space", None)
    if space in ("deltas", "boxes"):
        return space
    if isinstance(loss, nn.modules.loss._Loss):
        return "deltas"
    return "boxes"


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
    """

    def __init__(self, box_loss: Any, cls_loss: Any, box_coder: Any) -> None:
        super().__init__()
        self.box_loss = LOSSES.build(box_loss, key="model.head.box_loss")
        self.cls_loss = (
            None if cls_loss is None else LOSSES.build(cls_loss, key="model.head.cls_loss")
        )
        for arg, loss in (("box_loss", self.box_loss), ("cls_loss", self.cls_loss)):
            if loss is not None and not callable(loss):
                raise ConfigError(
                    f"FasterRCNNHead: {arg} must be a loss config or module, got {loss!r}"
                )
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
            pred, target = deltas, torch.cat(regression_targets)[pos]
        else:
            pred = self.box_coder.decode_single(deltas, torch.cat(proposals)[pos])
            target = torch.cat(matched_boxes)[pos]
        if isinstance(self.box_loss, nn.modules.loss._Loss):
            loss_box = self.box_loss(pred, target) if len(pos) else deltas.sum() * 0.0
        else:
            loss_box = self.box_loss(pred, target, avg_factor=float(max(len(labels_all), 1)))
        return {"loss_roi_cls": loss_cls, "loss_roi_box": loss_box}


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
