"""``FasterRCNNHead``: two-stage detection on pyramid features (Ren et al. 2015,
arXiv:1506.01497; FPN version Lin et al. 2017, arXiv:1612.03144).

The head is three recipe slots, each a dict of components:

* ``rpn`` (:class:`~detlab.models.heads.rpn.RPN`): ``anchor_generator``, ``assigner``
  (``MaxIoUAssigner``), ``sampler`` (``BalancedSampler``), ``nms``, top-k, ``box_coder``,
  ``loss_cls``, ``loss_box``;
* ``roi`` (:class:`~detlab.models.heads.roi_box.RoIStage`): ``roi_align``, ``assigner``,
  ``sampler``, ``box_head`` (``TwoMLPBoxHead``/``ConvFCBoxHead``), ``box_coder``, ``loss_cls``,
  ``loss_box``;
* ``postprocessor``: a ``BoxPostProcessor`` with ``val``/``test`` overrides
  (:class:`~detlab.postprocess.staged.StagedPostprocessor`).

torchvision's detection blocks do the heavy lifting (``RPNHead``, ``MultiScaleRoIAlign``,
``TwoMLPHead``/``FastRCNNConvFCHead``, ``FastRCNNPredictor``, ``BoxCoder``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import boxes as box_ops

from ...checks import check_int
from ...errors import ConfigError, DataError
from ...ops.coords import boxes_to_original
from ...postprocess.box_nms import BoxPostProcessor
from ...postprocess.staged import StagedPostprocessor
from ...registry import HEADS
from ...structures import Batch, Prediction
from .base import Head
from .roi_box import RoIStage, select_detections
from .faster_rcnn_flat import flat_kwargs_error
from .rpn import RPN
from .two_stage import OWNER, build_stage

__all__ = ["FasterRCNNHead"]

#: torchvision's box_score_thresh / box_nms_thresh / box_detections_per_img, plus a pre-NMS cap.
POSTPROCESSOR_DEFAULT: dict[str, Any] = dict(
    type="BoxPostProcessor", score_threshold=0.05, iou_threshold=0.5, max_detections=100,
    pre_nms_topk=1000,
)

@HEADS.register
class FasterRCNNHead(Head):
    """RPN + RoI box head over FPN levels, configured as nested components.

    Args:
        in_channels, strides: per pyramid level (given by ``Model``); every level must have the
            same channels (put an ``FPN`` neck in front).
        num_classes: foreground classes (labels ``0 .. num_classes - 1``; background is added).
        rpn: settings of :class:`~detlab.models.heads.rpn.RPN` (``anchor_generator``,
            ``conv_depth``, ``assigner``, ``sampler``, ``nms``, ``pre_nms_topk``,
            ``post_nms_topk``, ``box_coder``, ``loss_cls``, ``loss_box``); missing keys keep
            torchvision's defaults. ``loss`` uses the ``train`` top-k, ``forward``/``predict``
            the ``test`` one (never ``self.training``).
        roi: settings of :class:`~detlab.models.heads.roi_box.RoIStage` (``roi_align``,
            ``assigner``, ``sampler``, ``box_head``, ``box_coder``, ``loss_cls``, ``loss_box``).
        postprocessor: ``dict(type="BoxPostProcessor", <settings>, val=dict(...),
            test=dict(...))``: ``val`` for validation during training, ``test`` for
            ``eval``/``predict``/``sweep``; unset settings take score 0.05, IoU 0.5,
            100 detections, 1000 candidates.

    A component dict without ``type`` (or with the default's ``type``) keeps the stage's
    defaults for the arguments it leaves out: ``rpn=dict(sampler=dict(num=128))``. The flat
    arguments of earlier versions (``rpn_fg_iou``, ``box_head="conv"``, ``test_postprocess`` …,
    :data:`~detlab.models.heads.faster_rcnn_flat.LEGACY_KEYS`) are ConfigErrors naming the
    nested key.

    Losses: ``loss_rpn_objectness``, ``loss_rpn_box``, ``loss_roi_cls``, ``loss_roi_box``;
    boxes flagged ``ignore`` are left out of training (as torchvision does with no such flag).
    Each ``loss`` call also sets ``last_stats`` (0-d tensors: ``num_pos`` positive RPN anchors,
    ``roi_num_pos``, ``num_gt``, ``num_gt_below_stride``) for the collapse check.
    ``forward(feats)`` returns ``{"proposals": [(P_i, 4)], "cls_logits": (sum P, K + 1),
    "box_deltas": (sum P, (K + 1) * 4), "image_size": (H, W)}`` (test-mode proposals, xyxy px
    of the padded input). Predictions are in original image coordinates (``meta`` scale/pad),
    clipped to the image.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        rpn: Mapping[str, Any] | None = None,
        roi: Mapping[str, Any] | None = None,
        postprocessor: Any = None,
        **flat: Any,
    ) -> None:
        super().__init__()
        if flat:  # **flat only to say where each argument of earlier versions went
            raise flat_kwargs_error(flat)
        channels, self.strides = list(in_channels), [int(s) for s in strides]
        if not channels or len(channels) != len(self.strides) or len(set(channels)) != 1:
            raise ConfigError(
                f"{OWNER}: every feature level needs the same number of channels (the RPN head is "
                f"shared); got in_channels={channels}, strides={self.strides}. Put an FPN neck "
                "between the backbone and the head"
            )
        self.num_classes = check_int(OWNER, "num_classes", num_classes, low=1)
        self.rpn = build_stage(RPN, rpn, "model.head.rpn", in_channels=channels[0],
                               strides=self.strides)
        self.roi = build_stage(RoIStage, roi, "model.head.roi", in_channels=channels[0],
                               strides=self.strides, num_classes=self.num_classes)
        self.postprocessor = StagedPostprocessor(
            postprocessor, key="model.head.postprocessor", default=POSTPROCESSOR_DEFAULT,
            owner=OWNER)
        for stage in ("val", "test"):
            built = self.postprocessor.for_stage(stage)
            if not isinstance(built, BoxPostProcessor):
                raise ConfigError(f"{OWNER}: model.head.postprocessor must build a "
                                  f"BoxPostProcessor (stage {stage}), got {built!r}")

    # -- configuration -------------------------------------------------------------------------
    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location (derived from the recipe's sizes and ratios)."""
        return self.rpn.num_anchors

    @property
    def anchor_sizes(self) -> tuple[tuple[float, ...], ...]:
        """Per-level anchor sizes in px (``rpn.anchor_generator.sizes``, normalized)."""
        return self.rpn.anchor_sizes

    @property
    def aspect_ratios(self) -> tuple[tuple[float, ...], ...]:
        """Per-level anchor height / width ratios (``rpn.anchor_generator.aspect_ratios``)."""
        return self.rpn.aspect_ratios

    # -- network -------------------------------------------------------------------------------
    def _image_size(self, feats: list[Tensor]) -> tuple[int, int]:
        """(H, W) of the padded network input, from the finest map and its stride."""
        h, w = feats[0].shape[-2:]
        return int(h * self.strides[0]), int(w * self.strides[0])

    def forward(self, feats: list[Tensor]) -> dict[str, Any]:
        """Test-mode proposals and their class logits and class-specific deltas."""
        objectness, deltas, anchors, per_level = self.rpn(feats)
        image_size = self._image_size(feats)
        proposals = self.rpn.proposals(objectness, deltas, anchors, per_level, image_size, "test")
        cls_logits, box_deltas = self.roi(feats, proposals, image_size)
        return {"proposals": proposals, "cls_logits": cls_logits, "box_deltas": box_deltas,
                "image_size": image_size}

    def _targets(self, batch: Batch, device: torch.device) -> list[dict[str, Tensor]]:
        """torchvision-style targets: non-ignored boxes, labels + 1 (0 is background)."""
        out, ranges = [], []
        for i, t in enumerate(batch.targets):
            boxes = t.get("boxes")
            boxes = torch.zeros((0, 4)) if boxes is None else boxes
            labels = t.get("labels")
            labels = torch.zeros(0, dtype=torch.int64) if labels is None else labels
            boxes = boxes.reshape(-1, 4).to(device, torch.float32)
            labels = labels.reshape(-1).to(device)
            if len(labels) != len(boxes):
                raise DataError(f"{OWNER}: image {i}: {len(boxes)} boxes but {len(labels)} labels")
            if len(labels):
                ranges.append((i, torch.stack(torch.aminmax(labels))))
            ignore = t.get("ignore")
            if ignore is not None and len(ignore) == len(boxes):
                keep = ~ignore.to(device).bool()
                boxes, labels = boxes[keep], labels[keep]
            out.append({"boxes": boxes, "labels": labels.long() + 1})
        # One host read for the whole batch's label check (not two per image).
        values = torch.stack([r for _, r in ranges]).tolist() if ranges else []
        for (i, _), (low, high) in zip(ranges, values):
            if low < 0 or high >= self.num_classes:
                raise DataError(
                    f"{OWNER}: image {i}: labels must be in [0, {self.num_classes}), got "
                    f"[{low}, {high}]"
                )
        return out

    def loss(self, feats: list[Tensor], batch: Batch) -> dict[str, Tensor]:
        """RPN loss on sampled anchors and RoI loss on sampled train-mode proposals."""
        objectness, deltas, anchors, per_level = self.rpn(feats)
        image_size = self._image_size(feats)
        targets = self._targets(batch, objectness.device)
        if len(targets) != objectness.shape[0]:
            raise DataError(
                f"{OWNER}: batch has {objectness.shape[0]} images but {len(targets)} targets"
            )
        proposals = self.rpn.proposals(objectness, deltas, anchors, per_level, image_size, "train")
        loss_objectness, loss_rpn_box = self.rpn.loss(objectness, deltas, anchors, targets)
        terms, roi_num_pos = self.roi.loss(feats, proposals, targets, image_size)
        # Per-step counts for the collapse check (DiagnosticsCallback), not loss terms. RoI
        # positives include the ground-truth boxes added to the proposals.
        gt = torch.cat([t["boxes"] for t in targets]).reshape(-1, 4)
        sides = (gt[:, 2:] - gt[:, :2]).amin(dim=1)
        self.last_stats = {"num_pos": self.rpn.last_num_pos, "num_gt": sides.new_tensor(len(gt)),
                           "num_gt_below_stride": (sides < min(self.strides)).sum(),
                           "roi_num_pos": roi_num_pos}
        return {"loss_rpn_objectness": loss_objectness, "loss_rpn_box": loss_rpn_box, **terms}

    # -- predictions -----------------------------------------------------------------------------
    def postprocess(
        self, outputs: dict[str, Any], batch: Batch, stage: str = "test"
    ) -> list[Prediction]:
        """Decode class-specific boxes, apply the ``stage`` post-processor per image, map back to
        the original image (``orig = (input - pad) / scale``) and clip to it."""
        settings = self.postprocessor.for_stage(stage)
        proposals = outputs["proposals"]
        counts = [len(p) for p in proposals]
        logits = outputs["cls_logits"].detach().float()
        deltas = outputs["box_deltas"].detach().float()
        if sum(counts):
            boxes = self.roi.box_coder.decode(deltas, [p.float() for p in proposals])
        else:
            boxes = deltas.new_zeros((0, self.num_classes + 1, 4))
        scores = logits.softmax(dim=-1)
        metas = batch.meta or [{} for _ in counts]
        preds = []
        for img_boxes, img_scores, meta in zip(boxes.split(counts), scores.split(counts), metas):
            img_boxes = box_ops.clip_boxes_to_image(img_boxes, outputs["image_size"])
            det_boxes, det_scores, det_labels = select_detections(
                img_boxes[:, 1:], img_scores[:, 1:], settings
            )
            preds.append(Prediction(boxes=boxes_to_original(det_boxes, meta), scores=det_scores,
                                    labels=det_labels))
        return preds
