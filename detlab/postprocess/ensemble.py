"""Merge rules of ensembles and test-time augmentation: several members' predictions of one
image (each in the same pixel frame) -> one prediction.

* boxes: Weighted Boxes Fusion (:func:`detlab.ops.wbf.weighted_boxes_fusion`), or NMS /
  Gaussian Soft-NMS over the union of the members' (already post-processed) detections;
* dense maps (DB text probabilities, segmentation probabilities): the weighted mean, before
  binarization / thresholding (which the caller runs with the usual post-processor).

The settings are the recipe's ``inference.ensemble`` entry, ``dict(method="wbf", iou_thr=0.55,
skip_box_thr=0.0, conf_type="avg", weights=None)``; ``detlab sweep`` varies them as
``inference.ensemble.<knob>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ..checks import check_choice, check_float, check_int, check_section
from ..errors import ConfigError
from ..ops.nms import nms
from ..ops.wbf import weighted_boxes_fusion

__all__ = ["ENSEMBLE_METHODS", "EnsembleSettings", "merge_boxes", "mean_maps"]

#: ``wbf``: Weighted Boxes Fusion; ``nms``: hard NMS over the union; ``soft_nms``: Gaussian
#: Soft-NMS over the union.
ENSEMBLE_METHODS: tuple[str, ...] = ("wbf", "nms", "soft_nms")
_CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


@dataclass(frozen=True)
class EnsembleSettings:
    """How members are merged (``inference.ensemble``).

    Attributes:
        method: one of :data:`ENSEMBLE_METHODS` (box heads; dense heads always average maps).
        iou_thr: WBF's cluster IoU (a box joins a cluster when IoU ``> iou_thr``), or the
            NMS IoU threshold of ``nms``.
        skip_box_thr: member boxes scoring below it are left out before merging.
        conf_type: WBF's fused score rule (:func:`~detlab.ops.wbf.weighted_boxes_fusion`).
        weights: one weight per checkpoint (``None``: 1 each); a TTA view has its model's.
        sigma: Gaussian Soft-NMS width (``soft_nms``).
        max_detections: keep at most this many merged boxes per image (``None``: all).
    """

    method: str = "wbf"
    iou_thr: float = 0.55
    skip_box_thr: float = 0.0
    conf_type: str = "avg"
    weights: tuple[float, ...] | None = None
    sigma: float = 0.5
    max_detections: int | None = None

    #: The knobs ``detlab sweep`` may vary as ``inference.ensemble.<knob>``.
    sweepable = ("method", "iou_thr", "skip_box_thr", "conf_type", "weights", "sigma",
                 "max_detections")

    def __post_init__(self) -> None:
        own = "inference.ensemble"
        check_choice(own, "method", self.method, ENSEMBLE_METHODS)
        check_float(own, "iou_thr", self.iou_thr, low=0.0, high=1.0)
        check_float(own, "skip_box_thr", self.skip_box_thr, low=0.0, high=1.0)
        check_choice(own, "conf_type", self.conf_type, _CONF_TYPES)
        check_float(own, "sigma", self.sigma, low=0.0, low_open=True)
        if self.max_detections is not None:
            check_int(own, "max_detections", self.max_detections, low=1)
        if self.weights is not None:
            ws = tuple(self.weights)
            for w in ws:
                check_float(own, "weights[i]", w, low=0.0)
            if not ws or sum(ws) <= 0:
                raise ConfigError(f"{own}: weights must hold positive numbers, got {ws!r}")
            object.__setattr__(self, "weights", tuple(float(w) for w in ws))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | EnsembleSettings | None) -> EnsembleSettings:
        """Settings from ``inference.ensemble`` (``None``: the defaults).

        Raises:
            ConfigError: an unknown key or a value out of range.
        """
        if cfg is None:
            return cls()
        if isinstance(cfg, EnsembleSettings):
            return cfg
        cfg = check_section("inference.ensemble", cfg, cls.__dataclass_fields__,
                            "a dict of settings")
        return cls(**cfg)

    def member_weights(self, count: int, names: Sequence[str]) -> list[float]:
        """One weight per checkpoint (``count`` of them, ``names`` for the message).

        Raises:
            ConfigError: ``weights`` does not have one entry per checkpoint.
        """
        if self.weights is None:
            return [1.0] * count
        if len(self.weights) != count:
            raise ConfigError(
                f"ensemble weights {list(self.weights)}: {len(self.weights)} weight(s) for "
                f"{count} checkpoint(s) ({', '.join(names)}); give one per checkpoint")
        return list(self.weights)

    def to_config(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        out = asdict(self)
        out["weights"] = None if self.weights is None else list(self.weights)
        return out


def merge_boxes(boxes: Sequence[Tensor], scores: Sequence[Tensor], labels: Sequence[Tensor],
                weights: Sequence[float], settings: EnsembleSettings
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Merge ``M`` members' detections of one image (same pixel frame, xyxy).

    Args:
        boxes / scores / labels: per member ``(N_m, 4)``, ``(N_m,)``, ``(N_m,)``.
        weights: per member weight (WBF's model weights; NMS / Soft-NMS multiply the scores
            by ``weight / max(weights)`` so a weight of 1 everywhere leaves scores alone).
        settings: the method and its knobs.

    Returns:
        ``(boxes (K, 4) float32, scores (K,) float32, labels (K,) int64)`` on the first
        member's device, by decreasing score.
    """
    device = boxes[0].device if boxes else torch.device("cpu")
    if settings.method == "wbf":
        b, s, l = weighted_boxes_fusion(
            [x.detach().cpu().double() for x in boxes], [x.detach().cpu().double() for x in scores],
            [x.detach().cpu() for x in labels], weights=list(weights), iou_thr=settings.iou_thr,
            skip_box_thr=settings.skip_box_thr, conf_type=settings.conf_type)
    else:
        top = max(weights)
        b = torch.cat([x.detach().cpu().double().reshape(-1, 4) for x in boxes])
        s = torch.cat([x.detach().cpu().double().reshape(-1) * (w / top)
                       for x, w in zip(scores, weights)])
        l = torch.cat([x.detach().cpu().reshape(-1).long() for x in labels])
        keep_in = s >= settings.skip_box_thr
        b, s, l = b[keep_in], s[keep_in], l[keep_in]
        method = "standard" if settings.method == "nms" else "soft_gaussian"
        keep, s = nms(b, s, l, method=method, iou_threshold=settings.iou_thr,
                      sigma=settings.sigma, score_threshold=max(settings.skip_box_thr, 1e-6))
        b, l = b[keep], l[keep]
    if settings.max_detections is not None:
        b, s, l = (b[: settings.max_detections], s[: settings.max_detections],
                   l[: settings.max_detections])
    return b.float().to(device), s.float().to(device), l.long().to(device)


def mean_maps(maps: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Weighted mean of same-shape maps (``sum_m w_m * map_m / sum_m w_m``), float32.

    Raises:
        ValueError: the maps differ in shape (callers resize them to one grid first).
    """
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) != 1:
        raise ValueError(f"mean_maps: maps of different shapes {sorted(shapes)}")
    total = float(sum(weights))
    out = torch.zeros_like(maps[0], dtype=torch.float32)
    for m, w in zip(maps, weights):
        out += m.float() * (float(w) / total)
    return out
