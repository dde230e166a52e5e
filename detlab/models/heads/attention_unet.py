"""``AttentionUNetHead``: U-Net decoder with additive attention gates on the skip connections
(Oktay et al. 2018, "Attention U-Net", arXiv:1804.03999)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...checks import check_choice, check_float, check_int, is_int
from ...errors import ConfigError, DataError
from ...ops.coords import content_region, maps_to_original
from ...postprocess.segmentation import SegmentationPostProcessor
from ...registry import HEADS, LOSSES
from ...structures import Batch, Prediction
from ..layers import Norm, check_norm, double_conv
from .base import Head

__all__ = ["AttentionGate", "AttentionUNetHead"]

DEFAULT_POSTPROCESSOR = dict(type=SegmentationPostProcessor.__name__, threshold=0.5)


class AttentionGate(nn.Module):
    """Additive attention gate, eq. (1)-(2) of arXiv:1804.03999.

    ``q = ReLU(W_x x + W_g g + b_g)``, ``alpha = sigmoid(psi q + b_psi)``, output ``x * alpha``.
    As in the paper, ``x`` is brought to the coarser grid of the gating signal ``g`` by
    ``W_x`` (a strided conv, kernel = stride = grid ratio) and ``alpha`` is resampled
    bilinearly back to ``x``'s grid.

    ``forward(x (B, Cx, H, W), g (B, Cg, h, w)) -> (x * alpha, alpha (B, 1, H, W) in [0, 1])``.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int,
                 ratio: int = 2) -> None:
        super().__init__()
        self.theta_x = nn.Conv2d(skip_channels, inter_channels, ratio, stride=ratio, bias=False)
        self.phi_g = nn.Conv2d(gate_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)

    def forward(self, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Gated skip ``x * alpha`` and the gate ``alpha`` ``(B, 1, H, W)`` in [0, 1]."""
        theta = self.theta_x(x)
        if theta.shape[-2:] != g.shape[-2:]:
            theta = F.interpolate(theta, size=g.shape[-2:], mode="bilinear", align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(theta + self.phi_g(g))))
        alpha = F.interpolate(alpha, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * alpha, alpha


@HEADS.register
class AttentionUNetHead(Head):
    """U-Net decoder over backbone features, attention-gated skips, logits at input size.

    From the coarsest level, each decoder block gates the next finer skip with the current
    decoder state (:class:`AttentionGate`), upsamples the state bilinearly to the skip's size,
    concatenates both and applies a double 3x3 conv. When the finest stride is > 1 (timm
    ResNets: 2) a final block upsamples to stride 1 and applies a double conv, then a 1x1 conv
    gives ``num_classes`` logits.

    Args:
        in_channels: channels of each feature level, finest first (given by ``Model``).
        strides: stride of each level in pixels, increasing, each dividing the next.
        num_classes: output channels (foreground classes for sigmoid; all classes incl.
            background for softmax).
        loss: config dict (built with ``LOSSES``) or module called as
            ``loss(logits (B, C, H, W), target (B, C, H, W) float)`` (softmax: one-hot target)
            returning a Tensor (reported as ``loss_<loss.name or "seg">``) or a dict of terms.
        decoder_channels: output channels of each decoder block, coarse to fine; one per skip
            plus one for the final up block when ``strides[0] > 1``. Default
            ``(256, 128, 64, 32, 16)`` cut to that length (16 repeated if longer).
        activation: ``"sigmoid"`` (independent channels) or ``"softmax"`` (exclusive classes).
        postprocessor: the post-processing slot, ``dict(type="SegmentationPostProcessor",
            threshold=0.5, val=dict(...), test=dict(...))``: a pixel is in the mask when its
            sigmoid probability is ``>= threshold`` (softmax: argmax). The same threshold is
            the evaluator's Dice/IoU threshold (predictions carry it as
            ``extras["threshold"]``): the one knob, ``model.head.postprocessor.threshold``.
        gate: ``"additive"`` attention gates or ``"none"`` (plain U-Net skips).
        norm: normalization in the decoder blocks, one of :data:`~detlab.models.layers.NORMS`.
        prior_prob: initial foreground probability of every pixel (sigmoid only): the
            classifier bias starts at ``log(p / (1 - p))`` (Lin et al. 2017, arXiv:1708.02002).
            With lesions on <1 % of pixels, starting at 0.5 wastes the first epochs pushing the
            background down and leaves probabilities uncalibrated; ``None`` keeps zero bias.

    ``forward`` returns ``{"logits": (B, C, H, W), "attention": [(B, 1, h_i, w_i), …]}`` with
    ``H, W`` = finest feature size × ``strides[0]`` and one gate map per skip, coarse to fine
    (empty with ``gate="none"``).

    Extension hooks: :meth:`build_gate` (one per skip) and :meth:`build_decoder_block`.
    """

    renamed_args = {**Head.renamed_args, "threshold": "postprocessor.threshold"}

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        loss: Any,
        decoder_channels: Sequence[int] | None = None,
        activation: Literal["sigmoid", "softmax"] = "sigmoid",
        postprocessor: Any = None,
        gate: Literal["additive", "none"] = "additive",
        norm: Norm = "batch",
        prior_prob: float | None = 0.01,
    ) -> None:
        super().__init__()
        in_channels, strides = _check_levels(in_channels, strides)
        own = "AttentionUNetHead"
        check_int(own, "num_classes", num_classes, low=1)
        check_choice(own, "activation", activation, ("sigmoid", "softmax"))
        if activation == "softmax" and num_classes < 2:
            raise ConfigError("AttentionUNetHead: activation='softmax' needs num_classes >= 2 "
                              "(background included); use 'sigmoid' for one foreground class")
        check_choice(own, "gate", gate, ("additive", "none"))
        self.norm = check_norm(own, norm)
        if prior_prob is not None:
            check_float(own, "prior_prob", prior_prob, low=0.0, high=1.0, low_open=True,
                        high_open=True)
        num_blocks = len(in_channels) - 1 + (strides[0] > 1)
        if decoder_channels is None:
            decoder_channels = [max(16, 256 >> i) for i in range(num_blocks)]
        decoder_channels = list(decoder_channels)
        if len(decoder_channels) != num_blocks or not all(
            is_int(c) and c > 0 for c in decoder_channels
        ):
            raise ConfigError(
                f"AttentionUNetHead: decoder_channels must be {num_blocks} positive ints (one per "
                f"skip connection{' + the final up block' if strides[0] > 1 else ''}), got "
                f"{decoder_channels!r}"
            )
        self.num_classes, self.activation = num_classes, activation
        self.strides = strides
        self.loss_fn = LOSSES.build(loss, key="model.head.loss")
        if not callable(self.loss_fn):
            raise ConfigError(
                f"AttentionUNetHead: loss must be a config dict or a module, got {loss!r}"
            )

        self.gates = nn.ModuleList()
        self.blocks = nn.ModuleList()
        state = in_channels[-1]
        for i, skip in enumerate(reversed(in_channels[:-1])):
            level = len(in_channels) - 2 - i
            if gate == "additive":
                self.gates.append(self.build_gate(skip, state, strides[level + 1] //
                                                  strides[level]))
            self.blocks.append(self.build_decoder_block(state + skip, decoder_channels[i]))
            state = decoder_channels[i]
        self.final_up = (self.build_decoder_block(state, decoder_channels[-1])
                         if strides[0] > 1 else None)
        self.classifier = nn.Conv2d(decoder_channels[-1], num_classes, 1)
        if prior_prob is not None and activation == "sigmoid":
            nn.init.constant_(self.classifier.bias, math.log(prior_prob / (1 - prior_prob)))
        self.build_postprocessor(postprocessor, DEFAULT_POSTPROCESSOR)

    # -- extension hooks --------------------------------------------------------------------
    def build_gate(self, skip_channels: int, gate_channels: int, ratio: int) -> nn.Module:
        """The attention gate of one skip: ``forward(x (B, skip, H, W), g (B, gate, H/ratio,
        W/ratio)) -> (gated x, alpha (B, 1, H, W))``; default :class:`AttentionGate` with
        ``max(8, skip_channels // 2)`` intermediate channels."""
        return AttentionGate(skip_channels, gate_channels, max(8, skip_channels // 2), ratio)

    def build_decoder_block(self, in_channels: int, out_channels: int) -> nn.Module:
        """One decoder block, ``(B, in, H, W) -> (B, out, H, W)``: default the U-Net double
        conv (:func:`~detlab.models.layers.double_conv`) with ``self.norm``."""
        return double_conv(in_channels, out_channels, self.norm)

    @property
    def threshold(self) -> float:
        """The test-stage post-processor's mask threshold (``model.head.postprocessor.
        threshold``), read by sliced and volume prediction."""
        return float(self.postprocessor.for_stage("test").threshold)

    def forward(self, feats: list[Tensor]) -> dict[str, Any]:
        """Logits ``(B, C, H, W)`` at stride 1 and gate maps, coarse to fine."""
        x = feats[-1]
        attention = []
        for i, block in enumerate(self.blocks):
            skip = feats[-2 - i]
            if self.gates:
                skip, alpha = self.gates[i](skip, x)
                attention.append(alpha)
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        if self.final_up is not None:
            x = F.interpolate(x, scale_factor=self.strides[0], mode="bilinear", align_corners=False)
            x = self.final_up(x)
        return {"logits": self.classifier(x), "attention": attention}

    # -- loss -------------------------------------------------------------------------------
    def compute_loss(self, outputs: dict[str, Any], batch: Batch) -> dict[str, Tensor]:
        """Loss terms on logits cropped to ``batch.images`` size vs. stacked target masks."""
        h, w = batch.images.shape[-2:]
        logits = outputs["logits"][..., :h, :w]
        target = torch.stack([self._target(t, i, (h, w)) for i, t in enumerate(batch.targets)])
        out = self.loss_fn(logits, target.to(logits.device))
        if isinstance(out, Tensor):
            return {f"loss_{getattr(self.loss_fn, 'name', None) or 'seg'}": out}
        if isinstance(out, Mapping):
            return {(k if k.startswith("loss_") else f"loss_{k}"): v for k, v in out.items()}
        raise ConfigError(
            f"AttentionUNetHead: loss returned {type(out).__name__}; expected a Tensor or a "
            "dict of Tensors"
        )

    def _target(self, target: dict[str, Any], index: int, size: tuple[int, int]) -> Tensor:
        """``(C, H, W)`` float target for one image (softmax: one-hot of an (H, W) class map)."""
        mask = target.get("mask")
        if not isinstance(mask, Tensor):
            raise DataError(
                f"AttentionUNetHead: image {index} of the batch has no 'mask' tensor target"
            )
        if mask.ndim == 2 and self.activation == "softmax":
            n = self.num_classes
            if mask.is_floating_point() or int(mask.min()) < 0 or int(mask.max()) >= n:
                raise DataError(
                    f"AttentionUNetHead: image {index}: an (H, W) class map must hold ints in "
                    f"[0, {n}), got dtype {mask.dtype}, range [{mask.min()}, {mask.max()}]"
                )
            mask = F.one_hot(mask.long(), self.num_classes).permute(2, 0, 1)
        elif mask.ndim == 2 and self.num_classes == 1:
            mask = mask[None]
        if mask.ndim != 3 or mask.shape[0] != self.num_classes or tuple(mask.shape[-2:]) != size:
            raise DataError(
                f"AttentionUNetHead: image {index}: mask of shape {tuple(mask.shape)} does not fit "
                f"({self.num_classes}, {size[0]}, {size[1]}) (num_classes, batch image size)"
            )
        return mask.float()

    # -- predictions ------------------------------------------------------------------------
    def postprocess(
        self, outputs: dict[str, Any], batch: Batch, stage: str = "test"
    ) -> list[Prediction]:
        """Per image: crop to the un-padded input, activation, bilinear resize to ``orig_size``,
        then the ``stage`` post-processor's mask (threshold or argmax). ``extras["attention"]``:
        the image's gate maps ``(1, h_i, w_i)`` on CPU, cropped to the un-padded input (input
        grid); ``extras["threshold"]``: the post-processor's threshold (the evaluator's)."""
        logits = outputs["logits"].detach()
        image_size = tuple(batch.images.shape[-2:])
        post = self.postprocessor.for_stage(stage)
        # One device -> host copy per gate level and batch, not per image.
        alphas = [alpha.detach().float().cpu() for alpha in outputs["attention"]]
        preds = []
        for i, meta in enumerate(batch.meta or [{}] * logits.shape[0]):
            top, left, h, w = content_region(meta, image_size)
            # Activation at input resolution, then one shared crop + bilinear resize to orig.
            logit = logits[i].float()
            act = logit.sigmoid() if self.activation == "sigmoid" else logit.softmax(dim=0)
            probs = maps_to_original(act, meta, mode="bilinear")
            mask = post(probs, activation=self.activation)
            attention = []
            for alpha in alphas:
                s = logits.shape[-2] // alpha.shape[-2]  # grid step of this map in pixels
                t, l = int(top // s), int(left // s)
                b, r = math.ceil((top + h) / s), math.ceil((left + w) / s)
                attention.append(alpha[i, :, t:b, l:r].clone())  # not a view of the batch
            extras: dict[str, Any] = {"attention": attention}
            if getattr(post, "threshold", None) is not None:
                extras["threshold"] = float(post.threshold)
            preds.append(Prediction(probs=probs, mask=mask, extras=extras))
        return preds


def _check_levels(
    in_channels: Sequence[int], strides: Sequence[int]
) -> tuple[list[int], list[int]]:
    channels, steps = list(in_channels), list(strides)
    if len(channels) < 2 or len(channels) != len(steps):
        raise ConfigError(
            f"AttentionUNetHead: needs >= 2 feature levels with one stride each, got in_channels="
            f"{channels!r}, strides={steps!r}"
        )
    if not all(is_int(v) and v > 0 for v in channels + steps):
        raise ConfigError(
            f"AttentionUNetHead: in_channels {channels!r} and strides {steps!r} must be "
            "positive ints"
        )
    if any(b % a for a, b in zip(steps, steps[1:])):
        raise ConfigError(
            f"AttentionUNetHead: each stride must divide the next (finest first), got {steps!r}"
        )
    return channels, steps
