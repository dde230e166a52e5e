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

from ...errors import ConfigError, DataError
from ...ops.coords import content_region
from ...registry import HEADS, LOSSES, POSTPROCESSORS
from ...structures import Batch, Prediction
from ..necks.db_fpn import DBFPN, check_levels
from .base import Head

__all__ = ["DBHead"]

TARGET_KEYS = ("prob_map", "prob_mask", "thresh_map", "thresh_mask")
_PROB_PRIOR = 0.01  # initial text probability of every pixel


def _branch(in_channels: int, mid: int, num_up: int) -> nn.Sequential:
    """3x3 conv-BN-ReLU, then ``num_up`` 2x2 stride-2 transposed convs (BN-ReLU between them)
    ending in one channel; a 1x1 conv ends it when ``num_up == 0``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(True)
    ]
    for i in range(num_up):
        last = i == num_up - 1
        layers.append(nn.ConvTranspose2d(mid, 1 if last else mid, 2, stride=2))
        if not last:
            layers += [nn.BatchNorm2d(mid), nn.ReLU(True)]
    if num_up == 0:
        layers.append(nn.Conv2d(mid, 1, 1))
    return nn.Sequential(*layers)


@HEADS.register
class DBHead(Head):
    """DB neck + probability and threshold branches + approximate binary map.

    The neck (:class:`~detlab.models.necks.db_fpn.DBFPN`) fuses the levels into one map at the
    finest stride ``s = strides[0]``. Each branch is a 3x3 conv-BN-ReLU followed by
    ``min(2, floor(log2 s))`` 2x2 stride-2 transposed convs (the paper's two for ``s = 4``);
    whatever factor is left is bilinear upsampling, so every map comes out at the (padded)
    input resolution ``(H, W) = (H_0 s, W_0 s)``. The probability branch gives logits (the
    loss uses BCE-with-logits, stable under AMP), the threshold branch a sigmoid, and the
    approximate binary map is ``B = sigmoid(k (sigmoid(P) - T))`` (eq. 2 of the paper). The
    probability logits start at a 1 % text prior (bias init), so an untrained or briefly
    trained model does not sit above the binarization threshold everywhere.

    Args:
        in_channels: channels of each feature level, finest first (given by ``Model``); the
            paper uses strides 4-32 (timm ``out_indices=(1, 2, 3, 4)``).
        strides: stride of each level in pixels, increasing (given by ``Model``).
        inner_channels: neck width, a multiple of 4 (DB: 256); the branches use a quarter.
        k: amplifying factor of the differentiable binarization (DB: 50).
        loss: config dict (``LOSSES``) or module called as ``loss(outputs, targets)`` with
            ``outputs`` ``prob`` (logits), ``thresh``, ``binary`` ``(B, 1, H, W)`` and
            ``targets`` ``prob_map``, ``prob_mask``, ``thresh_map``, ``thresh_mask``
            ``(B, H, W)``; returns a dict of terms (or one Tensor). Default: ``DBLoss()``.
        postprocess: config dict (``POSTPROCESSORS``) or callable
            ``(prob (H, W), scale, pad, orig_size) -> (polygons, scores)``, stored as
            :attr:`postprocessor`. Default: ``DBPostProcessor()``.

    ``forward(feats)`` returns ``{"prob_logits", "thresh", "binary"}``, each ``(B, 1, H, W)``,
    always all three. Targets come from the data pipeline (``batch.targets[i]`` holds the four
    ``(H, W)`` maps of :func:`~detlab.data.db_targets.make_db_targets`, padded by collate).
    Each loss call sets ``last_stats`` (``num_pos`` text pixels, ``num_gt`` words) for the
    collapse check.
    """

    # Constructor arguments that only change post-processing: ``detlab sweep`` may vary
    # ``model.head.postprocess.<field>`` and reuse the network's raw outputs.
    postprocess_args = ("postprocess",)

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        inner_channels: int = 256,
        k: float = 50.0,
        loss: Any = None,
        postprocess: Any = None,
    ) -> None:
        super().__init__()
        in_channels, strides = check_levels("DBHead", in_channels, strides)
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not k > 0:
            raise ConfigError(f"DBHead: k (amplifying factor) must be a number > 0, got {k!r}")
        self.neck = DBFPN(in_channels, strides, inner_channels)
        self.stride = strides[0]
        self.k = float(k)
        num_up = min(2, int(math.floor(math.log2(self.stride))))
        fused, mid = self.neck.channels[0], inner_channels // 4
        self.prob_branch = _branch(fused, mid, num_up)
        self.thresh_branch = _branch(fused, mid, num_up)
        for m in [*self.prob_branch.modules(), *self.thresh_branch.modules()]:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Start the probability map at a low prior (RetinaNet's init, arXiv:1708.02002): with
        # sigmoid(0) = 0.5 the whole background lies above the binarization threshold (0.3)
        # until training pushes it down, and the mined BCE only pushes the hardest negatives,
        # so a short schedule would predict one image-sized blob.
        nn.init.constant_(self.prob_branch[-1].bias, -math.log((1 - _PROB_PRIOR) / _PROB_PRIOR))
        self.loss_fn = LOSSES.build(
            dict(type="DBLoss") if loss is None else loss, key="model.head.loss"
        )
        self.postprocessor = POSTPROCESSORS.build(
            dict(type="DBPostProcessor") if postprocess is None else postprocess,
            key="model.head.postprocess",
        )
        for name, obj in (("loss", self.loss_fn), ("postprocess", self.postprocessor)):
            if not callable(obj):
                raise ConfigError(f"DBHead: {name} must be a config dict or a callable, got "
                                  f"{obj!r}")

    def forward(self, feats: list[Tensor]) -> dict[str, Tensor]:
        """``prob_logits``, ``thresh`` (in [0, 1]) and ``binary`` (in [0, 1]), each
        ``(B, 1, H_0 s, W_0 s)`` for a finest level of ``(H_0, W_0)`` and stride ``s``."""
        fused = self.neck(feats)[0]
        prob_logits = self.prob_branch(fused)
        thresh_logits = self.thresh_branch(fused)
        size = (fused.shape[-2] * self.stride, fused.shape[-1] * self.stride)
        if prob_logits.shape[-2:] != size:
            prob_logits = F.interpolate(prob_logits, size=size, mode="bilinear",
                                        align_corners=False)
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
            "num_gt": torch.tensor(sum(_num_words(t) for t in batch.targets)),
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
        resized image inside the padded input, from ``meta``), then :attr:`postprocessor`
        maps polygons back to original pixels with ``meta`` ``scale`` and ``orig_size``.
        ``extras["prob_map"]``: that cropped ``(h, w)`` probability map (input resolution, CPU)."""
        logits = outputs["prob_logits"].detach()
        image_size = tuple(batch.images.shape[-2:])
        preds = []
        for i, meta in enumerate(batch.meta or [{}] * logits.shape[0]):
            top, left, h, w = content_region(meta, image_size)
            prob = logits[i, 0, top : top + h, left : left + w].float().sigmoid().cpu()
            orig = meta.get("orig_size")
            polygons, scores = self.postprocessor(
                prob.numpy(),
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


def _num_words(target: Mapping[str, Any]) -> int:
    """Words of one target that are not marked ``###``."""
    n = len(target.get("polygons") or [])
    ignore = target.get("ignore")
    return n - int(torch.as_tensor(ignore).bool().sum()) if ignore is not None and len(
        ignore) == n else n


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
