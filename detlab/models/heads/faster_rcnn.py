"""``FasterRCNNHead``: two-stage detection on pyramid features (Ren et al. 2015,
arXiv:1506.01497; FPN version Lin et al. 2017, arXiv:1612.03144).

torchvision's detection blocks do the heavy lifting (``RPNHead``, the RPN's matcher/sampler/loss,
``RoIHeads``' proposal sampling, ``MultiScaleRoIAlign``, ``TwoMLPHead``/``FastRCNNConvFCHead``,
``FastRCNNPredictor``, ``BoxCoder``). detlab adds what a recipe needs: anchors whose count per
location is derived from the recipe and checked against the feature levels at build time, an RoI
loss plug-in (smooth L1 or any IoU-family loss, cross-entropy or focal), and post-processing
settings per stage (validation during training vs. ``eval``/``predict``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper
from torchvision.ops import boxes as box_ops

from ...errors import ConfigError, DataError
from ...ops.anchors import anchor_config
from ...ops.coords import boxes_to_original
from ...postprocess.box_nms import BoxPostProcessor
from ...registry import HEADS, POSTPROCESSORS
from ...structures import Batch, Prediction
from .base import Head
from .roi_box import RoILoss, build_box_head, select_detections
from .rpn import RPN, check_topk

__all__ = ["FasterRCNNHead"]

STAGES = ("val", "test")
# torchvision's box_score_thresh / box_nms_thresh / box_detections_per_img, plus a pre-NMS cap.
_POSTPROCESS_DEFAULTS = dict(
    score_threshold=0.05, iou_threshold=0.5, max_detections=100, pre_nms_topk=1000
)


def _number(owner: str, arg: str, value: Any, low: float, high: float | None = None,
            integer: bool = False) -> Any:
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    ok = ok and math.isfinite(value) and value >= low and (high is None or value <= high)
    if not ok:
        kind = "an int" if integer else "a number"
        rng = f">= {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise ConfigError(f"{owner}: {arg} must be {kind} {rng}, got {value!r}")
    return value


@HEADS.register
class FasterRCNNHead(Head):
    """RPN + RoI box head over FPN levels, with recipe-level anchors, losses and thresholds.

    Args:
        in_channels, strides: per pyramid level (given by ``Model``); every level must have the
            same channels (put an ``FPN`` neck in front).
        num_classes: foreground classes (labels ``0 .. num_classes - 1``; background is added).
        anchor_sizes: one entry per feature level, finest first: a size in px or a list of
            sizes (``(4, 8, 12, 24, 48)``, ``((32,), (64,))``, ``((16, 24), (32, 48))``).
        aspect_ratios: anchor height / width ratios shared by every level (``(0.5, 1.0, 2.0)``;
            2.0 is tall), or one list per level. Anchors per location = sizes x ratios of a
            level; it sizes the RPN head and must be the same on every level. A size-group count
            different from the number of feature levels is a ConfigError naming both numbers.
        rpn_conv_depth: 3x3 convs in the RPN head (torchvision v1: 1, v2: 2).
        rpn_fg_iou, rpn_bg_iou: anchor IoU for positive (>=) and negative (<) RPN samples.
        rpn_batch_size, rpn_positive_fraction: anchors sampled per image for the RPN loss.
        rpn_pre_nms_topk: ``dict(train=…, test=…)`` proposals per level before NMS.
        rpn_post_nms_topk: ``dict(train=…, test=…)`` proposals per image after NMS. ``loss``
            uses ``train``, ``forward``/``predict`` use ``test`` (never ``self.training``).
        rpn_nms_iou, rpn_score_threshold: proposal NMS IoU and minimum objectness probability.
        roi_levels: pyramid levels ``P_k`` (stride ``2**k``) RoIAlign pools from; ``None`` = all.
            Boxes go to level ``floor(4 + log2(sqrt(area) / 224))`` clamped to these.
        roi_output_size, roi_sampling_ratio: RoIAlign output side and sampling points.
        box_head: ``"two_mlp"`` (flatten + 2 FC) or ``"conv"`` (``conv_channels`` 3x3 convs +
            1 FC, torchvision v2). ``representation_size``: FC width.
        box_head_norm: ``"none"`` or ``"batch"`` in the conv box head.
        roi_fg_iou, roi_bg_iou: proposal IoU for foreground (>=) and background (<) RoIs.
        roi_batch_size, roi_positive_fraction: RoIs sampled per image (ground truth included).
        box_coder_weights: (wx, wy, ww, wh) of the RoI delta encoding.
        box_loss: RoI box regression loss: ``dict(type="SmoothL1Loss", beta=1/9)`` (default),
            ``"GIoULoss"``, ``"DIoULoss"``, ``"CIoULoss"`` … (decoded boxes; see
            :class:`~detlab.models.heads.roi_box.RoILoss`).
        cls_loss: ``None`` (softmax cross-entropy) or e.g.
            ``dict(type="FocalLoss", activation="softmax", alpha=None, gamma=2.0)``.
        val_postprocess, test_postprocess: ``BoxPostProcessor`` arguments (``score_threshold``,
            ``iou_threshold``, ``max_detections``, ``pre_nms_topk``, ``method`` …) for
            validation during training and for ``eval``/``predict``; missing keys take
            score 0.05, IoU 0.5, 100 detections, 1000 candidates.

    Losses: ``loss_rpn_objectness``, ``loss_rpn_box``, ``loss_roi_cls``, ``loss_roi_box``;
    boxes flagged ``ignore`` are left out of training (as torchvision does with no such flag).
    Each ``loss`` call also sets ``last_stats`` (0-d tensors: ``num_pos`` positive RPN anchors,
    ``roi_num_pos``, ``num_gt``, ``num_gt_below_stride``) for the collapse check.
    ``forward(feats)`` returns ``{"proposals": [(P_i, 4)], "cls_logits": (sum P, K + 1),
    "box_deltas": (sum P, (K + 1) * 4), "image_size": (H, W)}`` (test-mode proposals, xyxy px
    of the padded input). Predictions are in original image coordinates (``meta`` scale/pad),
    clipped to the image.
    """

    postprocess_args: tuple[str, ...] = ("val_postprocess", "test_postprocess")

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        anchor_sizes: Sequence[Any] = ((32,), (64,), (128,), (256,), (512,)),
        aspect_ratios: Sequence[Any] = (0.5, 1.0, 2.0),
        rpn_conv_depth: int = 1,
        rpn_fg_iou: float = 0.7,
        rpn_bg_iou: float = 0.3,
        rpn_batch_size: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_pre_nms_topk: Mapping[str, int] | int | None = None,
        rpn_post_nms_topk: Mapping[str, int] | int | None = None,
        rpn_nms_iou: float = 0.7,
        rpn_score_threshold: float = 0.0,
        roi_levels: Sequence[int] | None = None,
        roi_output_size: int = 7,
        roi_sampling_ratio: int = 2,
        box_head: Literal["two_mlp", "conv"] = "two_mlp",
        representation_size: int = 1024,
        conv_channels: Sequence[int] = (256, 256, 256, 256),
        box_head_norm: Literal["none", "batch"] = "none",
        roi_fg_iou: float = 0.5,
        roi_bg_iou: float = 0.5,
        roi_batch_size: int = 512,
        roi_positive_fraction: float = 0.25,
        box_coder_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        box_loss: Any = None,
        cls_loss: Any = None,
        val_postprocess: Mapping[str, Any] | None = None,
        test_postprocess: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        owner = "FasterRCNNHead"
        channels, self.strides = list(in_channels), [int(s) for s in strides]
        if not channels or len(channels) != len(self.strides) or len(set(channels)) != 1:
            raise ConfigError(
                f"{owner}: every feature level needs the same number of channels (the RPN head is "
                f"shared); got in_channels={channels}, strides={self.strides}. Put an FPN neck "
                "between the backbone and the head"
            )
        _number(owner, "num_classes", num_classes, 1, integer=True)
        self.num_classes = num_classes
        self.anchor_sizes, self.aspect_ratios = anchor_config(
            anchor_sizes, aspect_ratios, self.strides, owner
        )
        for arg, value in (("rpn_fg_iou", rpn_fg_iou), ("rpn_bg_iou", rpn_bg_iou),
                           ("rpn_positive_fraction", rpn_positive_fraction),
                           ("rpn_nms_iou", rpn_nms_iou),
                           ("rpn_score_threshold", rpn_score_threshold),
                           ("roi_fg_iou", roi_fg_iou), ("roi_bg_iou", roi_bg_iou),
                           ("roi_positive_fraction", roi_positive_fraction)):
            _number(owner, arg, value, 0.0, 1.0)
        for arg, lo, hi in (("rpn", rpn_bg_iou, rpn_fg_iou), ("roi", roi_bg_iou, roi_fg_iou)):
            if lo > hi:
                raise ConfigError(f"{owner}: {arg}_bg_iou={lo} must be <= {arg}_fg_iou={hi}")
        for arg, value in (("rpn_conv_depth", rpn_conv_depth), ("rpn_batch_size", rpn_batch_size),
                           ("roi_output_size", roi_output_size),
                           ("representation_size", representation_size),
                           ("roi_batch_size", roi_batch_size)):
            _number(owner, arg, value, 1, integer=True)
        _number(owner, "roi_sampling_ratio", roi_sampling_ratio, -1, integer=True)
        if box_head not in ("two_mlp", "conv"):
            raise ConfigError(f"{owner}: box_head must be 'two_mlp' or 'conv', got {box_head!r}")
        if box_head_norm not in ("none", "batch"):
            raise ConfigError(
                f"{owner}: box_head_norm must be 'none' or 'batch', got {box_head_norm!r}"
            )
        weights = tuple(box_coder_weights)
        if len(weights) != 4 or not all(isinstance(w, (int, float)) and w > 0 for w in weights):
            raise ConfigError(f"{owner}: box_coder_weights must be 4 numbers > 0, got {weights!r}")
        if box_head == "conv" and (not conv_channels or not all(
            isinstance(c, int) and c > 0 for c in conv_channels
        )):
            raise ConfigError(
                f"{owner}: conv_channels must be positive ints, got {conv_channels!r}"
            )

        default_topk = dict(train=2000, test=1000)  # torchvision's
        self.rpn = RPN(
            channels[0], self.strides, self.anchor_sizes, self.aspect_ratios, rpn_conv_depth,
            rpn_fg_iou, rpn_bg_iou, rpn_batch_size, rpn_positive_fraction,
            check_topk(owner, "rpn_pre_nms_topk", rpn_pre_nms_topk or default_topk),
            check_topk(owner, "rpn_post_nms_topk", rpn_post_nms_topk or default_topk),
            rpn_nms_iou, rpn_score_threshold,
        )
        self.roi_levels = self._roi_levels(roi_levels)
        pool = MultiScaleRoIAlign([str(k) for k in self.roi_levels], roi_output_size,
                                  roi_sampling_ratio)
        # The strides are known: set what torchvision would infer (and cache) from the first
        # batch's feature/image size ratios, so odd input sizes cannot mis-infer a level.
        pool.scales = [2.0 ** -k for k in self.roi_levels]
        pool.map_levels = initLevelMapper(self.roi_levels[0], self.roi_levels[-1])
        self.roi = RoIHeads(
            box_roi_pool=pool,
            box_head=build_box_head(box_head, channels[0], roi_output_size, representation_size,
                                    conv_channels, box_head_norm),
            box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
            fg_iou_thresh=roi_fg_iou, bg_iou_thresh=roi_bg_iou,
            batch_size_per_image=roi_batch_size, positive_fraction=roi_positive_fraction,
            bbox_reg_weights=weights,
            # RoIHeads' own post-processing is not used (see ``postprocess``).
            score_thresh=0.05, nms_thresh=0.5, detections_per_img=100,
        )
        self.roi_loss = RoILoss(
            box_loss if box_loss is not None else dict(type="SmoothL1Loss", beta=1 / 9),
            cls_loss, self.roi.box_coder,
        )
        self.postprocessors = {
            "val": self._postprocessor("val_postprocess", val_postprocess),
            "test": self._postprocessor("test_postprocess", test_postprocess),
        }

    # -- configuration helpers -----------------------------------------------------------------
    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location (derived from the recipe's sizes and ratios)."""
        return self.rpn.num_anchors

    def _roi_levels(self, roi_levels: Sequence[int] | None) -> list[int]:
        available = {int(round(math.log2(s))): s for s in self.strides if s > 0}
        if roi_levels is None:
            return sorted(available)
        levels = sorted(roi_levels)
        # RoIAlign maps a box to level k - min(levels): the levels must be contiguous.
        if not levels or any(k not in available for k in levels) or (
            levels != list(range(levels[0], levels[-1] + 1))
        ):
            raise ConfigError(
                f"FasterRCNNHead: roi_levels {list(roi_levels)!r} must be contiguous pyramid "
                f"levels P_k of the neck, i.e. a range within {sorted(available)} (strides "
                f"{self.strides})"
            )
        return levels

    @staticmethod
    def _postprocessor(arg: str, cfg: Mapping[str, Any] | None) -> BoxPostProcessor:
        if isinstance(cfg, BoxPostProcessor):
            return cfg
        if cfg is not None and not isinstance(cfg, Mapping):
            raise ConfigError(
                f"FasterRCNNHead: {arg} must be a dict of BoxPostProcessor arguments "
                f"(score_threshold, iou_threshold, max_detections …), got {cfg!r}"
            )
        full = {"type": "BoxPostProcessor", **_POSTPROCESS_DEFAULTS, **(cfg or {})}
        built = POSTPROCESSORS.build(full, key=f"model.head.{arg}")
        if not isinstance(built, BoxPostProcessor):
            raise ConfigError(f"FasterRCNNHead: {arg} must build a BoxPostProcessor, got {built!r}")
        return built

    # -- network -------------------------------------------------------------------------------
    def _image_size(self, feats: list[Tensor]) -> tuple[int, int]:
        """(H, W) of the padded network input, from the finest map and its stride."""
        h, w = feats[0].shape[-2:]
        return int(h * self.strides[0]), int(w * self.strides[0])

    def _box_branch(
        self, feats: list[Tensor], proposals: list[Tensor], image_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        by_level = {int(round(math.log2(s))): f for s, f in zip(self.strides, feats)}
        pooled = self.roi.box_roi_pool(
            {str(k): by_level[k] for k in self.roi_levels}, proposals, [image_size] * len(proposals)
        )
        return self.roi.box_predictor(self.roi.box_head(pooled))

    def forward(self, feats: list[Tensor]) -> dict[str, Any]:
        """Test-mode proposals and their class logits and class-specific deltas."""
        objectness, deltas, anchors, per_level = self.rpn(feats)
        image_size = self._image_size(feats)
        proposals = self.rpn.proposals(objectness, deltas, anchors, per_level, image_size, "test")
        cls_logits, box_deltas = self._box_branch(feats, proposals, image_size)
        return {"proposals": proposals, "cls_logits": cls_logits, "box_deltas": box_deltas,
                "image_size": image_size}

    def _targets(self, batch: Batch, device: torch.device) -> list[dict[str, Tensor]]:
        """torchvision-style targets: non-ignored boxes, labels + 1 (0 is background)."""
        out = []
        for i, t in enumerate(batch.targets):
            boxes = t.get("boxes")
            boxes = torch.zeros((0, 4)) if boxes is None else boxes
            labels = t.get("labels")
            labels = torch.zeros(0, dtype=torch.int64) if labels is None else labels
            boxes = boxes.reshape(-1, 4).to(device, torch.float32)
            labels = labels.reshape(-1).to(device)
            if len(labels) != len(boxes):
                raise DataError(
                    f"FasterRCNNHead: image {i}: {len(boxes)} boxes but {len(labels)} labels"
                )
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise DataError(
                    f"FasterRCNNHead: image {i}: labels must be in [0, {self.num_classes}), got "
                    f"[{int(labels.min())}, {int(labels.max())}]"
                )
            ignore = t.get("ignore")
            if ignore is not None and len(ignore) == len(boxes):
                keep = ~ignore.to(device).bool()
                boxes, labels = boxes[keep], labels[keep]
            out.append({"boxes": boxes, "labels": labels.long() + 1})
        return out

    def loss(self, feats: list[Tensor], batch: Batch) -> dict[str, Tensor]:
        """RPN loss on sampled anchors and RoI loss on sampled train-mode proposals."""
        objectness, deltas, anchors, per_level = self.rpn(feats)
        image_size = self._image_size(feats)
        targets = self._targets(batch, objectness.device)
        if len(targets) != objectness.shape[0]:
            raise DataError(
                f"FasterRCNNHead: batch has {objectness.shape[0]} images but {len(targets)} targets"
            )
        proposals = self.rpn.proposals(objectness, deltas, anchors, per_level, image_size, "train")
        loss_objectness, loss_rpn_box = self.rpn.loss(objectness, deltas, anchors, targets)
        proposals, matched, labels, regression = self.roi.select_training_samples(
            proposals, targets
        )
        matched_boxes = [
            t["boxes"][m] if len(t["boxes"]) else torch.zeros_like(p)
            for t, m, p in zip(targets, matched, proposals)
        ]
        cls_logits, box_deltas = self._box_branch(feats, proposals, image_size)
        terms = self.roi_loss(cls_logits, box_deltas, labels, proposals, matched_boxes, regression)
        # Per-step counts for the collapse check (DiagnosticsCallback), not loss terms. RoI
        # positives include the ground-truth boxes torchvision adds to the proposals.
        gt = torch.cat([t["boxes"] for t in targets]).reshape(-1, 4)
        sides = (gt[:, 2:] - gt[:, :2]).amin(dim=1)
        self.last_stats = {"num_pos": self.rpn.last_num_pos, "num_gt": sides.new_tensor(len(gt)),
                           "num_gt_below_stride": (sides < min(self.strides)).sum(),
                           "roi_num_pos": sum((lab > 0).sum() for lab in labels)}
        return {"loss_rpn_objectness": loss_objectness, "loss_rpn_box": loss_rpn_box, **terms}

    # -- predictions -----------------------------------------------------------------------------
    def postprocess(
        self, outputs: dict[str, Any], batch: Batch, stage: str = "test"
    ) -> list[Prediction]:
        """Decode class-specific boxes, apply ``<stage>_postprocess`` per image, map back to the
        original image (``orig = (input - pad) / scale``) and clip to it."""
        if stage not in STAGES:
            raise ValueError(f"FasterRCNNHead: stage must be one of {STAGES}, got {stage!r}")
        settings = self.postprocessors[stage]
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
