"""Validation and training images kept for the overlay plots of
:class:`~detlab.engine.plot_callbacks.RunPlots` (rank 0, small copies: longer side <= 512 px).

* boxes (detection) and polygons (text): the first ``max_images`` validation images, with
  predictions and ground truth in original pixels (scaled with the picture);
* masks (segmentation): the ``max_images`` validation slices with the most wrong pixels
  (false positives + false negatives at the evaluator's threshold; none without an error);
* the first training batch with its ground-truth boxes (input pixels).
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..structures import Batch, Prediction

__all__ = ["SampleKeeper", "MAX_SIDE", "train_batch_samples"]

MAX_SIDE = 512


def _numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x if x is not None else [], dtype=dtype)


def _picture(image: torch.Tensor, meta: dict[str, Any], original: bool = True
             ) -> tuple[np.ndarray, float]:
    """``(H, W, 3)`` uint8 picture (original size when ``original``, else the input's content)
    scaled so its longer side is at most :data:`MAX_SIDE`, and the scale factor."""
    from ..ops.coords import crop_to_content, maps_to_original
    from .render import image_to_rgb

    image = image.detach().float().cpu()
    content = maps_to_original(image, meta, "bilinear") if original else crop_to_content(
        image, meta)
    pic = image_to_rgb(content, meta.get("display_channel"))
    f = min(1.0, MAX_SIDE / max(pic.size))
    if f < 1.0:
        pic = pic.resize((max(1, round(pic.width * f)), max(1, round(pic.height * f))),
                         Image.Resampling.BILINEAR)
    return np.asarray(pic), f


def _small_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int)
    cols = (np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int)
    return mask[rows][:, cols]


class SampleKeeper:
    """Collects what the overlay plots draw, one validation epoch at a time."""

    def __init__(self, max_images: int = 8) -> None:
        self.max_images = max_images
        self.boxes: list[dict[str, Any]] = []
        self.polygons: list[dict[str, Any]] = []
        self.prob_maps: list[dict[str, Any]] = []  # text: for H-mean vs binarization threshold
        self.max_prob_maps = 32
        self._masks: list[tuple[int, int, dict[str, Any]]] = []  # heap (error, order, sample)
        self._order = 0

    def reset(self) -> None:
        """Forget the previous epoch's images."""
        self.boxes, self.polygons, self._masks, self._order = [], [], [], 0
        self.prob_maps = []

    @property
    def masks(self) -> list[dict[str, Any]]:
        """Kept segmentation slices, most wrong pixels first."""
        return [s for _, _, s in sorted(self._masks, key=lambda t: (-t[0], t[1]))]

    def add(self, preds: list[Prediction], batch: Batch, evaluator: Any) -> None:
        """Keep what this validation batch adds (see the module docstring)."""
        for i, pred in enumerate(preds or []):
            target, meta = batch.targets[i], batch.meta[i]
            if pred.polygons is not None and "prob_map" in (pred.extras or {}) and len(
                    self.prob_maps) < self.max_prob_maps:
                self.prob_maps.append(self._prob_map_sample(pred, target, meta))
            if pred.boxes is not None and len(self.boxes) < self.max_images:
                self.boxes.append(self._box_sample(batch.images[i], pred, target, meta))
            elif pred.polygons is not None and len(self.polygons) < self.max_images:
                self.polygons.append(self._text_sample(batch.images[i], pred, target, meta,
                                                       evaluator))
            elif pred.probs is not None and hasattr(evaluator, "threshold"):
                self._mask_sample(batch.images[i], pred, target, meta, evaluator.threshold)

    def _box_sample(self, image: torch.Tensor, pred: Prediction, target: dict[str, Any],
                    meta: dict[str, Any]) -> dict[str, Any]:
        from ..evaluation.coco import _ground_truth

        pic, f = _picture(image, meta)
        gt_boxes, gt_labels, _ = _ground_truth(target, meta, meta.get("image_id"))
        return {"image": pic, "name": meta.get("image_id", ""), "gt_boxes": gt_boxes * f,
                "gt_labels": gt_labels, "boxes": _numpy(pred.boxes).reshape(-1, 4) * f,
                "scores": _numpy(pred.scores).reshape(-1),
                "labels": _numpy(pred.labels, np.int64).reshape(-1)}

    def _text_sample(self, image: torch.Tensor, pred: Prediction, target: dict[str, Any],
                     meta: dict[str, Any], evaluator: Any) -> dict[str, Any]:
        from ..evaluation.text_hmean import _gt_polygons, match_text_status

        pic, f = _picture(image, meta)
        gts = _gt_polygons(target, meta)
        preds = [_numpy(p).reshape(-1, 2) for p in pred.polygons or []]
        ignore = target.get("ignore")
        ignore = np.zeros(len(gts), bool) if ignore is None else _numpy(ignore, bool).reshape(-1)
        pred_status, gt_status = match_text_status(
            preds, gts, ignore, getattr(evaluator, "iou_threshold", 0.5),
            getattr(evaluator, "ignore_overlap", 0.5))
        return {"image": pic, "name": meta.get("image_id", ""),
                "preds": [p * f for p in preds], "gts": [g * f for g in gts],
                "pred_status": pred_status, "gt_status": gt_status}

    def _prob_map_sample(self, pred: Prediction, target: dict[str, Any],
                         meta: dict[str, Any]) -> dict[str, Any]:
        from ..evaluation.text_hmean import _gt_polygons

        gts = _gt_polygons(target, meta)
        ignore = target.get("ignore")
        ignore = np.zeros(len(gts), bool) if ignore is None else _numpy(ignore, bool).reshape(-1)
        orig = meta.get("orig_size")
        # a sliced DB map is in original pixels already (detlab.engine.sliced.combine)
        frame = pred.extras.get("map_pixels") == "original"
        return {"prob_map": _numpy(pred.extras["prob_map"], np.float32),
                "scale": (1.0, 1.0) if frame else tuple(float(v) for v in meta.get("scale",
                                                                                 (1.0, 1.0))),
                "orig_size": None if orig is None else tuple(int(v) for v in orig),
                "gts": gts, "ignore": ignore}

    def _mask_sample(self, image: torch.Tensor, pred: Prediction, target: dict[str, Any],
                     meta: dict[str, Any], threshold: float) -> None:
        from ..evaluation.segmentation import ground_truth_mask

        probs = pred.probs.detach()
        probs = probs[None] if probs.ndim == 2 else probs
        gt = ground_truth_mask(target, meta).to(probs.device).any(0)
        hit = (probs >= threshold).any(0)
        if gt.shape != hit.shape:
            return  # the evaluator reports this mismatch as a DataError
        error = int((hit ^ gt).sum())
        if error == 0:
            return  # nothing wrong to show
        self._order += 1
        if len(self._masks) >= self.max_images and error <= self._masks[0][0]:
            return
        pic, _ = _picture(image, meta)
        shape = pic.shape[:2]
        sample = {"image": pic, "name": meta.get("image_id", ""),
                  "pred": _small_mask(hit.cpu().numpy(), shape),
                  "gt": _small_mask(gt.cpu().numpy(), shape)}
        item = (error, -self._order, sample)
        if len(self._masks) < self.max_images:
            heapq.heappush(self._masks, item)
        else:
            heapq.heapreplace(self._masks, item)


def train_batch_samples(batch: Batch, max_images: int = 16) -> list[dict[str, Any]]:
    """Pictures of the first ``max_images`` training images (input content) with their
    ground-truth boxes; empty when the batch has no boxes."""
    out = []
    for i in range(min(len(batch), max_images)):
        target, meta = batch.targets[i], batch.meta[i]
        if target.get("boxes") is None:
            return []
        from ..ops.coords import content_region

        top, left, _, _ = content_region(meta, batch.images[i].shape[-2:])
        pic, f = _picture(batch.images[i], meta, original=False)
        shift = np.array([left, top, left, top], np.float64)
        out.append({"image": pic, "name": meta.get("image_id", ""),
                    "gt_boxes": (_numpy(target["boxes"]).reshape(-1, 4) - shift) * f,
                    "gt_labels": _numpy(target.get("labels"), np.int64).reshape(-1)})
    return out
