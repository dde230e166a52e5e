"""Region Proposal Network over pyramid levels (Ren et al. 2015, arXiv:1506.01497), for
:class:`~detlab.models.heads.faster_rcnn.FasterRCNNHead`.

torchvision's ``RPNHead`` predicts objectness and deltas; torchvision's ``RegionProposalNetwork``
supplies the anchor matching, the balanced sampling and the loss. Anchors (unrounded, at cell
centres, from the recipe: :mod:`detlab.ops.anchors`) and proposal filtering are ours, and the
train/test top-k is chosen by the caller (``mode``), never by ``self.training``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.rpn import (
    RegionProposalNetwork,
    RPNHead,
    concat_box_prediction_layers,
)
from torchvision.ops import boxes as box_ops

from ...errors import ConfigError
from ...ops.anchors import cell_anchors, grid_anchors

__all__ = ["RPN", "check_topk"]

MODES = ("train", "test")


def check_topk(owner: str, arg: str, value: object) -> dict[str, int]:
    """``{"train": int, "test": int}`` from a dict with those keys (ints >= 1) or one int."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"train": value, "test": value}
    if not isinstance(value, Mapping) or set(value) != set(MODES) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value.values()
    ):
        raise ConfigError(
            f"{owner}: {arg} must be dict(train=int, test=int) with ints >= 1 (or one int), "
            f"got {value!r}"
        )
    return {k: int(value[k]) for k in MODES}


