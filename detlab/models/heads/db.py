"""``DBHead``: Differentiable Binarization text detection (Liao et al. 2020, "Real-time Scene
Text Detection with Differentiable Binarization", arXiv:1911.08947)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...checks import check_float, check_int
from ...errors import ConfigError, DataError
from ...ops.coords import content_region
from ...registry import HEADS, LOSSES
from ...structures import Batch, Prediction
from ..layers import Norm, check_norm, norm_layer, output_conv
from ..necks.db_fpn import check_levels
from .base import Head

__all__ = ["DBHead"]

TARGET_KEYS = ("prob_map", "prob_mask", "thresh_map", "thresh_mask")
_PROB_PRIOR = 0.01  # initial text probability of every pixel


@HEADS.register
class DBHead(Head):
    """Probability and threshold branches + approximate binary map on one fused feature map.

    The fused map comes from the neck, ``model.neck=dict(type="DBFPN", inner_channels=...)``
    (:class:`~detlab.models.necks.db_fpn.DBFPN`), at stride ``s = strides[0]``. Each branch is
    a 3x3 conv-norm-ReLU followed by ``min(2, floor(log2 s))`` 2x2 stride-2 transposed convs
    (the paper's two for ``s = 4``); whatever factor is left is bilinear upsampling, so every
    map comes out at the (padded) input resolution ``(H, W) = (H_0 s, W_0 s)``. The probability
    branch gives logits (the loss uses BCE-with-logits, stable under AMP), the threshold branch
    a sigmoid, and the approximate binary map is ``B = sigmoid(k (sigmoid(P) - T))`` (eq. 2 of
    the paper). The probability logits start at a 1 % text prior (:meth:`init_prob_bias`), so
    an untrained or briefly trained model does not sit above the binarization threshold
    everywhere.

    Args:
        in_channels: channels of the one fused level (given by ``Model`` from the neck).
        strides: its stride in pixels (given by ``Model``).
        branch_channels: width of both branches; default ``in_channels[0] // 4`` (DB: 64 on
            the 256-channel fused map).
        k: amplifying factor of the differentiable binarization (DB: 50).
        norm: normalization in the branches, one of :data:`~detlab.models.layers.NORMS`.
        loss: config dict (``LOSSES``) or module called as ``loss(outputs, targets)`` with
            ``outputs`` ``prob`` (logits), ``thresh``, ``binary`` ``(B, 1, H, W)`` and
            ``targets`` ``prob_map``, ``prob_mask``, ``thresh_map``, ``thresh_mask``
            ``(B, H, W)``; returns a dict of terms (or one Tensor). Default: ``DBLoss()``.
        postprocessor: the post-processing slot (``dict(type="DBPostProcessor", ...,
            val=dict(...), test=dict(...))``); each stage's post-processor is called as
            ``(prob (H, W), scale, pad, orig_size) -> (polygons, scores)``. Default:
            ``DBPostProcessor()``.

    ``forward(feats)`` returns ``{"prob_logits", "thresh", "binary"}``, each ``(B, 1, H, W)``,
    always all three. Targets come from the data pipeline (``batch.targets[i]`` holds the four
    ``(H, W)`` maps of :func:`~detlab.data.db_targets.make_db_targets`, padded by collate).
    Each loss call sets ``last_stats`` (``num_pos`` text pixels, ``num_gt`` words) for the
    collapse check.

    Extension hooks: :meth:`build_prob_branch`, :meth:`build_thresh_branch` (default
    :meth:`upsample_branch`) and :meth:`init_prob_bias`.
    """

    renamed_args = {
        **Head.renamed_args,
        "inner_channels": "model.neck.inner_channels (the DB neck is now "
                          "model.neck=dict(type='DBFPN', inner_channels=...))",
    }

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        branch_channels: int | None = None,
        k: float = 50.0,
        norm: Norm = "batch",
        loss: Any = None,
        postprocessor: Any = None,
    ) -> None:
        super().__init__()
        in_channels, strides = check_levels("DBHead", in_channels, strides)
        if len(in_channels) != 1:
            raise ConfigError(
                f"DBHead: takes one fused feature map, got {len(in_channels)} levels (strides "
                f"{strides}); set model.neck=dict(type='DBFPN', inner_channels=256), which fuses "
                "the backbone levels (the head no longer builds its own neck)")
        self.k = check_float("DBHead", "k (amplifying factor)", k, low=0, low_open=True)
        self.norm = check_norm("DBHead", norm)
        self.stride = strides[0]
        self.branch_channels = check_int(
            "DBHead", "branch_channels",
            in_channels[0] // 4 if branch_channels is None else branch_channels, low=1)
        self.num_up = min(2, int(math.floor(math.log2(self.stride))))
        self.prob_branch = self.build_prob_branch(in_channels[0])
        self.thresh_branch = self.build_thresh_branch(in_channels[0])
        for m in [*self.prob_branch.modules(), *self.thresh_branch.modules()]:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.init_prob_bias(self.prob_branch, _PROB_PRIOR)
        self.loss_fn = LOSSES.build(
            dict(type="DBLoss") if loss is None else loss, key="model.head.loss"
        )
        if not callable(self.loss_fn):
            raise ConfigError(f"DBHead: loss must be a config dict or a callable, got "
                              f"{self.loss_fn!r}")
        self.build_postprocessor(postprocessor, dict(type="DBPostProcessor"))

    # -- extension hooks --------------------------------------------------------------------
    def upsample_branch(self, in_channels: int) -> nn.Sequential:
        """3x3 conv-norm-ReLU to ``branch_channels``, then ``num_up`` 2x2 stride-2 transposed
        convs (norm-ReLU between them) ending in one channel; a 1x1 conv ends it when
        ``num_up == 0``. ``(B, in_channels, h, w) -> (B, 1, h 2**num_up, w 2**num_up)``."""
        mid = self.branch_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, mid, 3, padding=1,
                                             bias=self.norm == "none")]
        layers += [m for m in (norm_layer(self.norm, mid), nn.ReLU(True)) if m is not None]
        for i in range(self.num_up):
            last = i == self.num_up - 1
            layers.append(nn.ConvTranspose2d(mid, 1 if last else mid, 2, stride=2))
            if not last:
                layers += [m for m in (norm_layer(self.norm, mid), nn.ReLU(True))
                           if m is not None]
        if self.num_up == 0:
            layers.append(nn.Conv2d(mid, 1, 1))
        return nn.Sequential(*layers)

    def build_prob_branch(self, in_channels: int) -> nn.Module:
        """The probability branch: ``(B, in_channels, h, w) -> (B, 1, h', w')`` logits (any
        ``h' <= H``: the rest is bilinear upsampling); its last conv gets
        :meth:`init_prob_bias`."""
        return self.upsample_branch(in_channels)

    def build_thresh_branch(self, in_channels: int) -> nn.Module:
        """The threshold branch: ``(B, in_channels, h, w) -> (B, 1, h', w')`` logits of the
        threshold map (bilinearly upsampled to the input size like the probability's)."""
        return self.upsample_branch(in_channels)

    def init_prob_bias(self, branch: nn.Module, prior: float) -> None:
        """Start every pixel's text probability at ``prior``: the bias of ``branch``'s last
        conv becomes ``log(prior / (1 - prior))``.

        RetinaNet's init (arXiv:1708.02002): with sigmoid(0) = 0.5 the whole background lies
        above the binarization threshold (0.3) until training pushes it down, and the mined BCE
        only pushes the hardest negatives, so a short schedule would predict one image-sized
        blob."""
        nn.init.constant_(output_conv(branch).bias, -math.log((1 - prior) / prior))

    def forward(self, feats: list[Tensor]) -> dict[str, Tensor]:
        """``prob_logits``, ``thresh`` (in [0, 1]) and ``binary`` (in [0, 1]), each
        ``(B, 1, H_0 s, W_0 s)`` for a finest level of ``(H_0, W_0)`` and stride ``s``."""
        fused = feats[0]
        prob_logits = self.prob_branch(fused)
        thresh_logits = self.thresh_branch(fused)
        size = (fused.shape[-2] * self.stride, fused.shape[-1] * self.stride)
        if prob_logits.shape[-2:] != size:
            prob_logits = F.interpolate(prob_logits, size=size, mode="bilinear",
                                        align_corners=False)
        if thresh_logits.shape[-2:] != size:  # checked apart: a subclass may change one branch
            thresh_logits = F.interpolate(thresh_logits, size=size, mode="bilinear",
                                          align_corners=False)
        thresh = torch.sigmoid(thresh_logits)
        binary = torch.sigmoid(self.k * (torch.sigmoid(prob_logits) - thresh))
        return {"prob_logits": prob_logits, "thresh": thresh, "binary": binary}

    # -- loss -------------------------------------------------------------------------------
    def compute_loss(self, outputs: Mapping[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """Loss terms on outputs cropped to ``batch.images`` size vs. the stacked target maps."""
        h, w = batch.images.shape[-2:]
        cropped = {
            "prob": outputs["prob_logits"][..., :h, :w],
            "thresh": outputs["thresh"][..., :h, :w],
            "binary": outputs["binary"][..., :h, :w],
        }
        device = cropped["prob"].device
        targets = {
            key: torch.stack([_target_map(t, key, i, (h, w)) for i, t in
                              enumerate(batch.targets)]).to(device)
            for key in TARGET_KEYS
        }
        # Per-step counts for the collapse check (DiagnosticsCallback), not loss terms.
        self.last_stats = {
            "num_pos": ((targets["prob_map"] > 0.5) & (targets["prob_mask"] > 0.5)).sum(),
            "num_gt": torch.as_tensor(sum(_num_words(t) for t in batch.targets)),
        }
        out = self.loss_fn(cropped, targets)
        if isinstance(out, Tensor):
            return {"loss_db": out}
        if isinstance(out, Mapping):
            return {(k if k.startswith("loss_") else f"loss_{k}"): v for k, v in out.items()}
        raise ConfigError(
            f"DBHead: loss returned {type(out).__name__}; expected a Tensor or a dict of Tensors"
        )

    # -- predictions ------------------------------------------------------------------------
    def postprocess(
        self, outputs: Mapping[str, Tensor], batch: Batch, stage: str = "test"
    ) -> list[Prediction]:
        """Per image: sigmoid of the probability logits cropped to the content region (the
        resized image inside the padded input, from ``meta``), then the ``stage``
        post-processor of ``self.postprocessor`` maps polygons back to original pixels with
        ``meta`` ``scale`` and ``orig_size``.
        ``extras["prob_map"]``: that cropped ``(h, w)`` probability map (input resolution, CPU)."""
        logits = outputs["prob_logits"].detach()
        image_size = tuple(batch.images.shape[-2:])
        # One device -> host copy per batch (the polygon search runs in OpenCV), not per image.
        probs = logits[:, 0].float().sigmoid().cpu()
        preds = []
        for i, meta in enumerate(batch.meta or [{}] * logits.shape[0]):
            top, left, h, w = content_region(meta, image_size)
            prob = probs[i, top : top + h, left : left + w].clone()  # not a view of the batch
            orig = meta.get("orig_size")
            polygons, scores = self.postprocessor(
                prob.numpy(), stage=stage,
                scale=tuple(meta.get("scale", (1.0, 1.0))),
                pad=(0.0, 0.0),  # the crop already starts at the content region's corner
                orig_size=None if orig is None else tuple(int(v) for v in orig),
            )
            preds.append(Prediction(
                polygons=list(polygons),
                scores=torch.as_tensor(np.asarray(scores, dtype=np.float32)),
                extras={"prob_map": prob},
            ))
        return preds


def _num_words(target: Mapping[str, Any]) -> Tensor | int:
    """Words of one target that are not marked ``###`` (a tensor when counted from an
    ``ignore`` tensor: no host read per image)."""
    n = len(target.get("polygons") or [])
    ignore = target.get("ignore")
    if ignore is not None and len(ignore) == n:
        return n - torch.as_tensor(ignore).bool().sum()
    return n


def _target_map(target: Mapping[str, Any], key: str, index: int, size: tuple[int, int]
                ) -> Tensor:
    """One ``(H, W)`` float target map of image ``index``, checked against the batch size."""
    value = target.get(key)
    if value is None:
        raise DataError(
            f"DBHead: image {index} of the batch has no {key!r} target; text datasets "
            "(IcdarTxt, ReceiptJson, SyntheticReceipts) compute the DB maps with "
            "DBTargetGenerator in the data pipeline"
        )
    value = torch.as_tensor(value)
    if value.ndim == 3 and value.shape[0] == 1:
        value = value[0]
    if tuple(value.shape) != tuple(size):
        raise DataError(
            f"DBHead: image {index}: target {key!r} has shape {tuple(value.shape)}, expected "
            f"{tuple(size)} (the batch image size)"
        )
    return value.float()
