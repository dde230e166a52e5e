"""The flat ``FasterRCNNHead`` arguments of detlab <= 1b54f77 and where each one went: a recipe
that still uses one gets a ConfigError naming the nested key (nothing is translated silently)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from ...registry import closest
from .two_stage import OWNER

__all__ = ["LEGACY_KEYS", "flat_kwargs_error"]

#: The flat arguments of detlab <= 1b54f77 and the nested recipe key that replaced each one.
LEGACY_KEYS: dict[str, str] = {
    "anchor_sizes": "rpn.anchor_generator.sizes",
    "aspect_ratios": "rpn.anchor_generator.aspect_ratios",
    "rpn_conv_depth": "rpn.conv_depth",
    "rpn_fg_iou": "rpn.assigner.pos_iou",
    "rpn_bg_iou": "rpn.assigner.neg_iou",
    "rpn_batch_size": "rpn.sampler.num",
    "rpn_positive_fraction": "rpn.sampler.pos_fraction",
    "rpn_pre_nms_topk": "rpn.pre_nms_topk",
    "rpn_post_nms_topk": "rpn.post_nms_topk",
    "rpn_nms_iou": "rpn.nms.iou_threshold",
    "rpn_score_threshold": "rpn.nms.score_threshold",
    "roi_levels": "roi.roi_align.levels",
    "roi_output_size": "roi.roi_align.output_size",
    "roi_sampling_ratio": "roi.roi_align.sampling_ratio",
    "box_head": "roi.box_head=dict(type='TwoMLPBoxHead' or 'ConvFCBoxHead', ...)",
    "representation_size": "roi.box_head.representation_size",
    "conv_channels": "roi.box_head.conv_channels (type='ConvFCBoxHead')",
    "box_head_norm": "roi.box_head.norm (type='ConvFCBoxHead')",
    "roi_fg_iou": "roi.assigner.pos_iou",
    "roi_bg_iou": "roi.assigner.neg_iou",
    "roi_batch_size": "roi.sampler.num",
    "roi_positive_fraction": "roi.sampler.pos_fraction",
    "box_coder_weights": "roi.box_coder.weights",
    "box_loss": "roi.loss_box",
    "cls_loss": "roi.loss_cls",
    "val_postprocess": "postprocessor.val",
    "test_postprocess": "postprocessor.test",
}


def flat_kwargs_error(kwargs: Mapping[str, Any]) -> ConfigError:
    """The ConfigError for arguments ``FasterRCNNHead`` does not take: each flat argument of
    earlier versions with its nested key, other names with the closest accepted one."""
    accepted = ["in_channels", "strides", "num_classes", "rpn", "roi", "postprocessor"]
    moved = [f"{k} -> model.head.{LEGACY_KEYS[k]}" for k in kwargs if k in LEGACY_KEYS]
    unknown = []
    for k in kwargs:
        if k not in LEGACY_KEYS:
            hint = closest(k, accepted, n=1)
            unknown.append(f"{k!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    parts = []
    if moved:
        parts.append("flat arguments moved into nested components (see "
                     "docs/detection-faster-rcnn.md): " + "; ".join(moved) + ". A checkpoint "
                     "trained before this change keeps its weights: load it with --recipe and a "
                     "recipe in the nested form")
    if unknown:
        parts.append(f"unknown argument(s) {', '.join(unknown)}; it accepts: "
                     f"{', '.join(accepted)}")
    return ConfigError(f"{OWNER}: " + ". ".join(parts))
