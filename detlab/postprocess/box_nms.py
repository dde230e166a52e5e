"""Box post-processing: score threshold, pre-NMS top-k, NMS, max detections."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from ..errors import ConfigError
from ..ops.nms import NMS_METHODS, NMSMethod, nms
from ..registry import POSTPROCESSORS

__all__ = ["BoxPostProcessor"]

Detections = tuple[Tensor, Tensor, Tensor]


@POSTPROCESSORS.register
class BoxPostProcessor:
    """Turn per-box class probabilities into final detections for one image or a batch.

    Multi-label like YOLOv8: every (box, class) pair with probability > ``score_threshold`` is a
    candidate, so one box may be kept for several classes (``multi_label=False`` keeps only each
    box's best class). The ``pre_nms_topk`` highest-scoring candidates go through NMS
    (:func:`detlab.ops.nms.nms`), and the ``max_detections`` best survivors are returned.

    Args:
        score_threshold: minimum class probability of a candidate (and the final threshold of
            Soft-NMS). 0.001 for mAP evaluation, ~0.25 for deployment.
        pre_nms_topk: candidates kept before NMS, per image.
        max_detections: detections returned per image.
        iou_threshold: NMS threshold (see :func:`detlab.ops.nms.nms`).
        method: ``"standard"``, ``"soft_gaussian"``, ``"soft_linear"`` or ``"diou"``.
        class_agnostic: suppress across classes too.
        sigma: Gaussian Soft-NMS width.
        multi_label: every class over the threshold is a candidate (True), or only the best.
    """

    def __init__(
        self,
        score_threshold: float = 0.001,
        pre_nms_topk: int = 30000,
        max_detections: int = 300,
        iou_threshold: float = 0.7,
        method: NMSMethod = "standard",
        class_agnostic: bool = False,
        sigma: float = 0.5,
        multi_label: bool = True,
    ) -> None:
        for arg, value in (("score_threshold", score_threshold), ("iou_threshold", iou_threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0 <= value <= 1
            ):
                raise ConfigError(
                    f"BoxPostProcessor: {arg} must be a number in [0, 1], got {value!r}"
                )
        for arg, value in (("pre_nms_topk", pre_nms_topk), ("max_detections", max_detections)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"BoxPostProcessor: {arg} must be an int >= 1, got {value!r}")
        if method not in NMS_METHODS:
            raise ConfigError(
                f"BoxPostProcessor: method must be one of {NMS_METHODS}, got {method!r}"
            )
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma <= 0:
            raise ConfigError(f"BoxPostProcessor: sigma must be a number > 0, got {sigma!r}")
        for arg, value in (("class_agnostic", class_agnostic), ("multi_label", multi_label)):
            if not isinstance(value, bool):
                raise ConfigError(f"BoxPostProcessor: {arg} must be a bool, got {value!r}")
        self.score_threshold = float(score_threshold)
        self.pre_nms_topk = pre_nms_topk
        self.max_detections = max_detections
        self.iou_threshold = float(iou_threshold)
        self.method: NMSMethod = method
        self.class_agnostic = class_agnostic
        self.sigma = float(sigma)
        self.multi_label = multi_label

    def __repr__(self) -> str:
        return (
            f"BoxPostProcessor(score_threshold={self.score_threshold}, pre_nms_topk="
            f"{self.pre_nms_topk}, max_detections={self.max_detections}, iou_threshold="
            f"{self.iou_threshold}, method={self.method!r}, class_agnostic={self.class_agnostic},"
            f" multi_label={self.multi_label})"
        )

    def candidates(self, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-image top-k candidates of ``(B, N, C)`` probabilities: ``(values, box_index,
        labels)``, each ``(B, K)``; slots whose score is not over the threshold have value -1."""
        b, n, c = scores.shape
        if self.multi_label:
            flat = scores.reshape(b, n * c)
            k = min(self.pre_nms_topk, n * c)
            values, idx = flat.topk(k, dim=1)
            box_index, labels = idx // c, idx % c
        else:
            best, labels_all = scores.max(dim=2)
            k = min(self.pre_nms_topk, n)
            values, box_index = best.topk(k, dim=1)
            labels = labels_all.gather(1, box_index)
        values = torch.where(values > self.score_threshold, values, torch.full_like(values, -1))
        return values, box_index, labels

    def __call__(self, boxes: Tensor, scores: Tensor) -> Detections:
        """Detections of one image: ``boxes`` ``(N, 4)`` xyxy, ``scores`` ``(N, C)`` probabilities
        → ``(boxes (K, 4), scores (K,), labels (K,) int64)``, sorted by decreasing score."""
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or scores.dim() != 2 or (
            scores.shape[0] != boxes.shape[0]
        ):
            raise ValueError(
                f"boxes must be (N, 4) and scores (N, C), got {tuple(boxes.shape)}, "
                f"{tuple(scores.shape)}"
            )
        return self.batched(boxes[None], scores[None])[0]

    def batched(
        self, boxes: Tensor | Sequence[Tensor], scores: Tensor | Sequence[Tensor]
    ) -> list[Detections]:
        """Detections for a batch: ``(B, N, 4)`` and ``(B, N, C)`` tensors, or lists of per-image
        ``(N_i, 4)`` and ``(N_i, C)`` tensors → one ``(boxes, scores, labels)`` per image."""
        if not isinstance(boxes, Tensor) or not isinstance(scores, Tensor):
            if len(boxes) != len(scores):
                raise ValueError(f"{len(boxes)} box tensors but {len(scores)} score tensors")
            return [self.batched(b[None], s[None])[0] for b, s in zip(boxes, scores)]
        if boxes.dim() != 3 or boxes.shape[-1] != 4 or scores.dim() != 3 or (
            scores.shape[:2] != boxes.shape[:2]
        ):
            raise ValueError(
                f"boxes must be (B, N, 4) and scores (B, N, C), got {tuple(boxes.shape)}, "
                f"{tuple(scores.shape)}"
            )
        b, n, c = scores.shape
        if n == 0 or c == 0:
            return [_empty(boxes, scores) for _ in range(b)]
        values, box_index, labels = self.candidates(scores)
        image = torch.arange(b, device=boxes.device)[:, None].expand_as(values)
        ok = values >= 0  # over threshold (the others were set to -1)
        values, box_index, labels, image = values[ok], box_index[ok], labels[ok], image[ok]
        cand_boxes = boxes[image, box_index]
        if self.method == "standard":
            return self._standard(cand_boxes, values, labels, image, b, c)
        out = []
        for i in range(b):  # Soft-/DIoU-NMS loop over kept boxes anyway; one image at a time
            sel = image == i
            keep, kept = nms(
                cand_boxes[sel], values[sel], labels[sel], self.method, self.iou_threshold,
                self.class_agnostic, self.sigma, self.score_threshold, self.max_detections,
            )
            out.append((cand_boxes[sel][keep], kept, labels[sel][keep]))
        return out

    def _standard(
        self, boxes: Tensor, scores: Tensor, labels: Tensor, image: Tensor, b: int, c: int
    ) -> list[Detections]:
        # One torchvision call for the whole batch: the group id separates images (and classes).
        group = image if self.class_agnostic else image * c + labels
        keep = batched_nms(boxes, scores, group, self.iou_threshold)  # by decreasing score
        # A stable sort by image keeps the score order inside each image.
        keep = keep[image[keep].sort(stable=True).indices]
        counts = torch.bincount(image[keep], minlength=b)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(keep.numel(), device=keep.device) - starts[image[keep]]
        keep = keep[rank < self.max_detections]
        sizes = counts.clamp(max=self.max_detections).tolist()
        return [(boxes[k], scores[k], labels[k]) for k in keep.split(sizes)]


def _empty(boxes: Tensor, scores: Tensor) -> Detections:
    return (
        boxes.new_zeros((0, 4)),
        scores.new_zeros((0,)),
        torch.zeros(0, dtype=torch.long, device=scores.device),
    )
