"""Ensembles of checkpoints and test-time augmentation (TTA): one inference loop over several
*members* whose predictions are merged per image (:mod:`detlab.postprocess.ensemble`).

A member is one (model, view) pair: every checkpoint is run with its own preprocessing (its
own :class:`~detlab.data.geometry.InputGeometry` from its own recipe), and TTA adds views of
each model's batch (a horizontal / vertical flip, a rescale of the network input). Each
member's output is un-mapped to the plain view of the image before merging:

* boxes: each member's post-processed detections (its test post-processor) in original pixels
  (a flip: ``x -> W - x``), fused with WBF or NMS / Soft-NMS over the union;
* DB text: each member's probability map flipped back and resized to the FIRST model's input
  grid of the image (the original image at that model's scale), weighted mean, then the first
  model's test ``DBPostProcessor`` (so one model without TTA gives exactly its own polygons);
* segmentation: each member's probabilities in original pixels (flipped back), weighted mean,
  then the first model's test threshold.

Settings: the first checkpoint's recipe ``inference.ensemble`` and ``inference.tta``
(``dict(flips=("none", "h"), scales=(0.83, 1.0, 1.25))``), or the CLI's ``--weights``,
``--ensemble`` and ``--tta``. With the first recipe's ``inference.slicing`` every member runs
sliced and the fusion above runs on the members' frame-pixel predictions
(:mod:`detlab.engine.sliced_views`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import check_choice, check_float, check_section
from ..errors import ConfigError, DataError
from ..postprocess.ensemble import EnsembleSettings, mean_maps, merge_boxes
from ..structures import Batch, Prediction

__all__ = ["TTASettings", "head_family", "check_compatible", "ensemble_settings", "view_batch",
           "unmap_prediction", "member_predictions", "gathered_members", "member_weight_list",
           "merge_members", "ensemble_predictions", "resolve_settings", "evaluate_members"]

FLIPS = ("none", "h", "v")


@dataclass(frozen=True)
class TTASettings:
    """Test-time augmentation views (``inference.tta``): every flip at every scale.

    Attributes:
        flips: ``"none"``, ``"h"`` (left-right) and / or ``"v"`` (up-down).
        scales: factors of the network input size (1.0: the model's own geometry).
    """

    flips: tuple[str, ...] = ("none", "h")
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        flips = (self.flips,) if isinstance(self.flips, str) else tuple(self.flips)
        scales = (self.scales,) if not isinstance(self.scales, (list, tuple)) else self.scales
        for f in flips:
            check_choice("inference.tta", "flips[i]", f, FLIPS)
        for s in scales:
            check_float("inference.tta", "scales[i]", s, low=0.1, high=10.0)
        if not flips or not scales:
            raise ConfigError("inference.tta: flips and scales must not be empty")
        object.__setattr__(self, "flips", flips)
        object.__setattr__(self, "scales", tuple(float(s) for s in scales))

    @classmethod
    def from_config(cls, cfg: Any) -> TTASettings | None:
        """``inference.tta`` as settings; ``None`` / ``False``: no TTA; ``True``: defaults."""
        if cfg is None or cfg is False:
            return None
        if cfg is True:
            return cls()
        if isinstance(cfg, TTASettings):
            return cfg
        return cls(**check_section("inference.tta", cfg, ("flips", "scales"),
                                   "dict(flips=..., scales=...)"))

    @property
    def views(self) -> list[tuple[str, float]]:
        """``(flip, scale)`` of every view, the plain one first when present."""
        views = [(f, s) for s in self.scales for f in self.flips]
        return sorted(views, key=lambda v: v != ("none", 1.0))


def head_family(task: Any) -> str:
    """``"boxes"`` (YOLO, Faster R-CNN), ``"text"`` (DB) or ``"segmentation"`` (U-Net)."""
    from ..models.heads.attention_unet import AttentionUNetHead
    from ..models.heads.db import DBHead
    from .inference import is_box_head

    if is_box_head(task):
        return "boxes"
    if isinstance(task.model.head, DBHead):
        return "text"
    if isinstance(task.model.head, AttentionUNetHead):
        return "segmentation"
    raise ConfigError(f"ensembles / TTA: head {type(task.model.head).__name__} is not a box, "
                      "DB text or segmentation head")


def _head_kind(head: Any) -> str:
    """The head family: the detlab base class (subclasses count as their base)."""
    from ..models.heads.attention_unet import AttentionUNetHead
    from ..models.heads.db import DBHead
    from ..models.heads.faster_rcnn import FasterRCNNHead
    from ..models.heads.yolo import YOLOHead

    for base in (YOLOHead, FasterRCNNHead, DBHead, AttentionUNetHead):
        if isinstance(head, base):
            return base.__name__
    return type(head).__name__


def _signature(task: Any) -> dict[str, Any]:
    head = task.model.head
    names = (task.recipe.get("evaluator") or {}).get("class_names")
    return {"task family": head_family(task),
            "head family": _head_kind(head),
            "num_classes": getattr(head, "num_classes", None),
            "class names": list(names) if names else None,
            "activation": getattr(head, "activation", None)}


def check_compatible(tasks: Sequence[Any], names: Sequence[str]) -> None:
    """Refuse an ensemble whose members predict different things.

    Raises:
        ConfigError: naming both checkpoints and what differs (task family, head family,
            number of classes, class names, activation).
    """
    ref = _signature(tasks[0])
    for task, name in zip(tasks[1:], names[1:]):
        sig = _signature(task)
        for key, value in ref.items():
            if sig[key] != value:
                raise ConfigError(
                    f"ensemble: {names[0]} and {name} differ in {key} ({value!r} vs "
                    f"{sig[key]!r}); an ensemble merges checkpoints of one task")


def ensemble_settings(recipe: Mapping[str, Any]) -> tuple[EnsembleSettings, TTASettings | None]:
    """``inference.ensemble`` and ``inference.tta`` of ``recipe``."""
    from ..postprocess.slicing import inference_section

    section = inference_section(recipe)
    return (EnsembleSettings.from_config(section.get("ensemble")),
            TTASettings.from_config(section.get("tta")))


# -- views ------------------------------------------------------------------------------------
def view_batch(batch: Batch, flip: str, scale: float) -> Batch:
    """``batch`` as the network sees one TTA view: input rescaled by ``scale`` (meta ``scale``,
    ``pad`` and ``input_size`` follow), then flipped (the content's pad moves to the other
    side), so each head maps its predictions to the FLIPPED original image."""
    images = batch.images
    metas = [copy.copy(m) for m in batch.meta]
    if scale != 1.0:
        h, w = images.shape[-2:]
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        fy, fx = nh / h, nw / w
        images = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False)
        for m in metas:
            sy, sx = m.get("scale", (1.0, 1.0))
            top, left = m.get("pad", (0, 0))
            ih, iw = m.get("input_size", (h - top, w - left))
            m["scale"] = (float(sy) * fy, float(sx) * fx)
            m["pad"] = (float(top) * fy, float(left) * fx)
            m["input_size"] = (float(ih) * fy, float(iw) * fx)
    if flip != "none":
        axis = -1 if flip == "h" else -2
        images = images.flip(axis)
        full = images.shape[axis]
        for m in metas:
            top, left = (float(v) for v in m.get("pad", (0, 0)))
            ih, iw = (float(v) for v in m.get("input_size", (images.shape[-2] - top,
                                                               images.shape[-1] - left)))
            m["pad"] = (top, full - left - iw) if flip == "h" else (full - top - ih, left)
    return Batch(images=images, targets=batch.targets, meta=metas)


def unmap_prediction(pred: Prediction, meta: Mapping[str, Any], flip: str) -> Prediction:
    """A view's prediction (original pixels of the flipped image) flipped back: boxes and
    polygons ``x -> W - x`` (``y -> H - y`` for ``"v"``), probability maps flipped."""
    if flip == "none":
        return pred
    h, w = (float(v) for v in meta["orig_size"])
    axis = -1 if flip == "h" else -2
    out = Prediction(scores=pred.scores, labels=pred.labels, extras=dict(pred.extras))
    if pred.boxes is not None:
        b = pred.boxes.clone()
        if flip == "h":
            b[:, 0], b[:, 2] = w - pred.boxes[:, 2], w - pred.boxes[:, 0]
        else:
            b[:, 1], b[:, 3] = h - pred.boxes[:, 3], h - pred.boxes[:, 1]
        out.boxes = b
    if pred.polygons is not None:
        polys = []
        for p in pred.polygons:
            q = np.array(p, copy=True)
            if flip == "h":
                q[:, 0] = w - q[:, 0]
            else:
                q[:, 1] = h - q[:, 1]
            polys.append(q[::-1].copy())  # reversed: the flip turned the point order around
        out.polygons = polys
    if pred.probs is not None:
        out.probs = pred.probs.flip(axis)
    if pred.mask is not None:
        out.mask = pred.mask.flip(axis)
    if isinstance(pred.extras.get("prob_map"), Tensor):
        out.extras["prob_map"] = pred.extras["prob_map"].flip(axis)
    out.extras.pop("attention", None)  # gate maps of a view are not un-mapped
    return out


def _model_views(task: Any, batch: Batch, views: Sequence[tuple[str, float]]
                 ) -> list[list[Prediction]]:
    """Per image, one un-mapped prediction per view."""
    per_image: list[list[Prediction]] = [[] for _ in range(len(batch))]
    for flip, scale in views:
        vb = batch if (flip, scale) == ("none", 1.0) else view_batch(batch, flip, scale)
        for i, (pred, meta) in enumerate(zip(task.model.predict(vb, stage="test"), batch.meta)):
            per_image[i].append(unmap_prediction(pred, meta, flip))
    return per_image


def member_predictions(task: Any, loader: Any, device: Any, views: Sequence[tuple[str, float]],
                       limit: int | None = None) -> Iterator[tuple[list[list[Prediction]], Batch]]:
    """Per batch of ``loader``: per image the predictions of every view (un-mapped), and the
    batch (on ``device``). Callers hold ``torch.inference_mode()``."""
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        batch = batch.to(device)
        yield _model_views(task, batch, views), batch


def _per_image(stream: Iterator[tuple[list[list[Prediction]], Batch]]
               ) -> Iterator[tuple[list[Prediction], dict[str, Any]]]:
    for preds, batch in stream:
        yield from zip(preds, batch.meta)


def _resize_map(prob: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(prob.shape[-2:]) == tuple(size):
        return prob.float()
    return F.interpolate(prob.float()[None, None], size=size, mode="bilinear",
                         align_corners=False)[0, 0]


def merge_members(tasks: Sequence[Any], members: Sequence[Prediction],
                  weights: Sequence[float], ref_meta: Mapping[str, Any],
                  settings: EnsembleSettings) -> Prediction:
    """One image's merged prediction from its members (see the module docstring); the post-
    processors are the first model's (``tasks[0]``) test ones."""
    family = head_family(tasks[0])
    post = tasks[0].model.head.postprocessor.for_stage("test")
    if family == "boxes":
        b, s, l = merge_boxes([m.boxes for m in members], [m.scores for m in members],
                              [m.labels for m in members], weights, settings)
        return Prediction(boxes=b, scores=s, labels=l)
    if family == "segmentation":
        probs = mean_maps([m.probs for m in members], weights)
        mask = post(probs, activation=tasks[0].model.head.activation)
        extras = {"threshold": float(post.threshold)} if hasattr(post, "threshold") else {}
        return Prediction(probs=probs, mask=mask, extras=extras)
    # sliced members: maps in original pixels already (detlab.engine.sliced.combine)
    frame = all(m.extras.get("map_pixels") == "original" for m in members)
    scale = (1.0, 1.0) if frame else tuple(ref_meta.get("scale", (1.0, 1.0)))
    # else the first model's plain grid (its content size), whatever views TTA runs
    if frame:
        size = tuple(int(v) for v in ref_meta["orig_size"])
    elif ref_meta.get("input_size") is not None:
        size = tuple(max(1, int(round(float(v)))) for v in ref_meta["input_size"])
    else:
        size = tuple(members[0].extras["prob_map"].shape[-2:])
    prob = mean_maps([_resize_map(m.extras["prob_map"], size) for m in members], weights)
    orig = ref_meta.get("orig_size")
    polygons, scores = post(prob.numpy(), scale=scale, pad=(0.0, 0.0),
                            orig_size=None if orig is None else tuple(int(v) for v in orig))
    extras = {"prob_map": prob, **({"map_pixels": "original"} if frame else {})}
    return Prediction(polygons=list(polygons), extras=extras,
                      scores=torch.as_tensor(np.asarray(scores, dtype=np.float32)))


def gathered_members(tasks: Sequence[Any], loaders: Sequence[Any], device: Any,
                     names: Sequence[str], tta: TTASettings | None, limit: int | None = None
                     ) -> Iterator[tuple[list[list[Prediction]], Batch]]:
    """Per batch of the FIRST model's loader: per image the un-mapped predictions of every
    (model, view) member, model by model (views in :attr:`TTASettings.views` order), and the
    batch. What :func:`ensemble_predictions` merges and ``detlab sweep`` caches.

    With the first recipe's ``inference.slicing`` every member runs sliced and its
    predictions are frame-level (:mod:`detlab.engine.sliced_views`).

    Raises:
        ConfigError: members of different tasks.
        DataError: the loaders disagree on the images (count or ``image_id``).
    """
    from ..postprocess.slicing import SlicedInference
    from .inference_model import inference_task

    check_compatible(tasks, names)
    tasks = [inference_task(t) for t in tasks]  # each member's folded copy (fuse_bn)
    views = tta.views if tta is not None else [("none", 1.0)]
    slicing = SlicedInference.from_recipe(tasks[0].recipe)
    if slicing is not None:
        from .sliced_views import sliced_member_predictions

        streams = [sliced_member_predictions(t, lo, device, views, slicing, limit)
                   for t, lo in zip(tasks, loaders)]
    else:
        streams = [member_predictions(t, lo, device, views, limit)
                   for t, lo in zip(tasks, loaders)]
    others = [_per_image(s) for s in streams[1:]]
    for ref_preds, batch in streams[0]:
        gathered = []
        for preds, meta in zip(ref_preds, batch.meta):
            members = list(preds)
            for other, name in zip(others, names[1:]):
                item = next(other, None)
                if item is None:
                    raise DataError(f"ensemble: {name} has fewer images than {names[0]}")
                if str(item[1].get("image_id")) != str(meta.get("image_id")):
                    raise DataError(
                        f"ensemble: {names[0]} and {name} see different images in the same "
                        f"place ({meta.get('image_id')!r} vs {item[1].get('image_id')!r})")
                members.extend(item[0])
            gathered.append(members)
        yield gathered, batch


def member_weight_list(settings: EnsembleSettings, names: Sequence[str],
                       tta: TTASettings | None) -> list[float]:
    """One weight per (model, view) member: each view has its model's weight."""
    views = len(tta.views) if tta is not None else 1
    return [w for w in settings.member_weights(len(names), names) for _ in range(views)]


def ensemble_predictions(tasks: Sequence[Any], loaders: Sequence[Any], device: Any,
                         names: Sequence[str], settings: EnsembleSettings,
                         tta: TTASettings | None, limit: int | None = None
                         ) -> Iterator[tuple[list[Prediction], Batch]]:
    """``(merged predictions, batch)`` per batch of the FIRST model's loader: the ensemble /
    TTA counterpart of :func:`detlab.engine.inference.predictions` (the batch is the first
    model's, for the evaluator). ``loaders[m]`` is model ``m``'s loader over the same images
    in the same order (each with its own preprocessing).

    Raises:
        ConfigError: weights that do not fit the checkpoints; members of different tasks.
        DataError: the loaders disagree on the images (count or ``image_id``).
    """
    weights = member_weight_list(settings, names, tta)
    for gathered, batch in gathered_members(tasks, loaders, device, names, tta, limit):
        yield [merge_members(tasks, members, weights, meta, settings)
               for members, meta in zip(gathered, batch.meta)], batch


# -- what eval / predict / the API call -------------------------------------------------------
def resolve_settings(recipe: Mapping[str, Any], *, weights: Sequence[float] | None = None,
                     method: str | None = None, tta: Any = None
                     ) -> tuple[EnsembleSettings, TTASettings | None]:
    """The first checkpoint's ``inference.ensemble`` / ``inference.tta`` with the command
    line's ``--weights``, ``--ensemble`` and ``--tta`` (a :class:`TTASettings`, a dict or
    ``True``) on top."""
    settings, tta_settings = ensemble_settings(recipe)
    changes: dict[str, Any] = {}
    if weights is not None:
        changes["weights"] = tuple(weights)
    if method is not None:
        changes["method"] = method
    if changes:
        settings = EnsembleSettings.from_config({**settings.to_config(), **changes})
    if tta is not None and tta is not False:
        tta_settings = TTASettings.from_config(tta)
    return settings, tta_settings


def evaluate_members(tasks: Sequence[Any], names: Sequence[str], split: str = "val",
                     settings: EnsembleSettings | None = None, tta: TTASettings | None = None,
                     limit: int | None = None, device: Any = None) -> dict[str, float]:
    """The first model's evaluator's metrics of the merged predictions of ``tasks`` (each
    model reads ``split`` with its own recipe's data section).

    Raises:
        ConfigError: the first recipe has no ``evaluator`` section, or members that do not fit.
    """
    from .inference import data_module, default_device

    ref = tasks[0]
    if ref.evaluator is None:
        raise ConfigError(f"{names[0]}: the checkpoint's recipe has no 'evaluator' section")
    dev = default_device(device)
    loaders = []
    for task in tasks:
        task.to(dev)
        data = data_module(task)
        loaders.append(data.val_dataloader() if split == "val" else data.test_dataloader())
    ref.evaluator.reset()
    with torch.inference_mode():
        for preds, batch in ensemble_predictions(tasks, loaders, dev, names,
                                                 settings or EnsembleSettings(), tta, limit):
            ref.evaluator.update(preds, batch)
    return ref.evaluator.compute()
