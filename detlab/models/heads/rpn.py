"""Region Proposal Network over pyramid levels (Ren et al. 2015, arXiv:1506.01497): the ``rpn``
stage of :class:`~detlab.models.heads.faster_rcnn.FasterRCNNHead`.

torchvision's ``RPNHead`` predicts objectness and deltas. The rest are recipe components:
anchors (unrounded, at cell centres: :mod:`detlab.ops.anchors`), a registered assigner
(``MaxIoUAssigner``), a registered sampler (``BalancedSampler``), the box coder, the losses and
the proposal filter. The train/test top-k is chosen by the caller (``mode``), never by
``self.training``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.rpn import RPNHead, concat_box_prediction_layers
from torchvision.ops import boxes as box_ops

from ...assigners import maxiou as _maxiou  # noqa: F401  (registers MaxIoUAssigner)
from ...assigners import sampling as _sampling  # noqa: F401  (registers BalancedSampler)
from ...checks import check_float, check_int, is_int
from ...errors import ConfigError
from ...ops.anchors import anchor_config, cell_anchors, grid_anchors
from ...registry import ASSIGNERS, BOX_SAMPLERS, LOSSES
from .two_stage import OWNER, build_box_coder, component, regression_loss, settings

__all__ = ["RPN", "check_topk", "ANCHOR_DEFAULTS"]

MODES = ("train", "test")
#: torchvision's FPN anchors: one size per level P2-P6, three ratios.
ANCHOR_DEFAULTS: dict[str, Any] = dict(sizes=((32,), (64,), (128,), (256,), (512,)),
                                       aspect_ratios=(0.5, 1.0, 2.0))
_NMS_DEFAULTS: dict[str, Any] = dict(iou_threshold=0.7, score_threshold=0.0, min_size=1e-3)
_TOPK_DEFAULT = dict(train=2000, test=1000)  # torchvision's


def check_topk(owner: str, arg: str, value: object) -> dict[str, int]:
    """``{"train": int, "test": int}`` from a dict with those keys (ints >= 1) or one int."""
    if is_int(value):
        value = {"train": value, "test": value}
    if not isinstance(value, Mapping) or set(value) != set(MODES) or not all(
        is_int(v) and v >= 1 for v in value.values()
    ):
        raise ConfigError(
            f"{owner}: {arg} must be dict(train=int, test=int) with ints >= 1 (or one int), "
            f"got {value!r}"
        )
    return {k: int(value[k]) for k in MODES}


class RPN(nn.Module):
    """Objectness + box deltas per anchor, proposals, and the RPN loss.

    Args:
        in_channels: channels of every pyramid level (shared head); given by the head.
        strides: stride of each level in px; given by the head.
        anchor_generator: ``dict(sizes=..., aspect_ratios=...)``: one size group per feature
            level, finest first (a size in px or a list of sizes), and height / width ratios
            shared by every level or one list per level. Anchors per location (sizes x ratios
            of a level) size the RPN head and must be the same on every level.
        conv_depth: 3x3 convs before the predictors (torchvision v1: 1, v2: 2).
        assigner: anchor matching, default ``dict(type="MaxIoUAssigner", pos_iou=0.7,
            neg_iou=0.3, low_quality_matches=True)``.
        sampler: anchors the loss sees per image, default ``dict(type="BalancedSampler",
            num=256, pos_fraction=0.5)``.
        nms: ``dict(iou_threshold=0.7, score_threshold=0.0, min_size=1e-3)``: proposal NMS IoU
            (per level, as torchvision), minimum objectness probability, minimum side (px).
        pre_nms_topk: ``dict(train=2000, test=1000)`` proposals kept per level before NMS.
        post_nms_topk: ``dict(train=2000, test=1000)`` proposals kept per image after NMS.
        box_coder: ``dict(weights=(1.0, 1.0, 1.0, 1.0))``: anchor delta encoding.
        loss_cls: ``None`` (torchvision's BCE, mean over sampled anchors) or a loss called as
            ``loss(logits (S, 1), targets (S, 1), avg_factor=S)`` (``SigmoidBCELoss`` …).
        loss_box: default ``dict(type="SmoothL1Loss", beta=1/9)`` on deltas, averaged over the
            sampled anchors as torchvision does; IoU-family losses get decoded boxes.
        key: where this stage sits in the recipe, for messages.
    """

    def __init__(
        self,
        in_channels: int,
        strides: Sequence[int],
        anchor_generator: Mapping[str, Any] | None = None,
        conv_depth: int = 1,
        assigner: Any = None,
        sampler: Any = None,
        nms: Mapping[str, Any] | None = None,
        pre_nms_topk: Mapping[str, int] | int | None = None,
        post_nms_topk: Mapping[str, int] | int | None = None,
        box_coder: Mapping[str, Any] | None = None,
        loss_cls: Any = None,
        loss_box: Any = None,
        key: str = "model.head.rpn",
    ) -> None:
        super().__init__()
        self.strides = [int(s) for s in strides]
        gen_key = f"{key}.anchor_generator"
        gen = settings(anchor_generator, ANCHOR_DEFAULTS, gen_key)
        try:
            self.anchor_sizes, self.aspect_ratios = anchor_config(
                gen["sizes"], gen["aspect_ratios"], self.strides, f"{OWNER}: {gen_key}")
        except ConfigError as err:  # ops.anchors says anchor_sizes; the recipe key is sizes
            raise ConfigError(str(err).replace(": anchor_sizes ", ": sizes ")) from None
        self.num_anchors = len(self.anchor_sizes[0]) * len(self.aspect_ratios[0])
        for level, (s, r) in enumerate(zip(self.anchor_sizes, self.aspect_ratios)):
            self.register_buffer(f"cell_{level}", cell_anchors(s, r), persistent=False)
        check_int(OWNER, f"{key}.conv_depth", conv_depth, low=1)
        # ``core.head``: the state_dict keys (rpn.core.head.*) of checkpoints written when
        # ``core`` was torchvision's RegionProposalNetwork.
        self.core = nn.ModuleDict(
            {"head": RPNHead(in_channels, self.num_anchors, conv_depth=conv_depth)})
        self.assigner = ASSIGNERS.build(component(assigner, dict(
            type="MaxIoUAssigner", pos_iou=0.7, neg_iou=0.3, low_quality_matches=True)),
            key=f"{key}.assigner")
        self.sampler = BOX_SAMPLERS.build(component(sampler, dict(
            type="BalancedSampler", num=256, pos_fraction=0.5)), key=f"{key}.sampler")
        nms = settings(nms, _NMS_DEFAULTS, f"{key}.nms")
        self.nms_iou = check_float(OWNER, f"{key}.nms.iou_threshold", nms["iou_threshold"],
                                   low=0.0, high=1.0)
        self.score_threshold = check_float(OWNER, f"{key}.nms.score_threshold",
                                           nms["score_threshold"], low=0.0, high=1.0)
        self.min_size = check_float(OWNER, f"{key}.nms.min_size", nms["min_size"], low=0.0)
        self.pre_nms_topk = check_topk(OWNER, f"{key}.pre_nms_topk", pre_nms_topk or _TOPK_DEFAULT)
        self.post_nms_topk = check_topk(OWNER, f"{key}.post_nms_topk",
                                        post_nms_topk or _TOPK_DEFAULT)
        self.box_coder = build_box_coder(box_coder, (1.0, 1.0, 1.0, 1.0), f"{key}.box_coder")
        self.loss_cls = None if loss_cls is None else LOSSES.build(loss_cls,
                                                                   key=f"{key}.loss_cls")
        self.loss_box = LOSSES.build(
            loss_box if loss_box is not None else dict(type="SmoothL1Loss", beta=1 / 9),
            key=f"{key}.loss_box")
        for arg in ("loss_cls", "loss_box"):
            if getattr(self, arg) is not None and not callable(getattr(self, arg)):
                raise ConfigError(f"{OWNER}: {key}.{arg} must be a loss config or module, got "
                                  f"{getattr(self, arg)!r}")

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
        # Anchors stay float32 under autocast: half precision has 0.5 px steps at 512-1024 px
        # (bf16: 4 px), which shifts every regression target (fp64 kept for gradcheck).
        dtype = torch.promote_types(deltas.dtype, torch.float32)
        return logits.view(b, -1), deltas.view(b, -1, 4), anchors.to(dtype), per_level

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
        # decode_single casts the anchors to the deltas' dtype: decode in the anchors' (fp32).
        chosen_deltas = deltas.detach().gather(1, idx[..., None].expand(-1, -1, 4)).to(anchors)
        boxes = self.box_coder.decode_single(
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
        """``(objectness loss, box loss)`` over the sampled anchors of every image;
        ``targets``: per image ``boxes`` ``(G, 4)`` xyxy px (G may be 0)."""
        labels, matched = [], []
        for t in targets:
            result = self.assigner(anchors, t["boxes"])
            labels.append(result.labels)
            matched.append(result.matched(t["boxes"]))
        # positive anchors before sampling, for the collapse check (FasterRCNNHead.last_stats)
        self.last_num_pos = sum((lab == 1).sum() for lab in labels)
        regression = self.box_coder.encode(matched, [anchors] * len(targets))
        masks = [self.sampler(lab) for lab in labels]
        pos = torch.where(torch.cat([m[0] for m in masks]))[0]
        neg = torch.where(torch.cat([m[1] for m in masks]))[0]
        sampled = torch.cat([pos, neg])
        logits = objectness.flatten()[sampled]
        target = torch.cat(labels)[sampled].to(logits.dtype)
        if self.loss_cls is None:
            loss_cls = F.binary_cross_entropy_with_logits(logits, target)
        else:
            loss_cls = self.loss_cls(logits[:, None], target[:, None],
                                     avg_factor=float(max(sampled.numel(), 1)))
        loss_box = regression_loss(
            self.loss_box, deltas.reshape(-1, 4)[pos], torch.cat(regression)[pos],
            anchors.repeat(len(targets), 1)[pos], torch.cat(matched)[pos], self.box_coder,
            sampled.numel(),
        )
        return loss_cls, loss_box
