"""Pieces the RPN and the RoI stage of :class:`~detlab.models.heads.faster_rcnn.FasterRCNNHead`
share: nested recipe settings, the box coder and the box regression loss plug-in."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder

from ...checks import is_number
from ...errors import ConfigError
from ...registry import closest

__all__ = ["settings", "component", "build_stage", "build_box_coder", "box_target_space",
           "regression_loss"]

OWNER = "FasterRCNNHead"


def _unknown(key: str, unknown: Sequence[str], accepted: Sequence[str]) -> ConfigError:
    parts = []
    for k in unknown:
        hint = closest(k, sorted(accepted), n=1)
        parts.append(f"{k!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return ConfigError(f"{OWNER}: {key} got unknown key(s) {', '.join(parts)}; it accepts: "
                       f"{', '.join(sorted(accepted))}")


def settings(cfg: Any, defaults: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A plain settings dict (no ``type``): ``defaults`` updated with ``cfg`` (``None`` = all
    defaults); a key ``defaults`` does not have is a ConfigError naming ``key``."""
    if cfg is None:
        return dict(defaults)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{OWNER}: {key} must be a dict with keys {sorted(defaults)}, "
                          f"got {cfg!r}")
    unknown = [k for k in cfg if k not in defaults]
    if unknown:
        raise _unknown(key, unknown, list(defaults))
    return {**defaults, **cfg}


def component(cfg: Any, default: Mapping[str, Any]) -> Any:
    """A component config with the stage's ``default`` filled in: ``None`` gives ``default``; a
    dict without ``type`` or with the default's ``type`` keeps the default's other arguments (so
    ``sampler=dict(num=128)`` changes only ``num``); another type or a built object is kept."""
    if cfg is None:
        return dict(default)
    if isinstance(cfg, str):  # a registered name: model.head.rpn.sampler=BalancedSampler
        cfg = {"type": cfg}
    if isinstance(cfg, Mapping) and cfg.get("type", default["type"]) == default["type"]:
        return {**default, **cfg}
    return cfg


def build_stage(cls: type, cfg: Any, key: str, **given: Any) -> Any:
    """``cls(**cfg, **given)`` for a nested stage dict (``model.head.rpn``), with the stage's
    unknown keys, and the keys the head fills in itself (``given``), as ConfigErrors."""
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{OWNER}: {key} must be a dict of settings, got {cfg!r}")
    params = inspect.signature(cls).parameters
    accepted = [p for p in params if p not in given and p not in ("key", "self")]
    taken = [k for k in cfg if k in given]
    if taken:
        raise ConfigError(f"{OWNER}: {key}.{taken[0]} is set by the head (from the neck and "
                          f"num_classes); leave it out")
    unknown = [k for k in cfg if k not in accepted]
    if unknown:
        raise _unknown(key, unknown, accepted)
    return cls(**cfg, **given, key=key)


def build_box_coder(cfg: Any, default_weights: Sequence[float], key: str) -> BoxCoder:
    """torchvision ``BoxCoder`` from ``dict(weights=(wx, wy, ww, wh))`` (4 numbers > 0)."""
    weights = settings(cfg, {"weights": tuple(default_weights)}, key)["weights"]
    ok = isinstance(weights, Sequence) and len(weights) == 4
    if not ok or not all(is_number(w) and w > 0 for w in weights):
        raise ConfigError(f"{OWNER}: {key}.weights must be 4 numbers > 0, got {weights!r}")
    return BoxCoder(tuple(float(w) for w in weights))


def box_target_space(loss: Any) -> Literal["deltas", "boxes"]:
    """What a box loss compares: encoded ``"deltas"`` (smooth L1, L1 …) or decoded xyxy
    ``"boxes"`` (the IoU family). A loss may say so with a ``target_space`` attribute; torch's
    own losses (``torch.nn.SmoothL1Loss`` …) work on deltas; anything else gets boxes."""
    space = getattr(loss, "target_space", None)
    if space in ("deltas", "boxes"):
        return space
    if isinstance(loss, nn.modules.loss._Loss):
        return "deltas"
    return "boxes"


def regression_loss(
    loss: Any, deltas: Tensor, target_deltas: Tensor, refs: Tensor, target_boxes: Tensor,
    coder: BoxCoder, avg_factor: int,
) -> Tensor:
    """Box loss of ``P`` positives: predicted ``deltas`` ``(P, 4)`` against encoded
    ``target_deltas`` (delta-space losses), or decoded onto their anchors / proposals ``refs``
    against ``target_boxes`` (box-space losses, xyxy px). detlab losses get ``avg_factor`` (the
    sampled count, as torchvision averages); torch's losses use their own reduction, and give a
    0 with a graph without positives."""
    if box_target_space(loss) == "deltas":
        pred, target = deltas, target_deltas
    else:
        # In the refs' dtype (fp32): decode_single would cast the boxes to half deltas' dtype.
        pred, target = coder.decode_single(deltas.to(refs.dtype), refs), target_boxes
    if isinstance(loss, nn.modules.loss._Loss):
        return loss(pred, target) if len(pred) else deltas.sum() * 0.0
    return loss(pred, target, avg_factor=float(max(avg_factor, 1)))