class RPN(nn.Module):
    """Objectness + box deltas per anchor, proposals, and the RPN loss.

    Args:
        in_channels: channels of every pyramid level (shared head).
        strides: stride of each level in px.
        sizes, ratios: per-level anchor sizes and h/w ratios from
            :func:`~detlab.ops.anchors.anchor_config`.
        conv_depth: 3x3 convs before the predictors (torchvision v2 uses 2).
        fg_iou, bg_iou: anchors with IoU >= fg_iou are positive, < bg_iou negative.
        batch_size, positive_fraction: anchors sampled per image for the loss.
        pre_nms_topk: ``{"train", "test"}`` proposals kept per level before NMS.
        post_nms_topk: ``{"train", "test"}`` proposals kept per image after NMS.
        nms_iou: NMS threshold over proposals (per level, as torchvision).
        score_threshold: minimum objectness probability of a proposal.
        min_size: proposals with a side below this (px) are dropped.
    """

    def __init__(
        self,
        in_channels: int,
        strides: Sequence[int],
        sizes: Sequence[Sequence[float]],
        ratios: Sequence[Sequence[float]],
        conv_depth: int,
        fg_iou: float,
        bg_iou: float,
        batch_size: int,
        positive_fraction: float,
        pre_nms_topk: Mapping[str, int],
        post_nms_topk: Mapping[str, int],
        nms_iou: float,
        score_threshold: float,
        min_size: float = 1e-3,
    ) -> None:
        super().__init__()
        self.strides = [int(s) for s in strides]
        self.num_anchors = len(sizes[0]) * len(ratios[0])
        for level, (s, r) in enumerate(zip(sizes, ratios)):
            self.register_buffer(f"cell_{level}", cell_anchors(s, r), persistent=False)
        # torchvision's RPN object lends its matcher, sampler, box coder and loss; its forward
        # (anchor generator, self.training-dependent top-k) is not used.
        self.core = RegionProposalNetwork(
            anchor_generator=None,
            head=RPNHead(in_channels, self.num_anchors, conv_depth=conv_depth),
            fg_iou_thresh=fg_iou,
            bg_iou_thresh=bg_iou,
            batch_size_per_image=batch_size,
            positive_fraction=positive_fraction,
            pre_nms_top_n={"training": pre_nms_topk["train"], "testing": pre_nms_topk["test"]},
            post_nms_top_n={"training": post_nms_topk["train"], "testing": post_nms_topk["test"]},
            nms_thresh=nms_iou,
            score_thresh=score_threshold,
        )
        self.pre_nms_topk = dict(pre_nms_topk)
        self.post_nms_topk = dict(post_nms_topk)
        self.nms_iou = float(nms_iou)
        self.score_threshold = float(score_threshold)
        self.min_size = float(min_size)

    @property
    def cells(self) -> list[Tensor]:
        """Per-level ``(A, 4)`` anchors centred on (0, 0)."""
        return [getattr(self, f"cell_{i}") for i in range(len(self.strides))]

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """Raw RPN outputs for pyramid maps ``(B, C, H_l, W_l)``.

        Returns ``objectness`` logits ``(B, N)``, ``deltas`` ``(B, N, 4)``, ``anchors`` ``(N, 4)``
        xyxy px (the same for every image) and the anchor count per level; ``N = sum_l H_l W_l A``.
        """
        if len(feats) != len(self.strides):
            raise ValueError(f"RPN built for {len(self.strides)} levels, got {len(feats)} maps")
        logits, deltas = self.core.head(feats)
        per_level = [int(o.shape[1] * o.shape[2] * o.shape[3]) for o in logits]
        logits, deltas = concat_box_prediction_layers(logits, deltas)
        b = feats[0].shape[0]
        anchors = grid_anchors([tuple(f.shape[-2:]) for f in feats], self.strides, self.cells,
                               feats[0].device)
        return logits.view(b, -1), deltas.view(b, -1, 4), anchors.to(deltas.dtype), per_level

    @torch.no_grad()
    def proposals(
        self,
        objectness: Tensor,
        deltas: Tensor,
        anchors: Tensor,
        per_level: Sequence[int],
        image_size: tuple[int, int],
        mode: str,
    ) -> list[Tensor]:
        """Per image ``(P_i, 4)`` xyxy proposals: per-level top-k by objectness, decode, clip to
        ``image_size`` (h, w), drop tiny and low-score boxes, NMS per level, top-k per image.

        Only the kept top-k deltas are decoded (torchvision decodes every anchor first).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        pre, post = self.pre_nms_topk[mode], self.post_nms_topk[mode]
        objectness = objectness.detach()
        picks, levels, offset = [], [], 0
        for level, n in enumerate(per_level):
            k = min(pre, n)
            idx = objectness[:, offset:offset + n].topk(k, dim=1).indices + offset
            picks.append(idx)
            levels.append(torch.full((k,), level, dtype=torch.int64, device=idx.device))
            offset += n
        idx = torch.cat(picks, dim=1)  # (B, K)
        level_ids = torch.cat(levels)
        scores = objectness.gather(1, idx).sigmoid()
        chosen_deltas = deltas.detach().gather(1, idx[..., None].expand(-1, -1, 4))
        boxes = self.core.box_coder.decode_single(
            chosen_deltas.reshape(-1, 4), anchors[idx.reshape(-1)]
        ).view(idx.shape[0], -1, 4)
        out = []
        for img_boxes, img_scores in zip(boxes, scores):
            img_boxes = box_ops.clip_boxes_to_image(img_boxes, image_size)
            wh = img_boxes[:, 2:] - img_boxes[:, :2]
            keep = (wh >= self.min_size).all(dim=1) & (img_scores >= self.score_threshold)
            kept_boxes = img_boxes[keep]
            # torchvision's per-level loop, not detlab.ops.nms: with a few large groups (levels)
            # one pass over class-offset boxes costs more (~70 vs ~125 ms for 5 x 1000 on CPU).
            order = box_ops.batched_nms(kept_boxes, img_scores[keep], level_ids[keep], self.nms_iou)
            out.append(kept_boxes[order[:post]])
        return out

    def loss(
        self, objectness: Tensor, deltas: Tensor, anchors: Tensor, targets: list[dict[str, Tensor]]
    ) -> tuple[Tensor, Tensor]:
        """``(objectness BCE, box smooth L1)`` over ``batch_size`` sampled anchors per image
        (torchvision's loss); ``targets``: per image ``boxes`` ``(G, 4)`` xyxy px (G may be 0)."""
        anchor_list = [anchors] * objectness.shape[0]
        labels, matched = self.core.assign_targets_to_anchors(anchor_list, targets)
        # positive anchors before sampling, for the collapse check (FasterRCNNHead.last_stats)
        self.last_num_pos = sum((lab == 1).sum() for lab in labels)
        regression = self.core.box_coder.encode(matched, anchor_list)
        return self.core.compute_loss(
            objectness.reshape(-1, 1), deltas.reshape(-1, 4), labels, regression
        )
