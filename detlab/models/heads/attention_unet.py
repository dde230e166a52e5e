"""``AttentionUNetHead``: U-Net decoder with additive attention gates on the skip connections
(Oktay et al. 2018, "Attention U-Net", arXiv:1804.03999)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError, DataError
from ...ops.coords import content_region, maps_to_original
from ...registry import HEADS, LOSSES
from ...structures import Batch, Prediction
from ..layers import NORMS, double_conv
from .base import Head

__all__ = ["AttentionGate", "AttentionUNetHead", "content_region"]  # content_region: re-export


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
        threshold: sigmoid probability above which a pixel is in the mask (softmax: argmax).
        gate: ``"additive"`` attention gates or ``"none"`` (plain U-Net skips).
        norm: normalization in the decoder blocks.
        prior_prob: initial foreground probability of every pixel (sigmoid only): the
            classifier bias starts at ``log(p / (1 - p))`` (Lin et al. 2017, arXiv:1708.02002).
            With lesions on <1 % of pixels, starting at 0.5 wastes the first epochs pushing the
            background down and leaves probabilities uncalibrated; ``None`` keeps zero bias.

    ``forward`` returns ``{"logits": (B, C, H, W), "attention": [(B, 1, h_i, w_i), …]}`` with
    ``H, W`` = finest feature size × ``strides[0]`` and one gate map per skip, coarse to fine
    (empty with ``gate="none"``).
    """

    # Constructor arguments that only change post-processing (``detlab sweep`` may vary them
    # without re-running the network).
    postprocess_args: tuple[str, ...] = ("threshold",)

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        loss: Any,
        decoder_channels: Sequence[int] | None = None,
        activation: Literal["sigmoid", "softmax"] = "sigmoid",
        threshold: float = 0.5,
        gate: Literal["additive", "none"] = "additive",
        norm: Literal["batch", "instance", "none"] = "batch",
        prior_prob: float | None = 0.01,
    ) -> None:
        super().__init__()
        in_channels, strides = _check_levels(in_channels, strides)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(
                f"AttentionUNetHead: num_classes must be an int >= 1, got {num_classes!r}"
            )
        if activation not in ("sigmoid", "softmax"):
            raise ConfigError(
                f"AttentionUNetHead: activation must be 'sigmoid' or 'softmax', got {activation!r}"
            )
        if activation == "softmax" and num_classes < 2:
            raise ConfigError("AttentionUNetHead: activation='softmax' needs num_classes >= 2 "
                              "(background included); use 'sigmoid' for one foreground class")
        if not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
            raise ConfigError(
                f"AttentionUNetHead: threshold must be in (0, 1), got {threshold!r}"
            )
        if gate not in ("additive", "none"):
            raise ConfigError(
                f"AttentionUNetHead: gate must be 'additive' or 'none', got {gate!r}"
            )
        if norm not in NORMS:
            raise ConfigError(f"AttentionUNetHead: norm must be one of {NORMS}, got {norm!r}")
        num_blocks = len(in_channels) - 1 + (strides[0] > 1)
        if decoder_channels is None:
            decoder_channels = [max(16, 256 >> i) for i in range(num_blocks)]
        decoder_channels = list(decoder_channels)
        if len(decoder_channels) != num_blocks or not all(
            isinstance(c, int) and c > 0 for c in decoder_channels
        ):
            raise ConfigError(
                f"AttentionUNetHead: decoder_channels must be {num_blocks} positive ints (one per "
                f"skip connection{' + the final up block' if strides[0] > 1 else ''}), got "
                f"{decoder_channels!r}"
            )
        self.num_classes, self.activation, self.threshold = num_classes, activation, threshold
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
                ratio = strides[level + 1] // strides[level]
                self.gates.append(AttentionGate(skip, state, max(8, skip // 2), ratio))
            self.blocks.append(double_conv(state + skip, decoder_channels[i], norm))
            state = decoder_channels[i]
        self.final_up = double_conv(state, decoder_channels[-1], norm) if strides[0] > 1 else None
        self.classifier = nn.Conv2d(decoder_channels[-1], num_classes, 1)
        if prior_prob is not None and activation == "sigmoid":
            if not 0.0 < prior_prob < 1.0:
                raise ConfigError(
                    f"AttentionUNetHead: prior_prob must be in (0, 1) or None, got {prior_prob!r}"
                )
            nn.init.constant_(self.classifier.bias, math.log(prior_prob / (1 - prior_prob)))

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
        threshold (sigmoid) or one-hot argmax (softmax). ``extras["attention"]``: the image's
        gate maps ``(1, h_i, w_i)`` on CPU, cropped to the un-padded input (input grid)."""
        logits = outputs["logits"].detach()
        image_size = tuple(batch.images.shape[-2:])
        preds = []
        for i, meta in enumerate(batch.meta or [{}] * logits.shape[0]):
            top, left, h, w = content_region(meta, image_size)
            # Activation at input resolution, then one shared crop + bilinear resize to orig.
            logit = logits[i].float()
            act = logit.sigmoid() if self.activation == "sigmoid" else logit.softmax(dim=0)
            probs = maps_to_original(act, meta, mode="bilinear")
            if self.activation == "sigmoid":
                mask = probs > self.threshold
            else:
                mask = F.one_hot(probs.argmax(0), self.num_classes).permute(2, 0, 1).bool()
            attention = []
            for alpha in outputs["attention"]:
                s = logits.shape[-2] // alpha.shape[-2]  # grid step of this map in pixels
                t, l = int(top // s), int(left // s)
                b, r = math.ceil((top + h) / s), math.ceil((left + w) / s)
                attention.append(alpha[i, :, t:b, l:r].detach().float().cpu())
            preds.append(Prediction(probs=probs, mask=mask, extras={"attention": attention}))
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
    if not all(isinstance(v, int) and v > 0 for v in channels + steps):
        raise ConfigError(
            f"AttentionUNetHead: in_channels {channels!r} and strides {steps!r} must be "
            "positive ints"
        )
    if any(b % a for a, b in zip(steps, steps[1:])):
        raise ConfigError(
            f"AttentionUNetHead: each stride must divide the next (finest first), got {steps!r}"
        )
    return channels, steps
