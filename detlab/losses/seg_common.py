"""Input handling shared by the segmentation losses, and the base of the overlap (Dice/Tversky)
family.

Shapes: ``logits`` ``(B, C, *spatial)`` raw scores (spatial = ``H, W`` or ``D, H, W``);
``target`` either float ``(B, C, *spatial)`` in [0, 1] (one-hot or multi-label) or int64
``(B, *spatial)`` class indices; ``valid`` optional bool ``(B, 1, *spatial)`` or
``(B, *spatial)`` marking the pixels that count.

Empty targets (:class:`OverlapLoss` ``empty``): an overlap ratio is undefined on an image whose
ground truth is empty, and the usual smoothing does not rescue it: a confident, correct empty
prediction (logit -20 on 4 x 256² pixels) still leaves ``FP = sum(p) = 5e-4`` against
``smooth = 1e-5``, so Dice costs 0.982 (as MONAI's DiceLoss), about the maximum.
``empty="per_image"`` (the default) scores each (image, class) whose ground truth is empty by
its soft false-positive fraction ``sum(p) / pixels`` instead (0 for a correct empty prediction,
1 when every pixel is predicted; Focal Tversky raises it to ``gamma``), and keeps the overlap
ratio for the others (pooled over those images when ``batch=True``); every image weighs 1/B.
``empty="pooled"`` is the plain formula over all counts, identical to MONAI.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, DataError
from .base import Loss, check_choice, check_float

__all__ = [
    "Activation", "EmptyTarget", "check_channels", "prepare_target", "prepare_valid",
    "soft_counts", "OverlapLoss",
]

Activation = Literal["sigmoid", "softmax"]
EmptyTarget = Literal["per_image", "pooled"]


def check_channels(owner: str, logits: Tensor, arg: str) -> None:
    """Raise ConfigError if ``logits`` has one channel, which ``arg`` cannot work with."""
    if logits.shape[1] < 2:
        raise ConfigError(
            f"{owner}: {arg} needs logits with at least 2 channels, got shape "
            f"{tuple(logits.shape)}; for one channel use activation='sigmoid' and keep "
            f"include_background=True"
        )


def prepare_valid(logits: Tensor, valid: Tensor | None) -> Tensor | None:
    """``valid`` as a float ``(B, 1, *spatial)`` mask (1 = counts), or None."""
    if valid is None:
        return None
    if valid.dim() == logits.dim() - 1:
        valid = valid.unsqueeze(1)
    if valid.shape != (logits.shape[0], 1, *logits.shape[2:]):
        raise DataError(
            f"valid mask of shape {tuple(valid.shape)} does not match logits "
            f"{tuple(logits.shape)}; expected (B, 1, *spatial) or (B, *spatial)"
        )
    return valid.float()


def prepare_target(logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """``target`` as float ``(B, C, *spatial)``, the shape of ``logits``.

    Integer targets ``(B, *spatial)`` are class indices: one-hot over the C channels, or, when
    C == 1, a binary mask (0/1). Labels where ``mask`` (from :func:`prepare_valid`) is 0 are
    ignored, so an ignore index such as 255 may sit there.
    """
    num_classes = logits.shape[1]
    if target.dtype == torch.bool:
        target = target.float()
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise DataError(
                f"float target of shape {tuple(target.shape)} must match logits "
                f"{tuple(logits.shape)}; class indices must be an int64 (B, *spatial) tensor"
            )
        return target.float()
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise DataError(
            f"integer target of shape {tuple(target.shape)} must be (B, *spatial) class indices "
            f"for logits {tuple(logits.shape)}"
        )
    target = target.long()
    if mask is not None:
        target = target.masked_fill(mask[:, 0] == 0, 0)
    high = max(num_classes, 2)  # one channel: labels are 0 (background) or 1 (foreground)
    if target.numel():
        low_label, high_label = torch.stack(torch.aminmax(target)).tolist()  # one host read
        if low_label < 0 or high_label >= high:
            raise DataError(
                f"class indices must lie in [0, {high - 1}] for {num_classes} channel(s), got "
                f"[{low_label}, {high_label}]"
            )
    if num_classes == 1:
        return target.unsqueeze(1).float()
    return F.one_hot(target, num_classes).movedim(-1, 1).float()


def soft_counts(
    probs: Tensor, target: Tensor, mask: Tensor | None, batch: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft true positives, false positives and false negatives per class.

    Sums over the spatial dims (and the batch dim when ``batch``): shapes ``(C,)`` or ``(B, C)``.
    """
    if mask is not None:
        probs, target = probs * mask, target * mask
    dims = tuple(range(2, probs.dim()))
    if batch:
        dims = (0, *dims)
    tp = (probs * target).sum(dims)
    fp = (probs * (1.0 - target)).sum(dims)
    fn = ((1.0 - probs) * target).sum(dims)
    return tp, fp, fn


class OverlapLoss(Loss):
    """Base of region-overlap losses (Dice, Tversky): subclasses turn per-class soft counts into
    per-class losses in :meth:`per_class`; the result is their mean, times ``weight``.

    Args:
        activation: ``"sigmoid"`` (independent channels, multi-label) or ``"softmax"`` (over
            channels, needs C >= 2).
        batch: sum the counts over batch and pixels per class before the ratio (stable for
            small lesions); False computes per image and then averages.
        smooth: added to numerator and denominator (as MONAI's ``smooth_nr``/``smooth_dr``);
            keeps an empty class at a finite value.
        empty: how an (image, class) with empty ground truth is scored: ``"per_image"`` (its
            soft false-positive fraction, 0 for a correct empty prediction; the default, so a
            data set of mostly empty slices, as the fracture CT, is not charged ~1 per empty
            batch for being right) or ``"pooled"`` (its counts enter the ratio like any other;
            MONAI's behaviour). See the module docstring.
        include_background: False drops channel 0 after the activation.
        weight: factor on the result (see :class:`~detlab.losses.base.Loss`).
        name: key suffix, reported as ``loss_<name>`` (see :class:`~detlab.losses.base.Loss`).
    """

    def __init__(
        self,
        activation: Activation = "sigmoid",
        batch: bool = True,
        smooth: float = 1e-5,
        include_background: bool = True,
        weight: float = 1.0,
        name: str | None = None,
        empty: EmptyTarget = "per_image",
    ) -> None:
        super().__init__(weight=weight, name=name)
        owner = type(self).__name__
        self.activation = check_choice(owner, "activation", activation, ("sigmoid", "softmax"))
        self.batch = check_choice(owner, "batch", batch, (True, False))
        self.smooth = check_float(owner, "smooth", smooth, low=0.0, low_open=True)
        self.include_background = check_choice(
            owner, "include_background", include_background, (True, False)
        )
        self.empty = check_choice(owner, "empty", empty, ("per_image", "pooled"))

    def per_class(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        """Loss per class (and image when ``batch=False``) from soft counts."""
        raise NotImplementedError

    def empty_loss(self, fp_fraction: Tensor) -> Tensor:
        """Loss of an (image, class) with empty ground truth from its soft false-positive
        fraction in [0, 1] (``empty="per_image"``); the fraction itself by default."""
        return fp_fraction

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        """Scalar loss for ``logits`` ``(B, C, *spatial)``; see the module docstring for
        ``target`` and ``valid``. Computed in fp32."""
        logits = logits.float()
        mask = prepare_valid(logits, valid)
        target = prepare_target(logits, target, mask)
        owner = type(self).__name__
        if self.activation == "softmax":
            check_channels(owner, logits, "activation='softmax'")
            probs = logits.softmax(dim=1)
        else:
            probs = logits.sigmoid()
        if not self.include_background:
            check_channels(owner, logits, "include_background=False")
            probs, target = probs[:, 1:], target[:, 1:]
        if self.empty == "pooled":
            tp, fp, fn = soft_counts(probs, target, mask, self.batch)
            return self.per_class(tp, fp, fn).mean() * self.weight
        return self._per_image_empty(probs, target, mask) * self.weight

    def _per_image_empty(self, probs: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        tp, fp, fn = soft_counts(probs, target, mask, batch=False)  # (B, C)
        dims = tuple(range(2, probs.dim()))
        counted = target * mask if mask is not None else target
        empty = counted.sum(dims) == 0  # (B, C)
        if mask is not None:
            pixels = mask.sum(dims)  # (B, 1)
        else:
            pixels = torch.full_like(tp[:, :1], float(probs[0, 0].numel()))
        fp_fraction = fp / pixels.clamp_min(1.0)
        empty_term = torch.where(empty, self.empty_loss(fp_fraction), torch.zeros_like(fp))
        positive = (~empty).to(tp.dtype)
        if self.batch:
            # Overlap pooled over the images that have ground truth, counted once per such
            # image; each empty image adds its own term. Every image weighs 1/B.
            pooled = self.per_class(
                (tp * positive).sum(0), (fp * positive).sum(0), (fn * positive).sum(0)
            )
            per_class = (pooled * positive.sum(0) + empty_term.sum(0)) / probs.shape[0]
            return per_class.mean()
        overlap = self.per_class(tp, fp, fn)
        return torch.where(empty, empty_term, overlap).mean()

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, activation={self.activation!r}, batch={self.batch}, "
            f"smooth={self.smooth:g}, include_background={self.include_background}, "
            f"empty={self.empty!r}"
        )
